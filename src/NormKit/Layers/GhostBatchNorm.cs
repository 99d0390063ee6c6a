using System.Numerics;
using NormKit.Kernels;

namespace NormKit.Layers;

/// <summary>
/// Ghost Batch Normalization (Hoffer, Hubara, Soudry 2017, arXiv 1705.08741; Keras's
/// virtual_batch_size): in training the batch is split into contiguous ghost batches of
/// <see cref="VirtualBatchSize"/> samples, as the authors' code splits it with chunk(), and each
/// is normalized with its own mean and biased variance, so a large batch keeps the noise of
/// small ones. N must then be a multiple of VirtualBatchSize. The running statistics get one
/// update per forward, from the average of the ghosts' means and of their unbiased variances
/// (PyTorch's running_var convention; Keras averages biased ones), with PyTorch's momentum.
/// Eval uses the running statistics and takes any N. Input (N, C, *), or (N, *, C) with
/// <see cref="ChannelNorm{T}.ChannelsLast"/>: a ghost's samples are contiguous in both.
/// With VirtualBatchSize = N this is BatchNorm.
/// </summary>
public sealed class GhostBatchNorm<T> : TrackedChannelNorm<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    // Per (ghost, channel) of the last forward, ghost-major: mean and rstd for the backward,
    // and the variance the running update averages. One ghost in eval.
    private double[] _saveMean = [], _saveRstd = [], _ghostVar = [];
    private int _ghosts;                          // ghosts of the last forward; 0 for a whole-batch forward
    private readonly double[] _avgMean, _avgVar;  // the averages over ghosts fed to the running update
    private readonly T[] _scratch;                // UpdateRunning's new values

    /// <summary>Creates the layer; every hyperparameter is checked here.</summary>
    /// <param name="numFeatures">Channels C.</param>
    /// <param name="virtualBatchSize">Samples per ghost batch, > 0 (bigBatch's --mini-batch-size, Keras's virtual_batch_size).</param>
    /// <param name="eps">Added to the variance inside the square root.</param>
    /// <param name="momentum">Weight of the new batch in the running update; null for a cumulative average, as BatchNorm.</param>
    /// <param name="affine">Whether the layer has a per-channel weight and bias.</param>
    /// <param name="trackRunningStats">Whether the layer keeps running statistics; without them eval normalizes the whole batch with its own statistics.</param>
    /// <param name="channelsLast">Inputs are (N, *, C).</param>
    public GhostBatchNorm(int numFeatures, int virtualBatchSize, double eps = 1e-5, double? momentum = 0.1, bool affine = true,
        bool trackRunningStats = true, bool channelsLast = false)
        : base(numFeatures, eps, momentum, affine, trackRunningStats, channelsLast)
    {
        Guard.Positive(virtualBatchSize, nameof(virtualBatchSize));
        VirtualBatchSize = virtualBatchSize;
        _avgMean = new double[numFeatures];
        _avgVar = new double[numFeatures];
        _scratch = new T[2 * numFeatures];
    }

    /// <summary>Samples per ghost batch in training.</summary>
    public int VirtualBatchSize { get; }

    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank >= 2;
    /// <inheritdoc/>
    protected override string ExpectedShape => Layout(ChannelsLast, "an (N, C, *) input", "an (N, *, C) input");

    private protected override void CheckInput(ReadOnlySpan<int> shape, string argument)
    {
        base.CheckInput(shape, argument);
        if (Training && shape[0] % VirtualBatchSize != 0)
            throw new ArgumentException(
                $"{argument} has N = {shape[0]} samples (shape {Guard.Shape(shape)}), which is not a multiple of the ghost batch size VirtualBatchSize = {VirtualBatchSize}; training needs whole ghost batches.", argument);
    }

    private protected override bool ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output, ReadOnlySpan<bool> mask)
    {
        var l = Layout(shape);
        if (!Training)
        {
            // Eval: the running statistics, or without them the whole batch's, as BatchNorm.
            var (mean, rstd) = (Grow(_saveMean, l.C), Grow(_saveRstd, l.C));
            Functional.BatchNormCore<T>(input, shape, l, output, TrackRunningStats ? RunningMeanData : default, TrackRunningStats ? RunningVarData : default,
                WeightData, BiasData, training: false, momentum: 0, Eps, GuardRunningStats, mean.AsSpan(0, l.C), rstd.AsSpan(0, l.C), unbiasedRunningVar: true, default, null);
            (_saveMean, _saveRstd, _ghosts) = (mean, rstd, 0);
            return UsesBatchStats;
        }

        int ghosts = l.N / VirtualBatchSize, c = l.C, saved = ghosts * c;
        var (gm, gr, gv) = (Grow(_saveMean, saved), Grow(_saveRstd, saved), Grow(_ghostVar, saved));
        var gl = new ChannelLayout(VirtualBatchSize, c, l.S, ChannelsLast);
        Span<int> ghostShape = stackalloc int[shape.Length];
        shape.CopyTo(ghostShape);
        ghostShape[0] = VirtualBatchSize;
        int len = (int)(gl.Count * c);
        for (int g = 0; g < ghosts; g++)
            Functional.BatchNormCore<T>(input.Slice(g * len, len), ghostShape, gl, output.Slice(g * len, len), default, default, WeightData, BiasData,
                training: true, momentum: 0, Eps, GuardRunningStats, gm.AsSpan(g * c, c), gr.AsSpan(g * c, c), unbiasedRunningVar: true, default, null,
                batchVar: gv.AsSpan(g * c, c));
        var result = RunningStatsUpdate.None;
        if (Updates && ghosts > 0)
        {
            Functional.AverageOverSegments(gm.AsSpan(0, saved), c, _avgMean);
            Functional.AverageOverSegments(gv.AsSpan(0, saved), c, _avgVar);
            result = Functional.UpdateRunning<T>(RunningMeanData, RunningVarData, _avgMean, _avgVar, UpdateFactor, GuardRunningStats, _scratch);
        }
        Record(result);
        (_saveMean, _saveRstd, _ghostVar, _ghosts) = (gm, gr, gv, ghosts);
        return true;
    }

    private protected override void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput, ReadOnlySpan<bool> mask)
    {
        var l = Layout(shape);
        if (_ghosts == 0 || !ForwardUsedBatchStats)
        {
            Functional.BatchNormBackwardCore<T>(gradOutput, input, l, WeightData, _saveMean.AsSpan(0, l.C), _saveRstd.AsSpan(0, l.C), ForwardUsedBatchStats,
                gradInput, WeightGradData, BiasGradData, default, null);
            return;
        }
        // Each ghost's BatchNorm backward; the parameter gradients accumulate, i.e. sum over ghosts.
        int c = l.C, len = (int)(l.Count / _ghosts * c);
        var gl = new ChannelLayout(l.N / _ghosts, c, l.S, ChannelsLast);
        for (int g = 0; g < _ghosts; g++)
            Functional.BatchNormBackwardCore<T>(gradOutput.Slice(g * len, len), input.Slice(g * len, len), gl, WeightData,
                _saveMean.AsSpan(g * c, c), _saveRstd.AsSpan(g * c, c), batchStatistics: true,
                gradInput.Slice(g * len, len), WeightGradData, BiasGradData, default, null);
    }

    // The saved buffer if it is long enough, else a longer copy: the old one stays intact until the
    // forward has succeeded, so a throwing forward leaves the last good one for Backward.
    private static double[] Grow(double[] a, int length)
    {
        if (a.Length >= length) return a;
        var b = new double[length];
        a.CopyTo(b, 0);
        return b;
    }
}
