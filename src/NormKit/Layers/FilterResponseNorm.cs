using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Kernels;

namespace NormKit.Layers;

/// <summary>
/// Filter Response Normalization with its thresholded linear unit (Singh and Krishnan 2020):
/// per sample and channel, over the spatial positions, x_hat = x / sqrt(mean(x^2) + eps),
/// y = weight * x_hat + bias, z = max(y, tau). No mean subtraction and no batch statistics, so
/// it is the same in training and eval and has no running statistics. Input (N, C, *spatial) of
/// rank 2 or more, or (N, *spatial, C) with <see cref="ChannelNorm{T}.ChannelsLast"/> (TensorFlow's layout).
/// With one value per plane (rank 2, or 1x1 maps) x_hat is close to sign(x) unless eps is
/// large, which is what the learned eps is for.
/// </summary>
public sealed class FilterResponseNorm<T> : ChannelNorm<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>Whether the output goes through the TLU, max(y, tau).</summary>
    public bool Tlu { get; }
    /// <summary>Whether a learned scalar adds to eps (TF Addons' learned_epsilon).</summary>
    public bool LearnedEps { get; }
    /// <summary>The TLU's per-channel threshold, shape [C], state_dict "tau"; null without the TLU.</summary>
    public Tensor<T>? Tau { get; }
    /// <summary>Accumulated gradient of <see cref="Tau"/>.</summary>
    public Tensor<T>? TauGrad { get; }
    /// <summary>The learned eps, shape [1], state_dict "eps" (TF Addons' eps_learned, initialised to 1e-4); null unless <see cref="LearnedEps"/>.</summary>
    public Tensor<T>? EpsLearned { get; }
    /// <summary>Accumulated gradient of <see cref="EpsLearned"/>.</summary>
    public Tensor<T>? EpsLearnedGrad { get; }

    /// <summary>TF Addons' initial value of the learned eps.</summary>
    private const double EpsLearnedInit = 1e-4;

    private readonly T[]? _tau, _dTau, _epsLearned, _dEpsLearned;
    private readonly double[] _channelSums;   // 3 * C: dWeight, dBias, dTau of one backward, in double
    private double[] _rstd = [];              // per (n, c) plane of the last forward; grown, never shrunk
    private double[] _work = [];              // 4 per plane: the moments, then the gradient sums
    private T[] _coef = [];                   // 5 per plane: a, b, u, then p, q
    private T[] _zeros = [];                  // per plane, never written: hi, lo and r of the shared passes
    private double[] _zeroMeans = [];         // per plane, never written: the sums are about 0

    /// <summary>
    /// Creates the layer. <paramref name="eps"/> (TF Addons' epsilon, default 1e-6) is added
    /// to mean(x^2); with <paramref name="learnedEps"/> the sum |eps| + |eps_learned| is.
    /// </summary>
    public FilterResponseNorm(int numFeatures, double eps = 1e-6, bool learnedEps = false, bool tlu = true, bool channelsLast = false)
        : base(numFeatures, eps, affine: true, channelsLast)
    {
        Tlu = tlu; LearnedEps = learnedEps;
        if (tlu)
        {
            var t = Add("tau", [numFeatures], isParameter: true);
            (Tau, TauGrad, _tau, _dTau) = (t.Value, t.Grad, t.Data, t.GradData);
        }
        if (learnedEps)
        {
            var e = Add("eps", [1], isParameter: true);
            (EpsLearned, EpsLearnedGrad, _epsLearned, _dEpsLearned) = (e.Value, e.Grad, e.Data, e.GradData);
        }
        _channelSums = new double[3 * numFeatures];
        ResetParameters();
    }

    /// <summary>Weight 1, bias 0, tau 0, the learned eps 1e-4.</summary>
    public override void ResetParameters()
    {
        base.ResetParameters();
        _tau?.AsSpan().Clear();
        _epsLearned?.AsSpan().Fill(Num.From<T>(EpsLearnedInit));
    }

    /// <summary>What is added to mean(x^2): |eps| + |eps_learned|, or eps.</summary>
    public double EpsTotal => Math.Abs(Eps) + (_epsLearned is null ? 0 : Math.Abs(Num.D(_epsLearned[0])));

    /// <inheritdoc/>
    protected override bool AcceptsRank(int rank) => rank >= 2;
    /// <inheritdoc/>
    protected override string ExpectedShape => Layout(ChannelsLast, "an (N, C, *spatial) input of rank >= 2", "an (N, *spatial, C) input of rank >= 2");

    private protected override bool ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output, ReadOnlySpan<bool> mask)
    {
        var l = Layout(shape);
        Grow(l.Planes);
        int planes = l.Planes;
        if (l.Count == 0) return false;
        Span<double> work = _work.AsSpan(0, 4 * planes);
        Span<double> count = work[..planes], mean = work.Slice(planes, planes), m2 = work.Slice(2 * planes, planes);
        // mean(x^2) = var + mean^2 from the shared per-plane moments (two passes in double).
        ChannelKernel.PlaneMoments(input, l, default, count, mean, m2);
        double eps = EpsTotal;
        for (int p = 0; p < planes; p++)
            _rstd[p] = ChannelCoefficients.Rstd(m2[p] / count[p] + mean[p] * mean[p], eps);
        Coefficients(l, out var a, out var b, out var u);
        if (Tlu) ChannelKernel.Threshold<T>(input, l, perPlane: true, a, b, u, output);
        else ChannelKernel.Normalize<T>(input, l, default, perPlane: true, Zeros(planes), Zeros(planes), a, b, output);
        return false;
    }

    // a = weight * rstd, b = bias, u = tau, one per (n, c) plane: forward and backward's gate
    // compute them with the same operations, so the gate sees the forward's exact y.
    private void Coefficients(ChannelLayout l, out Span<T> a, out Span<T> b, out Span<T> u)
    {
        int planes = l.Planes;
        a = _coef.AsSpan(0, planes); b = _coef.AsSpan(planes, planes); u = _coef.AsSpan(2 * planes, planes);
        for (int p = 0; p < planes; p++)
        {
            int c = p % l.C;
            a[p] = ChannelCoefficients.Scale<T>(_rstd[p], Num.D(WeightData![c]));
            b[p] = BiasData![c];
            u[p] = _tau is null ? T.Zero : _tau[c];
        }
    }

    private ReadOnlySpan<T> Zeros(int planes) => _zeros.AsSpan(0, planes);

    private protected override void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput, ReadOnlySpan<bool> mask)
    {
        var l = Layout(shape);
        int planes = l.Planes, C = l.C;
        if (l.Count == 0) return;
        Coefficients(l, out var a, out var b, out var u);
        // g: dy through the TLU, written into gradInput (the passes below read it in place).
        ReadOnlySpan<T> g = gradOutput;
        if (Tlu)
        {
            ChannelKernel.Gate<T>(gradOutput, input, l, perPlane: true, a, b, u, gradInput);
            g = gradInput;
        }
        Span<double> work = _work.AsSpan(0, 4 * planes);
        Span<double> sg = work[..planes], sgx = work.Slice(planes, planes), sdy = work.Slice(2 * planes, planes), unused = work.Slice(3 * planes, planes);
        ReadOnlySpan<double> zeroMeans = _zeroMeans.AsSpan(0, planes);
        ChannelKernel.PlaneGradSums(g, input, l, default, zeroMeans, perPlane: true, sg, sgx);
        if (Tlu) ChannelKernel.PlaneGradSums(gradOutput, input, l, default, zeroMeans, perPlane: true, sdy, unused);

        Span<T> pc = _coef.AsSpan(3 * planes, planes), qc = _coef.AsSpan(4 * planes, planes);
        Span<double> dW = _channelSums.AsSpan(0, C), dB = _channelSums.AsSpan(C, C), dTau = _channelSums.AsSpan(2 * C, C);
        dW.Clear(); dB.Clear(); dTau.Clear();
        double eps = EpsTotal, dEps = 0;
        for (int p = 0; p < planes; p++)   // n outer, c inner: a fixed order
        {
            int c = p % C;
            double r = _rstd[p], w = Num.D(WeightData![c]);
            ChannelCoefficients.ResponseBackward(r, w, sgx[p], l.S, eps, out pc[p], out qc[p]);
            dW[c] += r * sgx[p];
            dB[c] += sg[p];
            if (Tlu) dTau[c] += sdy[p] - sg[p];
            dEps += -0.5 * w * r * r * r * sgx[p];   // d x_hat / d eps = -x_hat * rstd^2 / 2
        }
        ChannelKernel.InputGrad<T>(g, input, l, default, perPlane: true, Zeros(planes), Zeros(planes), pc, qc, Zeros(planes), gradInput);
        for (int c = 0; c < C; c++)
        {
            WeightGradData![c] = Num.From<T>(Num.D(WeightGradData[c]) + dW[c]);
            BiasGradData![c] = Num.From<T>(Num.D(BiasGradData[c]) + dB[c]);
            if (_dTau is not null) _dTau[c] = Num.From<T>(Num.D(_dTau[c]) + dTau[c]);
        }
        // eps_total = |eps| + |eps_learned|: the chain rule through the absolute value.
        if (_dEpsLearned is not null)
            _dEpsLearned[0] = Num.From<T>(Num.D(_dEpsLearned[0]) + Math.Sign(Num.D(_epsLearned![0])) * dEps);
    }

    // The per-plane buffers, grown to the largest input seen and then kept: a span call in
    // steady state allocates nothing.
    private void Grow(int planes)
    {
        if (_rstd.Length >= planes) return;
        _rstd = new double[planes];
        _work = new double[4 * planes];
        _coef = new T[5 * planes];
        _zeros = new T[planes];
        _zeroMeans = new double[planes];
    }
}
