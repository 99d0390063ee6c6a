using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Kernels;

namespace NormKit.Layers;

/// <summary>
/// What the channel norms (BatchNorm, InstanceNorm, GroupNorm) share: C channels in the
/// second dim (or the last with <see cref="ChannelsLast"/>), an optional per-channel weight
/// and bias, and the shape checks.
/// </summary>
public abstract class ChannelNorm<T> : NormLayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>Number of channels C.</summary>
    public int NumFeatures { get; }
    /// <summary>Added to the variance inside the square root. Default 1e-5.</summary>
    public double Eps { get; }
    /// <summary>Whether the layer has a per-channel weight and bias.</summary>
    public bool Affine { get; }
    /// <summary>Whether inputs are laid out (N, *spatial, C) instead of (N, C, *spatial).</summary>
    public bool ChannelsLast { get; }
    /// <summary>Per-channel scale, shape [C]; null unless <see cref="Affine"/>.</summary>
    public Tensor<T>? Weight { get; }
    /// <summary>Per-channel shift, shape [C]; null unless <see cref="Affine"/>.</summary>
    public Tensor<T>? Bias { get; }
    /// <summary>Accumulated gradient of <see cref="Weight"/>.</summary>
    public Tensor<T>? WeightGrad { get; }
    /// <summary>Accumulated gradient of <see cref="Bias"/>.</summary>
    public Tensor<T>? BiasGrad { get; }

    private protected readonly T[]? WeightData, BiasData, WeightGradData, BiasGradData;

    private protected ChannelNorm(int numFeatures, double eps, bool affine, bool channelsLast, string featuresName = "numFeatures")
    {
        Guard.Positive(numFeatures, featuresName);
        Guard.Eps(eps, nameof(eps));
        NumFeatures = numFeatures; Eps = eps; Affine = affine; ChannelsLast = channelsLast;
        if (affine)
        {
            var w = Add("weight", [numFeatures], isParameter: true);
            var b = Add("bias", [numFeatures], isParameter: true);
            (Weight, WeightGrad, WeightData, WeightGradData) = (w.Value, w.Grad, w.Data, w.GradData);
            (Bias, BiasGrad, BiasData, BiasGradData) = (b.Value, b.Grad, b.Data, b.GradData);
        }
        WeightData?.AsSpan().Fill(T.One);
    }

    /// <summary>The input ranks this layer accepts.</summary>
    protected abstract bool AcceptsRank(int rank);
    /// <summary>Describes the accepted input shapes for error messages.</summary>
    protected abstract string ExpectedShape { get; }

    /// <summary>Resets weight to 1 and bias to 0 (and, where there are any, the running statistics).</summary>
    public override void ResetParameters()
    {
        WeightData?.AsSpan().Fill(T.One);
        BiasData?.AsSpan().Clear();
    }

    private protected override bool ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output) =>
        ForwardCore(input, shape, output, default);

    private protected override void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput) =>
        BackwardCore(gradOutput, input, shape, gradInput, default);

    /// <summary>Runs the forward after the shape check, with an optional mask (BatchNorm); returns whether it used batch statistics.</summary>
    private protected abstract bool ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output, ReadOnlySpan<bool> mask);

    private protected abstract void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput, ReadOnlySpan<bool> mask);

    private protected override void CheckInput(ReadOnlySpan<int> shape, string argument)
    {
        if (!AcceptsRank(shape.Length))
            throw new ArgumentException($"{GetType().Name.Split('`')[0]} expects {ExpectedShape} but got {argument} of shape {Guard.Shape(shape)} (rank {shape.Length}).", argument);
        int c = ChannelsLast ? shape[^1] : shape[1];
        if (c != NumFeatures)
            throw new ArgumentException($"{argument} has {c} channels (shape {Guard.Shape(shape)}) but the layer was built for {FeaturesName} = {NumFeatures}.", argument);
    }

    private protected virtual string FeaturesName => "NumFeatures";

    /// <summary>The kernels' view of a shape this layer accepted.</summary>
    private protected ChannelLayout Layout(ReadOnlySpan<int> shape) => ChannelLayout.Of(shape, ChannelsLast);

    private protected static string Layout(bool channelsLast, string first, string last) => channelsLast ? last : first;
}

