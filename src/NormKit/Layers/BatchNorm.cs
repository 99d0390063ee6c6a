using System.Numerics;
using System.Numerics.Tensors;

namespace NormKit.Layers;

/// <summary>
/// Batch normalization with PyTorch's semantics and defaults (torch.nn.BatchNorm1d/2d/3d):
/// each channel is normalized over the batch and spatial dims. Training uses the batch's
/// biased variance and updates the running statistics (running_var from the unbiased one);
/// eval uses the running statistics. Input (N, C, *spatial), or (N, *spatial, C) when
/// <see cref="ChannelsLast"/>.
/// </summary>
public abstract class BatchNorm<T> : NormLayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>Number of channels C.</summary>
    public int NumFeatures { get; }
    /// <summary>Added to the variance inside the square root. Default 1e-5.</summary>
    public double Eps { get; }
    /// <summary>
    /// Weight of the new batch in the running update (PyTorch's convention; ONNX and Keras use
    /// 1 - momentum). Null: cumulative average with factor 1 / NumBatchesTracked.
    /// </summary>
    public double? Momentum { get; }
    /// <summary>Whether the layer has a per-channel weight and bias.</summary>
    public bool Affine { get; }
    /// <summary>Whether the layer keeps running statistics; without them eval also uses batch statistics.</summary>
    public bool TrackRunningStats { get; }
    /// <summary>Whether inputs are laid out (N, *spatial, C) instead of (N, C, *spatial).</summary>
    public bool ChannelsLast { get; }

    /// <summary>
    /// When true (the default), a training batch whose mean or variance is NaN or infinite
    /// leaves the running statistics and NumBatchesTracked untouched and
    /// <see cref="LastRunningStatsUpdate"/> says so; the output still follows IEEE.
    /// When false, the update runs as in PyTorch and the running statistics take the NaN.
    /// </summary>
    public bool GuardRunningStats { get; set; } = true;

    /// <summary>What the last training forward did to the running statistics.</summary>
    public RunningStatsUpdate LastRunningStatsUpdate { get; private set; }

    /// <summary>Per-channel scale, shape [C]; null unless <see cref="Affine"/>.</summary>
    public Tensor<T>? Weight { get; }
    /// <summary>Per-channel shift, shape [C]; null unless <see cref="Affine"/>.</summary>
    public Tensor<T>? Bias { get; }
    /// <summary>Accumulated gradient of <see cref="Weight"/>.</summary>
    public Tensor<T>? WeightGrad { get; }
    /// <summary>Accumulated gradient of <see cref="Bias"/>.</summary>
    public Tensor<T>? BiasGrad { get; }
    /// <summary>Running mean, shape [C]; null unless <see cref="TrackRunningStats"/>.</summary>
    public Tensor<T>? RunningMean { get; }
    /// <summary>Running (unbiased) variance, shape [C]; null unless <see cref="TrackRunningStats"/>.</summary>
    public Tensor<T>? RunningVar { get; }
    /// <summary>Training forwards whose statistics entered the running averages.</summary>
    public long NumBatchesTracked { get; private set; }

    private readonly T[]? _weight, _bias, _dWeight, _dBias, _runningMean, _runningVar;
    private readonly double[] _saveMean, _saveRstd;   // statistics of the last forward, for backward

    /// <summary>Creates the layer; every hyperparameter is checked here.</summary>
    protected BatchNorm(int numFeatures, double eps = 1e-5, double? momentum = 0.1, bool affine = true,
        bool trackRunningStats = true, bool channelsLast = false)
    {
        Guard.Positive(numFeatures, nameof(numFeatures));
        Guard.Eps(eps, nameof(eps));
        if (momentum is double m) Guard.Momentum(m, nameof(momentum));
        NumFeatures = numFeatures; Eps = eps; Momentum = momentum; Affine = affine;
        TrackRunningStats = trackRunningStats; ChannelsLast = channelsLast;
        int[] shape = [numFeatures];
        if (affine)
        {
            Weight = Vector(_weight = new T[numFeatures], shape);
            Bias = Vector(_bias = new T[numFeatures], shape);
            WeightGrad = Vector(_dWeight = new T[numFeatures], shape);
            BiasGrad = Vector(_dBias = new T[numFeatures], shape);
        }
        if (trackRunningStats)
        {
            RunningMean = Vector(_runningMean = new T[numFeatures], shape);
            RunningVar = Vector(_runningVar = new T[numFeatures], shape);
        }
        _saveMean = new double[numFeatures];
        _saveRstd = new double[numFeatures];
        ResetParameters();
    }

    /// <summary>The input ranks this layer accepts, e.g. "2 or 3" for BatchNorm1d.</summary>
    protected abstract bool AcceptsRank(int rank);
    /// <summary>Describes the accepted input shapes for error messages.</summary>
    protected abstract string ExpectedShape { get; }

    /// <summary>Running mean 0, running variance 1, NumBatchesTracked 0.</summary>
    public void ResetRunningStats()
    {
        _runningMean?.AsSpan().Fill(T.Zero);
        _runningVar?.AsSpan().Fill(T.One);
        NumBatchesTracked = 0;
    }

    /// <summary>Resets the running statistics, weight to 1 and bias to 0.</summary>
    public void ResetParameters()
    {
        ResetRunningStats();
        _weight?.AsSpan().Fill(T.One);
        _bias?.AsSpan().Fill(T.Zero);
    }

    /// <inheritdoc/>
    public override void ZeroGrad()
    {
        _dWeight?.AsSpan().Clear();
        _dBias?.AsSpan().Clear();
    }

    /// <summary>Normalizes a tensor; returns a new tensor of the same shape.</summary>
    public Tensor<T> Forward(Tensor<T> input)
    {
        int[] shape = Guard.ShapeOf(input, nameof(input));
        var output = Guard.NewLike(input);
        ForwardCore(Guard.Span(input), shape, Guard.Span(output), input);
        return output;
    }

    /// <summary>Normalizes <paramref name="input"/> of shape <paramref name="shape"/> into <paramref name="output"/>; allocates nothing.</summary>
    public void Forward(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output) => ForwardCore(input, shape, output, null);

    private void ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output, Tensor<T>? tensor)
    {
        CheckShape(shape, nameof(input));
        bool update = Training && TrackRunningStats;
        double factor = Momentum ?? 1.0 / (NumBatchesTracked + 1);
        // Eval without running statistics passes none, so the batch's are used.
        bool useRunning = TrackRunningStats;
        var result = Functional.BatchNorm<T>(input, shape, output,
            useRunning ? _runningMean : default, useRunning ? _runningVar : default,
            _weight, _bias, training: Training, momentum: factor, eps: Eps, channelsLast: ChannelsLast,
            guardNonFinite: GuardRunningStats, saveMean: _saveMean, saveRstd: _saveRstd);
        if (update)
        {
            LastRunningStatsUpdate = result;
            if (result == RunningStatsUpdate.Updated) NumBatchesTracked++;
        }
        RecordForward(shape, tensor, usedBatchStats: Training || !TrackRunningStats);
    }

    /// <summary>
    /// Backward of the last tensor <see cref="Forward(Tensor{T})"/>: returns the input gradient
    /// and accumulates into <see cref="WeightGrad"/> and <see cref="BiasGrad"/>.
    /// </summary>
    public Tensor<T> Backward(Tensor<T> gradOutput)
    {
        int[] shape = Guard.ShapeOf(gradOutput, nameof(gradOutput));
        var input = RequireForwardInput();
        CheckBackward(shape, nameof(gradOutput));
        var gradInput = Guard.NewLike(gradOutput);
        BackwardCore(Guard.Span(gradOutput), Guard.Span(input), shape, Guard.Span(gradInput));
        return gradInput;
    }

    /// <summary>
    /// Backward of the last forward, given its input again; writes <paramref name="gradInput"/>
    /// and accumulates the parameter gradients. Allocates nothing.
    /// </summary>
    public void Backward(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput)
    {
        CheckBackward(shape, nameof(shape));
        BackwardCore(gradOutput, input, shape, gradInput);
    }

    private void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput) =>
        Functional.BatchNormBackward<T>(gradOutput, input, shape, _weight, _saveMean, _saveRstd, ForwardUsedBatchStats,
            gradInput, _dWeight, _dBias, ChannelsLast);

    private void CheckShape(ReadOnlySpan<int> shape, string argument)
    {
        if (!AcceptsRank(shape.Length))
            throw new ArgumentException($"{GetType().Name.Split('`')[0]} expects {ExpectedShape} but got {argument} of shape {Guard.Shape(shape)} (rank {shape.Length}).", argument);
        int c = ChannelsLast ? shape[^1] : shape[1];
        if (c != NumFeatures)
            throw new ArgumentException($"{argument} has {c} channels (shape {Guard.Shape(shape)}) but the layer was built for NumFeatures = {NumFeatures}.", argument);
    }
}

