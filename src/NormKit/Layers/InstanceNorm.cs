using System.Numerics;

namespace NormKit.Layers;

/// <summary>
/// Instance normalization (torch.nn.InstanceNorm1d/2d/3d): each (sample, channel) is
/// normalized over its spatial dims. PyTorch's defaults: Affine = false,
/// TrackRunningStats = false. With running statistics, training updates them with the batch
/// average of the instance means and unbiased variances, and eval uses them. As in PyTorch,
/// Momentum null means 0 (the running statistics stay as they are) and NumBatchesTracked stays 0.
/// </summary>
public abstract class InstanceNorm<T> : TrackedChannelNorm<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private double[] _mean = [], _rstd = [];   // per (sample, channel), or per channel in eval with running statistics
    private int _saved;

    /// <summary>Creates the layer; every hyperparameter is checked here.</summary>
    protected InstanceNorm(int numFeatures, double eps, double? momentum, bool affine, bool trackRunningStats, bool channelsLast)
        : base(numFeatures, eps, momentum, affine, trackRunningStats, channelsLast) { }

    // PyTorch's _InstanceNorm.forward passes `momentum if momentum is not None else 0.0` and
    // never increments num_batches_tracked.
    private protected override double UpdateFactor => Momentum ?? 0.0;
    private protected override bool CountsBatches => false;

    private protected override bool ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output, ReadOnlySpan<bool> mask)
    {
        int saved = UsesBatchStats ? shape[0] * NumFeatures : NumFeatures;
        double[] mean = _mean.Length >= saved ? _mean : new double[saved];
        double[] rstd = _rstd.Length >= saved ? _rstd : new double[saved];
        if (UsesBatchStats)
        {
            var result = Functional.InstanceNormCore<T>(input, shape, Layout(shape), output,
                Updates ? RunningMeanData : default, Updates ? RunningVarData : default, WeightData, BiasData,
                Training, UpdateFactor, Eps, GuardRunningStats, mean.AsSpan(0, saved), rstd.AsSpan(0, saved));
            Record(result);
        }
        else
        {
            Functional.BatchNormCore<T>(input, shape, Layout(shape), output, RunningMeanData, RunningVarData, WeightData, BiasData, training: false,
                momentum: 0, Eps, guardNonFinite: true, mean.AsSpan(0, saved), rstd.AsSpan(0, saved), unbiasedRunningVar: true, default, null);
        }
        _mean = mean; _rstd = rstd; _saved = saved;
        return UsesBatchStats;
    }

    private protected override void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput, ReadOnlySpan<bool> mask)
    {
        if (ForwardUsedBatchStats)
            Functional.GroupNormBackwardCore<T>(gradOutput, input, Layout(shape), NumFeatures, WeightData, _mean.AsSpan(0, _saved), _rstd.AsSpan(0, _saved),
                gradInput, WeightGradData, BiasGradData);
        else
            Functional.BatchNormBackwardCore<T>(gradOutput, input, Layout(shape), WeightData, _mean.AsSpan(0, _saved), _rstd.AsSpan(0, _saved), false,
                gradInput, WeightGradData, BiasGradData, default, null);
    }
}

/// <summary>InstanceNorm over (N, C, L) inputs, like torch.nn.InstanceNorm1d.</summary>
public sealed class InstanceNorm1d<T>(int numFeatures, double eps = 1e-5, double? momentum = 0.1, bool affine = false, bool trackRunningStats = false, bool channelsLast = false)
    : InstanceNorm<T>(numFeatures, eps, momentum, affine, trackRunningStats, channelsLast) where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank == 3;
    /// <inheritdoc/>
    protected override string ExpectedShape => Layout(ChannelsLast, "a 3D (N, C, L) input", "a 3D (N, L, C) input");
}

/// <summary>InstanceNorm over (N, C, H, W) inputs, like torch.nn.InstanceNorm2d.</summary>
public sealed class InstanceNorm2d<T>(int numFeatures, double eps = 1e-5, double? momentum = 0.1, bool affine = false, bool trackRunningStats = false, bool channelsLast = false)
    : InstanceNorm<T>(numFeatures, eps, momentum, affine, trackRunningStats, channelsLast) where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank == 4;
    /// <inheritdoc/>
    protected override string ExpectedShape => Layout(ChannelsLast, "a 4D (N, C, H, W) input", "a 4D (N, H, W, C) input");
}

/// <summary>InstanceNorm over (N, C, D, H, W) inputs, like torch.nn.InstanceNorm3d.</summary>
public sealed class InstanceNorm3d<T>(int numFeatures, double eps = 1e-5, double? momentum = 0.1, bool affine = false, bool trackRunningStats = false, bool channelsLast = false)
    : InstanceNorm<T>(numFeatures, eps, momentum, affine, trackRunningStats, channelsLast) where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank == 5;
    /// <inheritdoc/>
    protected override string ExpectedShape => Layout(ChannelsLast, "a 5D (N, C, D, H, W) input", "a 5D (N, D, H, W, C) input");
}
