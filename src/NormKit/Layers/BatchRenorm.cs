using System.Numerics;
using System.Numerics.Tensors;

namespace NormKit.Layers;

/// <summary>
/// Batch Renormalization (Ioffe 2017, arXiv 1702.03275): BatchNorm whose training output is
/// corrected towards the moving averages, so that training and inference normalize alike when
/// batches are small or not i.i.d. Per channel, from the moving mean mu and standard deviation
/// sigma as they were before this batch:
/// <code>
/// sigma_B = sqrt(var_B + eps)   (biased var_B)
/// r = clip(sigma_B / sigma, 1 / RMax, RMax)     d = clip((mu_B - mu) / sigma, -DMax, DMax)
/// y = weight * ((x - mu_B) / sigma_B * r + d) + bias
/// mu += momentum * (mu_B - mu)                  sigma += momentum * (sigma_B - sigma)
/// </code>
/// r and d are constants for the backward (stop_gradient). Eval: y = weight * (x - mu) / sigma + bias,
/// with no eps added: sigma already holds it. One set of moving averages serves both roles, as in
/// the paper (Keras keeps two). Input (N, C, *), or (N, *, C) with
/// <see cref="ChannelNorm{T}.ChannelsLast"/>. RMax = 1 and DMax = 0 is plain BatchNorm in training.
/// </summary>
public sealed class BatchRenorm<T> : ChannelNorm<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly double[] _saveMean, _saveRstd;   // mu_B and 1 / sigma_B of the last forward (eval: mu, 1 / sigma)
    private readonly double[] _r, _d;                  // the last training forward's r and d
    private readonly T[] _runningMean, _runningStd;
    private double _rMax, _dMax;

    /// <summary>Creates the layer; every hyperparameter is checked here.</summary>
    /// <param name="numFeatures">Channels C.</param>
    /// <param name="eps">Added to the batch variance inside the square root.</param>
    /// <param name="momentum">Rate of the moving averages (PyTorch's convention; Keras's renorm_momentum is 1 - this).
    /// The paper's 0.01 is the default: r and d are only useful if the averages are recent.</param>
    /// <param name="rMax">Initial clip bound of r, finite and >= 1 (the paper starts at 1 and relaxes it to 3).</param>
    /// <param name="dMax">Initial clip bound of d, finite and >= 0 (the paper starts at 0 and relaxes it to 5).</param>
    /// <param name="affine">Whether the layer has a per-channel weight and bias.</param>
    /// <param name="channelsLast">Inputs are (N, *, C).</param>
    public BatchRenorm(int numFeatures, double eps = 1e-5, double momentum = 0.01, double rMax = 3, double dMax = 5,
        bool affine = true, bool channelsLast = false)
        : base(numFeatures, eps, affine, channelsLast)
    {
        Guard.Momentum(momentum, nameof(momentum));
        CheckRMax(rMax, nameof(rMax));
        CheckDMax(dMax, nameof(dMax));
        Momentum = momentum; _rMax = rMax; _dMax = dMax;
        var mean = Add("running_mean", [numFeatures], isParameter: false);
        var std = Add("running_std", [numFeatures], isParameter: false);
        (RunningMean, _runningMean, RunningStd, _runningStd) = (mean.Value, mean.Data, std.Value, std.Data);
        _saveMean = new double[numFeatures];
        _saveRstd = new double[numFeatures];
        _r = new double[numFeatures];
        _d = new double[numFeatures];
        ResetRunningStats();
    }

    /// <summary>Weight of the new batch in the moving averages (Keras's renorm_momentum is 1 - Momentum).</summary>
    public double Momentum { get; }

    /// <summary>
    /// Clip bound of r, finite and >= 1; 1 makes r = 1. Settable so that the caller can relax
    /// it during training as the paper does (1 for the first steps, then up to 3).
    /// </summary>
    public double RMax { get => _rMax; set { CheckRMax(value, nameof(RMax)); _rMax = value; } }

    /// <summary>Clip bound of |d|, finite and >= 0; 0 makes d = 0. Settable, as <see cref="RMax"/> (the paper relaxes it from 0 to 5).</summary>
    public double DMax { get => _dMax; set { CheckDMax(value, nameof(DMax)); _dMax = value; } }

    /// <summary>Moving mean mu, shape [C] (state name "running_mean").</summary>
    public Tensor<T> RunningMean { get; }

    /// <summary>Moving standard deviation sigma, eps included, shape [C] (state name "running_std"); must stay > 0.</summary>
    public Tensor<T> RunningStd { get; }

    /// <summary>Training forwards counted, as BatchNorm's NumBatchesTracked (one the guard skipped is not counted).</summary>
    public long NumBatchesTracked { get; private set; }

    /// <summary>
    /// As BatchNorm's: when true (the default), a training batch with a non-finite mean or
    /// variance leaves the moving averages and NumBatchesTracked untouched.
    /// </summary>
    public bool GuardRunningStats { get; set; } = true;

    /// <summary>What the last training forward did to the moving averages.</summary>
    public RunningStatsUpdate LastRunningStatsUpdate { get; private set; }

    /// <summary>r per channel of the last training forward (1 before any): how far the clip let the batch's sigma differ from the moving one.</summary>
    public ReadOnlySpan<double> LastR => _r;

    /// <summary>d per channel of the last training forward (0 before any).</summary>
    public ReadOnlySpan<double> LastD => _d;

    internal override long? BatchesTracked
    {
        get => NumBatchesTracked;
        set => NumBatchesTracked = value ?? 0;
    }

    /// <summary>Moving mean 0, moving sigma 1, NumBatchesTracked 0 (and r = 1, d = 0).</summary>
    public void ResetRunningStats()
    {
        _runningMean.AsSpan().Clear();
        _runningStd.AsSpan().Fill(T.One);
        _r.AsSpan().Fill(1);
        _d.AsSpan().Clear();
        NumBatchesTracked = 0;
    }

    /// <summary>Resets the moving averages, weight to 1 and bias to 0.</summary>
    public override void ResetParameters()
    {
        ResetRunningStats();
        base.ResetParameters();
    }

    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank >= 2;
    /// <inheritdoc/>
    protected override string ExpectedShape => Layout(ChannelsLast, "an (N, C, *) input", "an (N, *, C) input");

    private protected override bool ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output, ReadOnlySpan<bool> mask)
    {
        var result = Functional.BatchNormCore<T>(input, shape, Layout(shape), output, _runningMean, _runningStd, WeightData, BiasData,
            Training, Momentum, Eps, GuardRunningStats, _saveMean, _saveRstd, unbiasedRunningVar: false, default, null,
            renorm: new Renorm(_rMax, _dMax, _r, _d));
        if (Training)
        {
            LastRunningStatsUpdate = result;
            if (result != RunningStatsUpdate.SkippedNonFinite) NumBatchesTracked++;
        }
        return Training;
    }

    private protected override void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput, ReadOnlySpan<bool> mask) =>
        Functional.BatchNormBackwardCore<T>(gradOutput, input, Layout(shape), WeightData, _saveMean, _saveRstd, ForwardUsedBatchStats,
            gradInput, WeightGradData, BiasGradData, default, null,
            ForwardUsedBatchStats ? _r : default, ForwardUsedBatchStats ? _d : default);

    private static void CheckRMax(double value, string name) => Guard.FiniteAtLeast(value, 1, name);
    private static void CheckDMax(double value, string name) => Guard.FiniteAtLeast(value, 0, name);
}
