using System.Numerics;
using NormKit.Distributed;

namespace NormKit.Layers;

/// <summary>
/// Batch normalization with PyTorch's semantics and defaults (torch.nn.BatchNorm1d/2d/3d):
/// each channel is normalized over the batch and spatial dims. Training uses the batch's
/// biased variance and updates the running statistics (running_var from the unbiased one);
/// eval uses the running statistics. Input (N, C, *spatial), or (N, *spatial, C) when
/// <see cref="ChannelNorm{T}.ChannelsLast"/>. A mask can exclude padded positions.
/// </summary>
public abstract class BatchNorm<T> : TrackedChannelNorm<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly double[] _saveMean, _saveRstd;   // statistics of the last forward, for backward
    private bool _maskedForward;

    /// <summary>The ranks that share batch statistics (SyncBatchNorm), or null.</summary>
    private protected IAllGather? Group { get; init; }

    /// <summary>Creates the layer; every hyperparameter is checked here.</summary>
    protected BatchNorm(int numFeatures, double eps = 1e-5, double? momentum = 0.1, bool affine = true,
        bool trackRunningStats = true, bool channelsLast = false)
        : base(numFeatures, eps, momentum, affine, trackRunningStats, channelsLast)
    {
        _saveMean = new double[numFeatures];
        _saveRstd = new double[numFeatures];
    }

    /// <summary>
    /// Normalizes with padded positions excluded: <paramref name="mask"/> has one bool per
    /// (sample, spatial position), false for padding. Padding stays out of the statistics and
    /// the running update, and its output is 0.
    /// </summary>
    public void Forward(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output, ReadOnlySpan<bool> mask)
    {
        CheckInput(shape, nameof(input));
        CheckBuffers(input, nameof(input), output, nameof(output), shape);
        CheckMask(mask, shape);
        bool batchStats = ForwardCore(input, shape, output, mask);
        RecordForward(shape, null, batchStats);
        _maskedForward = !mask.IsEmpty;
    }

    /// <summary>Backward of a masked forward, given its input and mask again; padded positions get gradient 0.</summary>
    public void Backward(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput, ReadOnlySpan<bool> mask)
    {
        CheckBackward(shape, nameof(shape));
        CheckBuffers(gradOutput, nameof(gradOutput), gradInput, nameof(gradInput), shape);
        CheckBuffers(input, nameof(input), gradInput, nameof(gradInput), shape);
        CheckMask(mask, shape);
        BackwardCore(gradOutput, input, shape, gradInput, mask);
    }

    private void CheckMask(ReadOnlySpan<bool> mask, ReadOnlySpan<int> shape) =>
        Guard.OptionalLength(mask, Layout(shape).Count, nameof(mask), "one value per (sample, position) of shape", shape);

    private protected override bool ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output, ReadOnlySpan<bool> mask)
    {
        // Eval without running statistics passes none, so the batch's are used.
        var result = Functional.BatchNormCore<T>(input, shape, Layout(shape), output,
            TrackRunningStats ? RunningMeanData : default, TrackRunningStats ? RunningVarData : default,
            WeightData, BiasData, Training, UpdateFactor, Eps, GuardRunningStats, _saveMean, _saveRstd, unbiasedRunningVar: true, mask, Group);
        Record(result);
        _maskedForward = false;
        return UsesBatchStats;
    }

    private protected override void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput, ReadOnlySpan<bool> mask)
    {
        if (_maskedForward == mask.IsEmpty)
            throw new ArgumentException(_maskedForward
                ? "The last Forward used a mask; pass the same mask to Backward."
                : "The last Forward used no mask, but Backward was given one.", nameof(mask));
        Functional.BatchNormBackwardCore<T>(gradOutput, input, Layout(shape), WeightData, _saveMean, _saveRstd, ForwardUsedBatchStats,
            gradInput, WeightGradData, BiasGradData, mask, Group);
    }
}