/// <summary>
/// A channel norm that can keep running statistics (BatchNorm, InstanceNorm): PyTorch's
/// Momentum (null = cumulative average), TrackRunningStats, RunningMean, RunningVar and
/// NumBatchesTracked, plus a guard against non-finite batches.
/// </summary>
public abstract class TrackedChannelNorm<T> : ChannelNorm<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>
    /// Weight of the new batch in the running update (PyTorch's convention; ONNX and Keras use
    /// 1 - momentum). Null: for BatchNorm a cumulative average with factor 1 / NumBatchesTracked;
    /// for InstanceNorm 0, so the running statistics never move (as PyTorch passes 0.0).
    /// </summary>
    public double? Momentum { get; }
    /// <summary>Whether the layer keeps running statistics; without them eval also uses batch statistics.</summary>
    public bool TrackRunningStats { get; }
    /// <summary>Running mean, shape [C]; null unless <see cref="TrackRunningStats"/>.</summary>
    public Tensor<T>? RunningMean { get; }
    /// <summary>Running (unbiased) variance, shape [C]; null unless <see cref="TrackRunningStats"/>.</summary>
    public Tensor<T>? RunningVar { get; }
    /// <summary>
    /// Training forwards counted, as PyTorch's num_batches_tracked: BatchNorm counts every
    /// training forward (an empty batch too) except one the guard skipped; InstanceNorm keeps it
    /// at 0, as PyTorch does.
    /// </summary>
    public long NumBatchesTracked { get; private set; }

    /// <summary>
    /// When true (the default), a training batch whose mean or variance is NaN or infinite
    /// leaves the running statistics and NumBatchesTracked untouched and
    /// <see cref="LastRunningStatsUpdate"/> says so; the output still follows IEEE.
    /// When false, the update runs as in PyTorch and the running statistics take the NaN.
    /// </summary>
    public bool GuardRunningStats { get; set; } = true;

    /// <summary>What the last training forward did to the running statistics.</summary>
    public RunningStatsUpdate LastRunningStatsUpdate { get; private set; }

    private protected readonly T[]? RunningMeanData, RunningVarData;

    private protected TrackedChannelNorm(int numFeatures, double eps, double? momentum, bool affine, bool trackRunningStats, bool channelsLast)
        : base(numFeatures, eps, affine, channelsLast)
    {
        if (momentum is double m) Guard.Momentum(m, nameof(momentum));
        Momentum = momentum; TrackRunningStats = trackRunningStats;
        if (trackRunningStats)
        {
            var rm = Add("running_mean", [numFeatures], isParameter: false);
            var v = Add("running_var", [numFeatures], isParameter: false);
            (RunningMean, RunningMeanData, RunningVar, RunningVarData) = (rm.Value, rm.Data, v.Value, v.Data);
        }
        ResetRunningStats();
    }

    internal override long? BatchesTracked
    {
        get => TrackRunningStats ? NumBatchesTracked : null;
        set { if (TrackRunningStats) NumBatchesTracked = value ?? 0; }
    }

    /// <summary>Running mean 0, running variance 1, NumBatchesTracked 0.</summary>
    public void ResetRunningStats()
    {
        RunningMeanData?.AsSpan().Fill(T.Zero);
        RunningVarData?.AsSpan().Fill(T.One);
        NumBatchesTracked = 0;
    }

    /// <summary>Resets the running statistics, weight to 1 and bias to 0.</summary>
    public override void ResetParameters()
    {
        ResetRunningStats();
        base.ResetParameters();
    }

    /// <summary>
    /// Set while <see cref="BatchNormRecalibration"/> re-estimates the running statistics: the
    /// cumulative average whatever <see cref="Momentum"/> is.
    /// </summary>
    internal bool CumulativeUpdate { get; set; }

    /// <summary>The running-update factor for the next training batch: Momentum, or 1 / (batches + 1).</summary>
    private protected virtual double UpdateFactor => Momentum is double m && !CumulativeUpdate ? m : 1.0 / (NumBatchesTracked + 1);

    /// <summary>Whether training forwards count into NumBatchesTracked (BatchNorm's do; PyTorch's InstanceNorm never counts).</summary>
    private protected virtual bool CountsBatches => true;

    /// <summary>Whether this forward uses the batch's own statistics.</summary>
    private protected bool UsesBatchStats => Training || !TrackRunningStats;

    /// <summary>Whether this forward updates the running statistics.</summary>
    private protected bool Updates => Training && TrackRunningStats;

    // As PyTorch's module, every training forward counts, an empty batch too (it changes the
    // cumulative average's factor for later batches); a batch the guard skipped does not.
    private protected void Record(RunningStatsUpdate result)
    {
        if (!Updates) return;
        LastRunningStatsUpdate = result;
        if (result != RunningStatsUpdate.SkippedNonFinite && CountsBatches) NumBatchesTracked++;
    }
}
