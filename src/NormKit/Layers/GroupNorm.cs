using System.Numerics;

namespace NormKit.Layers;

/// <summary>
/// Group normalization (torch.nn.GroupNorm): the C channels are split into NumGroups groups;
/// each (sample, group) is normalized with its own statistics, then scaled and shifted per
/// channel. The same in training and eval; independent of the batch size.
/// </summary>
public sealed class GroupNorm<T> : ChannelNorm<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>Number of groups G; NumChannels is a multiple of it.</summary>
    public int NumGroups { get; }
    /// <summary>Number of channels C (PyTorch's num_channels; the same as NumFeatures).</summary>
    public int NumChannels => NumFeatures;

    private double[] _mean = [], _rstd = [];   // per (sample, group) of the last forward
    private int _segments;

    /// <summary>Creates the layer; NumChannels must be divisible by NumGroups.</summary>
    public GroupNorm(int numGroups, int numChannels, double eps = 1e-5, bool affine = true, bool channelsLast = false)
        : base(numChannels, eps, affine, channelsLast, nameof(numChannels))
    {
        Functional.CheckGroups(numGroups, numChannels);
        NumGroups = numGroups;
    }

    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank >= 2;
    /// <inheritdoc/>
    protected override string ExpectedShape => Layout(ChannelsLast, "an (N, C, *) input", "an (N, *, C) input");
    private protected override string FeaturesName => "NumChannels";

    private protected override bool ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output, ReadOnlySpan<bool> mask)
    {
        int segments = shape[0] * NumGroups;
        double[] mean = _mean.Length >= segments ? _mean : new double[segments];
        double[] rstd = _rstd.Length >= segments ? _rstd : new double[segments];
        Functional.GroupNormCore<T>(input, Layout(shape), NumGroups, output, WeightData, BiasData, Eps, mean.AsSpan(0, segments), rstd.AsSpan(0, segments), default, default);
        _mean = mean; _rstd = rstd; _segments = segments;
        return true;
    }

    private protected override void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput, ReadOnlySpan<bool> mask) =>
        Functional.GroupNormBackwardCore<T>(gradOutput, input, Layout(shape), NumGroups, WeightData, _mean.AsSpan(0, _segments), _rstd.AsSpan(0, _segments),
            gradInput, WeightGradData, BiasGradData);
}