/// <summary>BatchNorm over (N, C) or (N, C, L) inputs, like torch.nn.BatchNorm1d.</summary>
public sealed class BatchNorm1d<T>(int numFeatures, double eps = 1e-5, double? momentum = 0.1, bool affine = true, bool trackRunningStats = true, bool channelsLast = false)
    : BatchNorm<T>(numFeatures, eps, momentum, affine, trackRunningStats, channelsLast) where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank is 2 or 3;
    /// <inheritdoc/>
    protected override string ExpectedShape => ChannelsLast ? "a 2D (N, C) or 3D (N, L, C) input" : "a 2D (N, C) or 3D (N, C, L) input";
}

/// <summary>BatchNorm over (N, C, H, W) inputs, like torch.nn.BatchNorm2d.</summary>
public sealed class BatchNorm2d<T>(int numFeatures, double eps = 1e-5, double? momentum = 0.1, bool affine = true, bool trackRunningStats = true, bool channelsLast = false)
    : BatchNorm<T>(numFeatures, eps, momentum, affine, trackRunningStats, channelsLast) where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank == 4;
    /// <inheritdoc/>
    protected override string ExpectedShape => ChannelsLast ? "a 4D (N, H, W, C) input" : "a 4D (N, C, H, W) input";
}

/// <summary>BatchNorm over (N, C, D, H, W) inputs, like torch.nn.BatchNorm3d.</summary>
public sealed class BatchNorm3d<T>(int numFeatures, double eps = 1e-5, double? momentum = 0.1, bool affine = true, bool trackRunningStats = true, bool channelsLast = false)
    : BatchNorm<T>(numFeatures, eps, momentum, affine, trackRunningStats, channelsLast) where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank == 5;
    /// <inheritdoc/>
    protected override string ExpectedShape => ChannelsLast ? "a 5D (N, D, H, W, C) input" : "a 5D (N, C, D, H, W) input";
}
