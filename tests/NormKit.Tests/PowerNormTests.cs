using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Layers;
using NormKit.Serialization;
using NormKit.Tests.Reference;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>
/// PowerNorm against the official MaskPowerNorm (sIncerass/powernorm,
/// fairseq/modules/norms/mask_powernorm.py), rewritten below step by step in double with plain
/// loops: the iteration count, the warm-up switch, the running update and the approximate backward.
/// </summary>
[Trait("Category", "Kernel")]
public class PowerNormTests
{
    // ---------------- the reference: PowerFunction and MaskPowerNorm.forward, in double ----------------

    internal sealed class Reference(int c, double eps = 1e-5, double alphaFwd = 0.9, double alphaBkw = 0.9, int warmup = 10000)
    {
        public readonly double[] Phi = Enumerable.Repeat(1.0, c).ToArray();   // running_phi
        public readonly double[] EmaGz = new double[c];                         // ema_gz
        public long Iters;                                                      // iters
        private double[] _z = [], _var = new double[c];
        private int _n, _s;
        private bool _cl;

        public double[] Forward(double[] x, int n, int s, bool cl, double[] w, double[] b)
        {
            Iters++;                                   // self.iters.copy_(self.iters + 1), before PowerFunction
            long it = Iters;
            (_n, _s, _cl) = (n, s, cl);
            var var = new double[c];
            for (int ch = 0; ch < c; ch++)
            {
                double q = 0;                          // x2 = (mask_x * mask_x).mean(dim=0)
                for (int i = 0; i < n; i++) for (int k = 0; k < s; k++) { double v = x[Oracle.At(i, ch, k, c, s, cl)]; q += v * v; }
                var[ch] = q / ((double)n * s);
            }
            var z = new double[x.Length];
            var y = new double[x.Length];
            for (int ch = 0; ch < c; ch++)
                for (int i = 0; i < n; i++)
                    for (int k = 0; k < s; k++)
                    {
                        int at = Oracle.At(i, ch, k, c, s, cl);
                        z[at] = it <= warmup ? x[at] / Math.Sqrt(var[ch] + eps) : x[at] / Math.Sqrt(Phi[ch] + eps);
                        y[at] = w[ch] * z[at] + b[ch];
                    }
            for (int ch = 0; ch < c; ch++)
            {
                if (it < warmup) Phi[ch] = Phi[ch] * (it - 1) / it + var[ch] / it;
                Phi[ch] = alphaFwd * Phi[ch] + (1 - alphaFwd) * var[ch];
            }
            _z = z; _var = var;
            return y;
        }

        public (double[] Dx, double[] Dw, double[] Db) Backward(double[] dy, double[] w)
        {
            var dx = new double[dy.Length];
            var dw = new double[c];
            var db = new double[c];
            for (int ch = 0; ch < c; ch++)
            {
                var approx = new double[_n * _s];
                double gz = 0;
                for (int i = 0; i < _n; i++)
                    for (int k = 0; k < _s; k++)
                    {
                        int at = Oracle.At(i, ch, k, c, _s, _cl);
                        double g = dy[at] * w[ch];
                        approx[i * _s + k] = g - (1 - alphaBkw) * EmaGz[ch] * _z[at];
                        gz += approx[i * _s + k] * _z[at];
                        dw[ch] += dy[at] * _z[at];
                        db[ch] += dy[at];
                    }
                EmaGz[ch] += gz / (_n * _s);
                for (int i = 0; i < _n; i++)
                    for (int k = 0; k < _s; k++)
                        dx[Oracle.At(i, ch, k, c, _s, _cl)] = approx[i * _s + k] / Math.Sqrt(_var[ch] + eps);
            }
            return (dx, dw, db);
        }
    }

    private static int[] Shape(int n, int c, int s, bool cl) => s == 1 ? [n, c] : cl ? [n, s, c] : [n, c, s];

    // Step k's batch: a different mean and scale each step, so psi² moves.
    private static double[] Batch(int k, int length) => Data.RoundToFloat(Data.Normal(100 + k, length, 0.3 * k - 0.5, 1 + 0.4 * k));
    private static double[] Grad(int k, int length) => Data.RoundToFloat(Data.Normal(200 + k, length, 0.1, 1));

    internal static double[] D<T>(ReadOnlySpan<T> a) where T : unmanaged
    {
        var d = new double[a.Length];
        for (int i = 0; i < d.Length; i++) d[i] = Check.ToDouble(a[i]);
        return d;
    }

