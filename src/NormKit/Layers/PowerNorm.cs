using System.Numerics;
using System.Numerics.Tensors;

namespace NormKit.Layers;

/// <summary>
/// PowerNorm (Shen et al. 2020), as the official MaskPowerNorm computes it without its padding
/// mask and without its GroupScaling1D pre-step: per channel, over every position of the batch,
/// psi² = mean(x²) with no centring. Training divides by the batch's sqrt(psi² + eps) for the
/// first <see cref="WarmupIters"/> iterations and by the running quadratic mean sqrt(phi + eps)
/// afterwards, so a Transformer's small or uneven batches stop driving the forward; eval always
/// uses phi. Backward is the paper's approximate one, which keeps a running correction
/// <see cref="EmaGz"/> instead of differentiating through the batch statistic: Backward
/// therefore changes state, and calling it twice for one forward is not idempotent.
/// Input (N, C, *) of rank 2 or more, e.g. (tokens, C), or (N, *, C) with
/// <see cref="ChannelNorm{T}.ChannelsLast"/>. State: weight, bias, running_phi, ema_gz (both
/// [1, C, 1, 1] as in the official code) and iters.
/// </summary>
public sealed class PowerNorm<T> : ChannelNorm<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly T[] _runningPhi, _emaGz;
    private readonly double[] _savePsi2, _saveRz;   // of the last forward, for backward
    private bool _forwardTrained;

    /// <summary>Creates the layer; every hyperparameter is checked here. The defaults are MaskPowerNorm's.</summary>
    /// <param name="numFeatures">Channels C.</param>
    /// <param name="eps">Added to psi² and phi inside the square root; finite and &gt; 0.</param>
    /// <param name="alphaForward">Weight of the old phi in its running update, in [0, 1].</param>
    /// <param name="alphaBackward">Backward: the correction uses (1 - alphaBackward) * ema_gz; in [0, 1] (1 turns it off).</param>
    /// <param name="warmupIters">Training iterations (counted from 1) that normalize with the batch's psi²; &gt;= 0.
    /// MaskPowerNorm's default is 10000; the released training script passes its LR warm-up (--warmup-updates).</param>
    /// <param name="affine">Per-channel weight and bias (without: 1 and 0, and no such state).</param>
    /// <param name="channelsLast">Channels are the last dim instead of the second.</param>
    public PowerNorm(int numFeatures, double eps = 1e-5, double alphaForward = 0.9, double alphaBackward = 0.9, int warmupIters = 10000,
        bool affine = true, bool channelsLast = false)
        : base(numFeatures, eps, affine, channelsLast)
    {
        Guard.Momentum(alphaForward, nameof(alphaForward));
        Guard.Momentum(alphaBackward, nameof(alphaBackward));
        Guard.NonNegative(warmupIters, nameof(warmupIters));
        AlphaForward = alphaForward; AlphaBackward = alphaBackward; WarmupIters = warmupIters;
        var phi = Add("running_phi", [1, numFeatures, 1, 1], isParameter: false);
        var g = Add("ema_gz", [1, numFeatures, 1, 1], isParameter: false);
        (RunningPhi, _runningPhi, EmaGz, _emaGz) = (phi.Value, phi.Data, g.Value, g.Data);
        _savePsi2 = new double[numFeatures];
        _saveRz = new double[numFeatures];
        ResetRunningStats();
    }

    /// <summary>Weight of the old phi in the running update (the official alpha_fwd).</summary>
    public double AlphaForward { get; }
    /// <summary>The official alpha_bkw: the backward's correction term is scaled by 1 - AlphaBackward.</summary>
    public double AlphaBackward { get; }
    /// <summary>Training iterations 1..WarmupIters normalize with the batch's own psi²; later ones with phi.</summary>
    public int WarmupIters { get; }
    /// <summary>The running quadratic mean phi, shape [1, C, 1, 1] (the official running_phi); starts at 1.</summary>
    public Tensor<T> RunningPhi { get; }
    /// <summary>The backward's running correction G (the official ema_gz), shape [1, C, 1, 1]; starts at 0; Backward in training changes it.</summary>
    public Tensor<T> EmaGz { get; }
    /// <summary>Training forwards counted (the official iters buffer); the next one is iteration Iterations + 1.</summary>
    public long Iterations { get; private set; }

    /// <summary>
    /// When true (the default), a training batch with a non-finite psi² in any channel, or a
    /// running update that would not be finite in T, leaves running_phi and Iterations as they
    /// were; a backward whose new ema_gz would not be finite leaves ema_gz as it was. The outputs
    /// follow IEEE either way. When false the NaN goes into the state, as in the official code.
    /// </summary>
    public bool GuardRunningStats { get; set; } = true;

    /// <summary>What the last training forward did to running_phi and Iterations.</summary>
    public RunningStatsUpdate LastRunningStatsUpdate { get; private set; }

    /// <summary>What the last training backward did to ema_gz.</summary>
    public RunningStatsUpdate LastEmaGzUpdate { get; private set; }

    internal override long? BatchesTracked { get => Iterations; set => Iterations = value ?? 0; }

    // The official module registers iters as a LongTensor of shape [1].
    internal override (string Name, int[] Shape) BatchesTrackedKey => ("iters", [1]);

    /// <summary>running_phi 1, ema_gz 0, Iterations 0 (warm-up starts again).</summary>
    public void ResetRunningStats()
    {
        _runningPhi.AsSpan().Fill(T.One);
        _emaGz.AsSpan().Clear();
        Iterations = 0;
    }

    /// <summary>Resets the running state, weight to 1 and bias to 0.</summary>
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
        // The official module counts the iteration before its forward; an empty batch is not counted here
        // (there it would turn running_phi into NaN).
        var l = Layout(shape);
        var result = Functional.PowerNormCore<T>(input, l, output, _runningPhi, WeightData, BiasData, Training, Iterations + 1, WarmupIters,
            AlphaForward, Eps, GuardRunningStats, _savePsi2, _saveRz);
        _forwardTrained = Training;
        if (Training)
        {
            LastRunningStatsUpdate = result;
            if (result == RunningStatsUpdate.Updated) Iterations++;
        }
        return Training;
    }

    private protected override void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput, ReadOnlySpan<bool> mask)
    {
        var result = Functional.PowerNormBackwardCore<T>(gradOutput, input, Layout(shape), WeightData, _savePsi2, _saveRz, _forwardTrained,
            _emaGz, AlphaBackward, Eps, GuardRunningStats, gradInput, WeightGradData, BiasGradData);
        if (_forwardTrained) LastEmaGzUpdate = result;
    }
}