/// <summary>BatchNorm over (N, C) or (N, C, L) inputs, like torch.nn.BatchNorm1d.</summary>
public sealed class BatchNorm1d<T>(int numFeatures, double eps = 1e-5, double? momentum = 0.1, bool affine = true, bool trackRunningStats = true, bool channelsLast = false)
    : BatchNorm<T>(numFeatures, eps, momentum, affine, trackRunningStats, channelsLast) where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank is 2 or 3;
    /// <inheritdoc/>
    protected override string ExpectedShape => Layout(ChannelsLast, "a 2D (N, C) or 3D (N, C, L) input", "a 2D (N, C) or 3D (N, L, C) input");
}

/// <summary>BatchNorm over (N, C, H, W) inputs, like torch.nn.BatchNorm2d.</summary>
public sealed class BatchNorm2d<T>(int numFeatures, double eps = 1e-5, double? momentum = 0.1, bool affine = true, bool trackRunningStats = true, bool channelsLast = false)
    : BatchNorm<T>(numFeatures, eps, momentum, affine, trackRunningStats, channelsLast) where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank == 4;
    /// <inheritdoc/>
    protected override string ExpectedShape => Layout(ChannelsLast, "a 4D (N, C, H, W) input", "a 4D (N, H, W, C) input");
}

/// <summary>BatchNorm over (N, C, D, H, W) inputs, like torch.nn.BatchNorm3d.</summary>
public sealed class BatchNorm3d<T>(int numFeatures, double eps = 1e-5, double? momentum = 0.1, bool affine = true, bool trackRunningStats = true, bool channelsLast = false)
    : BatchNorm<T>(numFeatures, eps, momentum, affine, trackRunningStats, channelsLast) where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank == 5;
    /// <inheritdoc/>
    protected override string ExpectedShape => Layout(ChannelsLast, "a 5D (N, C, D, H, W) input", "a 5D (N, D, H, W, C) input");
}

/// <summary>
/// BatchNorm whose batch statistics span every rank of <see cref="IAllGather"/> group
/// (torch.nn.SyncBatchNorm): each rank passes its shard of the batch; per-channel
/// (count, mean, M2) are gathered and merged in rank order, so every rank normalizes with the
/// same statistics and keeps bit-identical running statistics. Backward gathers the two
/// per-channel sums it needs; WeightGrad and BiasGrad hold this rank's share (sum them over
/// ranks, as data-parallel training does, for the whole batch's gradient). Accepts (N, C, *).
/// Every rank must call Forward and Backward, even with an empty shard.
/// </summary>
public sealed class SyncBatchNorm<T> : BatchNorm<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>Creates the layer for one rank of <paramref name="group"/>.</summary>
    public SyncBatchNorm(int numFeatures, IAllGather group, double eps = 1e-5, double? momentum = 0.1, bool affine = true,
        bool trackRunningStats = true, bool channelsLast = false)
        : base(numFeatures, eps, momentum, affine, trackRunningStats, channelsLast)
    {
        ArgumentNullException.ThrowIfNull(group);
        Group = group;
    }

    /// <summary>The rank this layer runs as, and the group size.</summary>
    public (int Rank, int WorldSize) Position => (Group!.Rank, Group.WorldSize);

    /// <summary>
    /// A SyncBatchNorm over <paramref name="group"/> with <paramref name="source"/>'s
    /// hyperparameters, a copy of its weight, bias, running statistics and NumBatchesTracked,
    /// its GuardRunningStats and its train/eval mode (torch.nn.SyncBatchNorm.convert_sync_batchnorm,
    /// which shares the tensors instead of copying them). Call it with the same source state on
    /// every rank, e.g. after loading one checkpoint everywhere.
    /// </summary>
    public static SyncBatchNorm<T> From(BatchNorm<T> source, IAllGather group)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(group);
        var sync = new SyncBatchNorm<T>(source.NumFeatures, group, source.Eps, source.Momentum, source.Affine,
            source.TrackRunningStats, source.ChannelsLast) { GuardRunningStats = source.GuardRunningStats };
        foreach (var (from, to) in source.Tensors.Zip(sync.Tensors))
            from.Data.AsSpan().CopyTo(to.Data);
        sync.BatchesTracked = source.BatchesTracked;
        sync.Train(source.Training);
        return sync;
    }

    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank >= 2;
    /// <inheritdoc/>
    protected override string ExpectedShape => Layout(ChannelsLast, "an (N, C, *) input", "an (N, *, C) input");
}