    internal static PowerNorm<T> Trainable<T>(int c, double[] w, double[] b, int warmup, double alphaBkw = 0.9, bool cl = false)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var pn = new PowerNorm<T>(c, alphaBackward: alphaBkw, warmupIters: warmup, channelsLast: cl);
        Check.Arr<T>(w).CopyTo(Guard.Span(pn.Weight!));
        Check.Arr<T>(b).CopyTo(Guard.Span(pn.Bias!));
        return pn;
    }

    // (N, C, S, channelsLast, warmup): S = 1 is the Transformer's (tokens, C).
    public static TheoryData<int, int, int, bool, int> Cases() => new()
    {
        { 6, 5, 1, false, 3 },
        { 4, 3, 7, false, 3 },
        { 3, 4, 5, true, 3 },
        { 2, 17, 33, false, 3 },
        { 16, 65, 1, true, 3 },
        { 3, 8, 257, false, 2 },
        { 7, 5, 3000, true, 3 },     // more rows than one block
        { 5, 3, 4, false, 0 },       // no warm-up: phi from the first step
        { 5, 3, 4, true, 1 },        // iteration 1 normalizes with the batch but takes no cumulative average
    };

    [Theory, MemberData(nameof(Cases))]
    public void Training_steps_across_the_warmup_match_the_official_algorithm(int n, int c, int s, bool cl, int warmup)
    {
        const int steps = 6;
        var w = Data.RoundToFloat(Data.Normal(c, c, 1, 0.4));
        var b = Data.RoundToFloat(Data.Normal(c + 1, c));
        Paths.ForEach(p =>
        {
            One<float>(Tol.F32);
            One<double>(Tol.F64);
            void One<T>(Tol tol) where T : unmanaged, IFloatingPointIeee754<T>
            {
                var reference = new Reference(c, warmup: warmup);
                var pn = Trainable<T>(c, w, b, warmup, cl: cl);
                for (int k = 0; k < steps; k++)
                {
                    string at = $"{typeof(T).Name} step {k + 1} ({p})";
                    var x = Batch(k, n * c * s);
                    var dy = Grad(k, x.Length);
                    var ey = reference.Forward(x, n, s, cl, w, b);
                    var (edx, edw, edb) = reference.Backward(dy, w);
                    pn.ZeroGrad();
                    var y = pn.Forward(Tensor.Create(Check.Arr<T>(x), Array.ConvertAll(Shape(n, c, s, cl), d => (nint)d)));
                    var dx = pn.Backward(Tensor.Create(Check.Arr<T>(dy), y.Lengths));
                    Check.Close(ey, Guard.Span(y), tol, $"y {at}");
                    Check.Close(edx, Guard.Span(dx), tol, $"dx {at}");
                    Check.Close(edw, Guard.Span(pn.WeightGrad!), tol, $"dWeight {at}");
                    Check.Close(edb, Guard.Span(pn.BiasGrad!), tol, $"dBias {at}");
                    Check.Close(reference.Phi, Guard.Span(pn.RunningPhi), tol, $"running_phi {at}");
                    Check.Close(reference.EmaGz, Guard.Span(pn.EmaGz), tol, $"ema_gz {at}");
                    Assert.Equal(reference.Iters, pn.Iterations);
                    Assert.Equal(RunningStatsUpdate.Updated, pn.LastRunningStatsUpdate);
                }
            }
        });
    }

    [Fact]
    public void Defaults_are_the_official_modules()
    {
        var pn = new PowerNorm<float>(4);
        Assert.Equal(1e-5, pn.Eps);
        Assert.Equal(0.9, pn.AlphaForward);
        Assert.Equal(0.9, pn.AlphaBackward);
        Assert.Equal(10000, pn.WarmupIters);
        Assert.True(pn.Affine);
        Assert.Equal(["weight", "bias", "running_phi", "ema_gz"], pn.Tensors.Select(t => t.Name));
        Assert.Equal([1, 4, 1, 1], pn.Tensors[2].Shape);
        Assert.All(Guard.Span(pn.RunningPhi).ToArray(), v => Assert.Equal(1f, v));
        Assert.All(Guard.Span(pn.EmaGz).ToArray(), v => Assert.Equal(0f, v));
        Assert.Equal(0, pn.Iterations);
    }

    // ---------------- gradients (double) ----------------

    // A fresh layer with pn's state, so each finite-difference evaluation starts from the same step.
    private static PowerNorm<double> Clone(PowerNorm<double> pn, double[]? weight = null, double[]? bias = null)
    {
        var copy = new PowerNorm<double>(pn.NumFeatures, pn.Eps, pn.AlphaForward, pn.AlphaBackward, pn.WarmupIters, pn.Affine, pn.ChannelsLast);
        foreach (var (from, to) in pn.Tensors.Zip(copy.Tensors)) from.Data.AsSpan().CopyTo(to.Data);
        copy.BatchesTracked = pn.BatchesTracked;
        weight?.CopyTo(Guard.Span(copy.Weight!));
        bias?.CopyTo(Guard.Span(copy.Bias!));
        return copy;
    }

    private static double Loss(PowerNorm<double> state, double[] x, int[] shape, double[] dy, double[]? w = null, double[]? b = null, bool eval = false)
    {
        var pn = Clone(state, w, b);
        if (eval) pn.Eval();
        var y = new double[x.Length];
        pn.Forward(x, shape, y);
        return Oracle.Dot(y, dy);
    }

    private static double[] Psi2(double[] x, int n, int c, int s, bool cl)
    {
        var psi = new double[c];
        for (int ch = 0; ch < c; ch++)
        {
            for (int i = 0; i < n; i++) for (int k = 0; k < s; k++) psi[ch] += x[Oracle.At(i, ch, k, c, s, cl)] * x[Oracle.At(i, ch, k, c, s, cl)];
            psi[ch] /= n * s;
        }
        return psi;
    }

    [Theory]
    [InlineData(0, false)]   // warm-up: z from the batch's psi²
    [InlineData(5, false)]   // after warm-up: z from phi
    [InlineData(5, true)]
    public void Weight_and_bias_gradients_are_exact(int iterationsDone, bool cl)
    {
        const int n = 3, c = 2, s = 4;
        int[] shape = Shape(n, c, s, cl);
        var x = Data.Normal(11, n * c * s, 0.5, 1.5);
        var dy = Data.Normal(12, x.Length);
        var w = Data.Normal(13, c, 1, 0.5);
        var b = Data.Normal(14, c);
        var state = Trainable<double>(c, w, b, warmup: 3, cl: cl);
        Data.Normal(15, c, 2, 0.3).CopyTo(Guard.Span(state.RunningPhi));
        Data.Normal(16, c).CopyTo(Guard.Span(state.EmaGz));
        state.BatchesTracked = iterationsDone;
        var pn = Clone(state);
        pn.Forward(x, shape, new double[x.Length]);
        pn.Backward(dy, x, shape, new double[x.Length]);
        Check.Close(Oracle.NumericalGradient(v => Loss(state, x, shape, dy, w: v), w), Guard.Span(pn.WeightGrad!), Tol.GradCheck, "dWeight");
        Check.Close(Oracle.NumericalGradient(v => Loss(state, x, shape, dy, b: v), b), Guard.Span(pn.BiasGrad!), Tol.GradCheck, "dBias");
    }

    [Fact]
    public void In_warmup_with_alpha_backward_1_dx_treats_psi_as_a_constant_and_misses_the_exact_term()
    {
        const int n = 4, c = 3, s = 5;
        int[] shape = Shape(n, c, s, false);
        var x = Data.Normal(21, n * c * s, 0.4, 1.3);
        var dy = Data.Normal(22, x.Length);
        var w = Data.Normal(23, c, 1, 0.5);
        var b = Data.Normal(24, c);
        var state = Trainable<double>(c, w, b, warmup: 10, alphaBkw: 1);
        var pn = Clone(state);
        pn.Forward(x, shape, new double[x.Length]);
        var dx = new double[x.Length];
        pn.Backward(dy, x, shape, dx);
        var psi2 = Psi2(x, n, c, s, false);

        // dx is the exact gradient of y = w * x / sqrt(psi² + eps) + b with psi² frozen at this
        // batch's value: the eval forward with running_phi set to psi².
        var frozen = Clone(state);
        psi2.CopyTo(Guard.Span(frozen.RunningPhi));
        var dxFrozen = Oracle.NumericalGradient(v => Loss(frozen, v, shape, dy, eval: true), x);
        Check.Close(dxFrozen, dx, Tol.GradCheck, "dx vs psi² frozen");

        // The exact gradient of the batch-statistics forward differs from dx by the term the
        // approximation drops: exact = dx - z * mean(g * z) / sqrt(psi² + eps), g = dy * w.
        var exact = Oracle.NumericalGradient(v => Loss(state, v, shape, dy), x);
        var expected = new double[x.Length];
        double largest = 0;
        for (int ch = 0; ch < c; ch++)
        {
            double rs = 1 / Math.Sqrt(psi2[ch] + 1e-5), gz = 0;
            for (int i = 0; i < n; i++) for (int k = 0; k < s; k++) { int at = Oracle.At(i, ch, k, c, s, false); gz += dy[at] * w[ch] * x[at] * rs; }
            gz /= n * s;
            for (int i = 0; i < n; i++)
                for (int k = 0; k < s; k++)
                {
                    int at = Oracle.At(i, ch, k, c, s, false);
                    expected[at] = dx[at] - x[at] * rs * gz * rs;
                    largest = Math.Max(largest, Math.Abs(exact[at] - dx[at]));
                }
        }
        Check.Close(expected, exact, Tol.GradCheck, "exact gradient vs dx minus the dropped term");
        Assert.True(largest > 1e-2, $"dx should not be the exact gradient of the warm-up forward (largest difference {largest:E3})");
    }

    [Theory]
    [InlineData(0.9)]
    [InlineData(1.0)]
    [InlineData(0.0)]
    public void After_warmup_dx_relates_to_the_exact_gradient_of_the_phi_forward(double alphaBkw)
    {
        const int n = 4, c = 3, s = 5;
        int[] shape = Shape(n, c, s, false);
        var x = Data.Normal(31, n * c * s, -0.3, 1.7);
        var dy = Data.Normal(32, x.Length);
        var w = Data.Normal(33, c, 1, 0.5);
        var b = Data.Normal(34, c);
        var state = Trainable<double>(c, w, b, warmup: 3, alphaBkw: alphaBkw);
        var phi = Data.Normal(35, c, 2, 0.4);
        var g0 = Data.Normal(36, c, 0, 0.5);
        phi.CopyTo(Guard.Span(state.RunningPhi));
        g0.CopyTo(Guard.Span(state.EmaGz));
        state.BatchesTracked = 3;                       // the next forward is iteration 4 > warmup
        var pn = Clone(state);
        pn.Forward(x, shape, new double[x.Length]);
        var dx = new double[x.Length];
        pn.Backward(dy, x, shape, dx);
        var psi2 = Psi2(x, n, c, s, false);

        // The forward is y = w * x / sqrt(phi + eps) + b with phi from before the step, so its exact
        // gradient is g / sqrt(phi + eps); the approximate dx = (g - (1 - a_b) G z) / sqrt(psi² + eps).
        // Hence exact = (dx * sqrt(psi² + eps) + (1 - a_b) * G * z) / sqrt(phi + eps).
        var exact = Oracle.NumericalGradient(v => Loss(state, v, shape, dy), x);
        var expected = new double[x.Length];
        double largest = 0;
        for (int ch = 0; ch < c; ch++)
            for (int i = 0; i < n; i++)
                for (int k = 0; k < s; k++)
                {
                    int at = Oracle.At(i, ch, k, c, s, false);
                    double z = x[at] / Math.Sqrt(phi[ch] + 1e-5);
                    expected[at] = (dx[at] * Math.Sqrt(psi2[ch] + 1e-5) + (1 - alphaBkw) * g0[ch] * z) / Math.Sqrt(phi[ch] + 1e-5);
                    largest = Math.Max(largest, Math.Abs(exact[at] - dx[at]));
                }
        Check.Close(expected, exact, Tol.GradCheck, "exact gradient vs the corrected dx");
        Assert.True(largest > 1e-2, $"dx uses the batch's psi², not phi: it should differ from the exact gradient (largest difference {largest:E3})");
    }

    // ---------------- modes, layouts, state ----------------

    [Fact]
    public void Eval_uses_running_phi_and_changes_no_state()
    {
        const int n = 4, c = 3, s = 6;
        var w = Data.RoundToFloat(Data.Normal(41, c, 1, 0.4));
        var b = Data.RoundToFloat(Data.Normal(42, c));
        One<float>(Tol.F32);
        One<double>(Tol.F64);
        void One<T>(Tol tol) where T : unmanaged, IFloatingPointIeee754<T>
        {
            var pn = Trainable<T>(c, w, b, warmup: 1);
            int[] shape = Shape(n, c, s, false);
            for (int k = 0; k < 3; k++)
            {
                var xt = Check.Arr<T>(Batch(k, n * c * s));
                pn.Forward(xt, shape, new T[xt.Length]);
                pn.Backward(Check.Arr<T>(Grad(k, xt.Length)), xt, shape, new T[xt.Length]);
            }
            pn.Eval();
            pn.ZeroGrad();
            var before = Snapshot(pn);
            var phi = D<T>(Guard.Span(pn.RunningPhi));
            var x = Batch(7, n * c * s);
            var dy = Grad(7, x.Length);
            var y = new T[x.Length];
            var dx = new T[x.Length];
            pn.Forward(Check.Arr<T>(x), shape, y);
            pn.Backward(Check.Arr<T>(dy), Check.Arr<T>(x), shape, dx);
            double[] ey = new double[x.Length], edx = new double[x.Length], edw = new double[c], edb = new double[c];
            for (int ch = 0; ch < c; ch++)
                for (int i = 0; i < n; i++)
                    for (int k = 0; k < s; k++)
                    {
                        int at = Oracle.At(i, ch, k, c, s, false);
                        double rs = 1 / Math.Sqrt(phi[ch] + 1e-5);
                        ey[at] = w[ch] * x[at] * rs + b[ch];
                        edx[at] = w[ch] * dy[at] * rs;
                        edw[ch] += dy[at] * x[at] * rs;
                        edb[ch] += dy[at];
                    }
            Check.Close(ey, y, tol, "eval y");
            Check.Close(edx, dx, tol, "eval dx");
            Check.Close(edw, Guard.Span(pn.WeightGrad!), tol, "eval dWeight");
            Check.Close(edb, Guard.Span(pn.BiasGrad!), tol, "eval dBias");
            var after = Snapshot(pn);
            for (int i = 0; i < 4; i++) Assert.Equal(before[i], after[i]);     // weight, bias, running_phi, ema_gz
            Assert.Equal(before[^1], after[^1]);                                // iters
        }
    }

    /// <summary>Every tensor's values, every gradient, then [Iterations], as doubles.</summary>
    internal static double[][] Snapshot<T>(PowerNorm<T> pn) where T : unmanaged, IFloatingPointIeee754<T> =>
        [.. pn.Tensors.Select(t => D<T>(t.Data)), .. pn.Tensors.Where(t => t.IsParameter).Select(t => D<T>(t.GradData)), [pn.Iterations]];

    [Fact]
    public void Channels_last_matches_channels_first()
    {
        const int n = 3, c = 5, s = 7;
        var w = Data.RoundToFloat(Data.Normal(51, c, 1, 0.4));
        var b = Data.RoundToFloat(Data.Normal(52, c));
        One<float>(Tol.F32);
        One<double>(Tol.F64);
        void One<T>(Tol tol) where T : unmanaged, IFloatingPointIeee754<T>
        {
            var first = Trainable<T>(c, w, b, warmup: 2);
            var last = Trainable<T>(c, w, b, warmup: 2, cl: true);
            for (int k = 0; k < 4; k++)
            {
                var x = Batch(k, n * c * s);
                var dy = Grad(k, x.Length);
                double[] xl = ToLast(x), dyl = ToLast(dy);
                first.ZeroGrad(); last.ZeroGrad();
                T[] y1 = new T[x.Length], y2 = new T[x.Length], dx1 = new T[x.Length], dx2 = new T[x.Length];
                first.Forward(Check.Arr<T>(x), [n, c, s], y1);
                first.Backward(Check.Arr<T>(dy), Check.Arr<T>(x), [n, c, s], dx1);
                last.Forward(Check.Arr<T>(xl), [n, s, c], y2);
                last.Backward(Check.Arr<T>(dyl), Check.Arr<T>(xl), [n, s, c], dx2);
                Check.Close(ToLast(D<T>(y1)), y2, tol, $"y step {k + 1}");
                Check.Close(ToLast(D<T>(dx1)), dx2, tol, $"dx step {k + 1}");
                var a = Snapshot(first); var z = Snapshot(last);
                for (int i = 0; i < a.Length; i++) Check.Close(a[i], z[i], tol, $"state {i} step {k + 1}");
            }
        }

        static double[] ToLast(double[] v)
        {
            var r = new double[v.Length];
            for (int i = 0; i < n; i++) for (int ch = 0; ch < c; ch++) for (int k = 0; k < s; k++)
                r[Oracle.At(i, ch, k, c, s, true)] = v[Oracle.At(i, ch, k, c, s, false)];
            return r;
        }
    }

    [Fact]
    public void Backward_changes_ema_gz_so_a_second_call_is_not_idempotent()
    {
        const int n = 4, c = 3, s = 5;
        var w = Data.Normal(61, c, 1, 0.4);
        var b = Data.Normal(62, c);
        var reference = new Reference(c, warmup: 2);
        var pn = Trainable<double>(c, w, b, warmup: 2);
        int[] shape = Shape(n, c, s, false);
        var x = Batch(0, n * c * s);
        var dy = Grad(0, x.Length);
        reference.Forward(x, n, s, false, w, b);
        pn.Forward(x, shape, new double[x.Length]);
        var dx1 = new double[x.Length];
        var dx2 = new double[x.Length];
        reference.Backward(dy, w);
        pn.Backward(dy, x, shape, dx1);
        var g1 = Guard.Span(pn.EmaGz).ToArray();
        var (edx2, _, _) = reference.Backward(dy, w);
        pn.Backward(dy, x, shape, dx2);
        Assert.NotEqual(g1, Guard.Span(pn.EmaGz).ToArray());
        Check.Close(reference.EmaGz, Guard.Span(pn.EmaGz), Tol.F64, "ema_gz after two backward calls");
        Check.Close(edx2, dx2, Tol.F64, "second dx");
        Assert.NotEqual(dx1, dx2);
    }

    [Fact]
    public void A_non_finite_batch_leaves_the_running_state_unless_the_guard_is_off()
    {
        const int n = 3, c = 2, s = 4;
        int[] shape = Shape(n, c, s, false);
        var pn = new PowerNorm<float>(c, warmupIters: 2);
        var x = Data.F(Batch(0, n * c * s));
        pn.Forward(x, shape, new float[x.Length]);
        pn.Backward(Data.F(Grad(0, x.Length)), x, shape, new float[x.Length]);
        var before = Snapshot(pn);
        x[5] = float.PositiveInfinity;                       // channel 1 of sample 0
        var y = new float[x.Length];
        pn.Forward(x, shape, y);
        Assert.Equal(RunningStatsUpdate.SkippedNonFinite, pn.LastRunningStatsUpdate);
        Assert.True(float.IsFinite(y[0]), "channel 0 is still normalized");
        pn.Backward(Data.F(Grad(1, x.Length)), x, shape, new float[x.Length]);
        Assert.Equal(RunningStatsUpdate.SkippedNonFinite, pn.LastEmaGzUpdate);
        var after = Snapshot(pn);
        for (int i = 2; i < 4; i++) Assert.Equal(before[i], after[i]);
        Assert.Equal(before[^1], after[^1]);

        pn.GuardRunningStats = false;
        pn.Forward(x, shape, y);
        Assert.Equal(RunningStatsUpdate.Updated, pn.LastRunningStatsUpdate);
        Assert.False(float.IsFinite(Guard.Span(pn.RunningPhi)[1]));
        Assert.Equal(2, pn.Iterations);
    }

    [Fact]
    public void State_round_trips_through_safetensors_under_the_official_names()
    {
        const int n = 5, c = 4, s = 3;
        string path = Path.Combine(Path.GetTempPath(), $"normkit-powernorm-{Guid.NewGuid():N}.safetensors");
        try
        {
            One<float>();
            One<double>();
        }
        finally { File.Delete(path); }

        void One<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            int[] shape = Shape(n, c, s, false);
            var pn = Trainable<T>(c, Data.Normal(71, c, 1, 0.3), Data.Normal(72, c), warmup: 2);
            for (int k = 0; k < 4; k++)
            {
                var x = Check.Arr<T>(Batch(k, n * c * s));
                pn.Forward(x, shape, new T[x.Length]);
                pn.Backward(Check.Arr<T>(Grad(k, x.Length)), x, shape, new T[x.Length]);
            }
            StateDict.Save(path, ("norm", (NormLayer<T>)pn));
            var file = SafeTensors.Read(path);
            Assert.Equal(["norm.bias", "norm.ema_gz", "norm.iters", "norm.running_phi", "norm.weight"], file.Keys.Order(StringComparer.Ordinal));
            Assert.Equal("I64", file["norm.iters"].DType);
            Assert.Equal([1], file["norm.iters"].Shape);
            Assert.Equal([1, c, 1, 1], file["norm.ema_gz"].Shape);

            var loaded = new PowerNorm<T>(c, warmupIters: 2);
            StateDict.Load(path, ("norm", (NormLayer<T>)loaded));
            foreach (var (a, z) in pn.Tensors.Zip(loaded.Tensors)) Check.BitEqual<T>(a.Data, z.Data, a.Name);
            Assert.Equal(4, loaded.Iterations);

            // The next step is the same step in both.
            var x5 = Check.Arr<T>(Batch(5, n * c * s));
            var dy5 = Check.Arr<T>(Grad(5, x5.Length));
            T[] y1 = new T[x5.Length], y2 = new T[x5.Length], d1 = new T[x5.Length], d2 = new T[x5.Length];
            pn.Forward(x5, shape, y1); pn.Backward(dy5, x5, shape, d1);
            loaded.Forward(x5, shape, y2); loaded.Backward(dy5, x5, shape, d2);
            Check.BitEqual<T>(y1, y2, "y");
            Check.BitEqual<T>(d1, d2, "dx");
            Check.BitEqual<T>(Guard.Span(pn.EmaGz), Guard.Span(loaded.EmaGz), "ema_gz");
        }
    }

    // ---------------- validation ----------------

    private static TE Throws<TE>(Action a, string param, params string[] fragments) where TE : ArgumentException
    {
        var e = Assert.Throws<TE>(a);
        Assert.Equal(param, e.ParamName);
        foreach (var f in fragments) Assert.Contains(f, e.Message);
        return e;
    }

    [Fact]
    public void Constructor_arguments_are_checked()
    {
        Throws<ArgumentOutOfRangeException>(() => new PowerNorm<float>(0), "numFeatures", "must be > 0 but was 0");
        Throws<ArgumentOutOfRangeException>(() => new PowerNorm<float>(4, eps: 0), "eps", "> 0 but was 0");
        Throws<ArgumentOutOfRangeException>(() => new PowerNorm<float>(4, eps: double.NaN), "eps", "NaN");
        Throws<ArgumentOutOfRangeException>(() => new PowerNorm<float>(4, alphaForward: 1.5), "alphaForward", "[0, 1]", "1.5");
        Throws<ArgumentOutOfRangeException>(() => new PowerNorm<float>(4, alphaForward: double.NaN), "alphaForward", "NaN");
        Throws<ArgumentOutOfRangeException>(() => new PowerNorm<float>(4, alphaBackward: -0.1), "alphaBackward", "[0, 1]", "-0.1");
        Throws<ArgumentOutOfRangeException>(() => new PowerNorm<float>(4, warmupIters: -1), "warmupIters", ">= 0", "-1");
        Assert.Throws<NotSupportedException>(() => new PowerNorm<Half>(4));
    }

    [Fact]
    public void A_throwing_call_changes_nothing()
    {
        const int n = 3, c = 4, s = 2;
        int[] shape = Shape(n, c, s, false);
        var pn = Trainable<float>(c, Data.Normal(81, c, 1, 0.3), Data.Normal(82, c), warmup: 1);
        var x = Data.F(Batch(0, n * c * s));
        var dy = Data.F(Grad(0, x.Length));
        pn.Forward(x, shape, new float[x.Length]);
        pn.Backward(dy, x, shape, new float[x.Length]);
        pn.Forward(x, shape, new float[x.Length]);
        var before = Snapshot(pn);

        Throws<ArgumentException>(() => pn.Forward(Tensor.Create(new float[4], [4])), "input", "(N, C, *)", "[4]", "rank 1");
        Throws<ArgumentException>(() => pn.Forward(Tensor.Create(new float[15], [5, 3])), "input", "3 channels", "NumFeatures = 4");
        Throws<ArgumentException>(() => pn.Forward(x, shape, new float[x.Length - 1]), "output", "length 23", "needs 24");
        Throws<ArgumentException>(() => pn.Forward(x, shape, x), "output", "overlaps");
        Throws<ArgumentException>(() => pn.Backward(dy, x, [n, c, s + 1], new float[x.Length]), "shape", "[3, 4, 3]", "[3, 4, 2]");
        Throws<ArgumentException>(() => pn.Backward(dy.AsSpan(1), x, shape, new float[x.Length]), "gradOutput", "length 23");
        Assert.Throws<InvalidOperationException>(() => pn.Backward(Tensor.Create(dy, [n, c, s])));   // the last forward used spans
        Assert.Throws<InvalidOperationException>(() => new PowerNorm<float>(c).Backward(dy, x, shape, new float[x.Length]));

        var after = Snapshot(pn);
        for (int i = 0; i < before.Length; i++) Assert.Equal(before[i], after[i]);
    }
}

/// <summary>PowerNorm's bits do not depend on the thread count, and its span calls allocate nothing.</summary>
[Collection("Threads")]
public class PowerNormThreadTests
{
    private static (double[][] State, float[] Y, float[] Dx) Run(int threads, int[] shape, bool cl)
    {
        double[][] state = [];
        float[] y = [], dx = [];
        Paths.WithThreads(threads, () =>
        {
            int c = cl ? shape[^1] : shape[1];
            var pn = PowerNormTests.Trainable<float>(c, Data.Normal(91, c, 1, 0.3), Data.Normal(92, c), warmup: 2, cl: cl);
            int len = shape.Aggregate(1, (a, d) => a * d);
            y = new float[len]; dx = new float[len];
            for (int k = 0; k < 4; k++)
            {
                var x = Data.F(Data.Normal(93 + k, len, 0.2 * k, 1 + 0.3 * k));
                pn.Forward(x, shape, y);
                pn.Backward(Data.F(Data.Normal(97 + k, len)), x, shape, dx);
            }
            state = PowerNormTests.Snapshot(pn);
        });
        return (state, y, dx);
    }

    [Theory]
    [InlineData(new[] { 70, 3, 200 }, false)]
    [InlineData(new[] { 7, 3000, 5 }, true)]
    [InlineData(new[] { 4096, 16 }, false)]
    public void Results_are_bitwise_the_same_on_any_thread_count(int[] shape, bool cl)
    {
        var one = Run(1, shape, cl);
        var four = Run(4, shape, cl);
        Check.BitEqual<float>(one.Y, four.Y, "y");
        Check.BitEqual<float>(one.Dx, four.Dx, "dx");
        for (int i = 0; i < one.State.Length; i++) Check.BitEqual<double>(one.State[i], four.State[i], $"state {i}");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Span_forward_and_backward_allocate_nothing(int threads)
    {
        int[] nchw = [8, 16, 24, 16], tokens = [384, 64];
        var x = Data.F(Data.Normal(1, 8 * 16 * 24 * 16));
        var dy = Data.F(Data.Normal(2, x.Length));
        var y = new float[x.Length];
        var dx = new float[x.Length];
        var pn = new PowerNorm<float>(16, warmupIters: 50);
        var pnTokens = new PowerNorm<float>(64, warmupIters: 50);
        var pnLast = new PowerNorm<float>(16, warmupIters: 50, channelsLast: true);
        Paths.WithThreads(threads, () =>
        {
            Assert.Equal(0, AllocationTests.Allocated(() => pn.Forward(x, nchw, y)));
            Assert.Equal(0, AllocationTests.Allocated(() => pn.Backward(dy, x, nchw, dx)));
            Assert.Equal(0, AllocationTests.Allocated(() => pnTokens.Forward(x.AsSpan(0, 384 * 64), tokens, y.AsSpan(0, 384 * 64))));
            Assert.Equal(0, AllocationTests.Allocated(() => pnTokens.Backward(dy.AsSpan(0, 384 * 64), x.AsSpan(0, 384 * 64), tokens, dx.AsSpan(0, 384 * 64))));
            Assert.Equal(0, AllocationTests.Allocated(() => pnLast.Forward(x, [8, 24, 16, 16], y)));
            Assert.Equal(0, AllocationTests.Allocated(() => pnLast.Backward(dy, x, [8, 24, 16, 16], dx)));
            pn.Eval();
            Assert.Equal(0, AllocationTests.Allocated(() => pn.Forward(x, nchw, y)));
            Assert.Equal(0, AllocationTests.Allocated(() => pn.Backward(dy, x, nchw, dx)));
            pn.Train();
        });
    }
}
