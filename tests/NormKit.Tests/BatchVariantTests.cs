using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Layers;
using NormKit.Serialization;
using NormKit.Tests.Reference;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>
/// An independent double reference for Batch Renorm and Ghost BatchNorm, written from
/// REFERENCE-LAB2 sections 1 and 2 with plain loops: it shares no code with the library.
/// Both are BatchNorm over a range of samples [n0, n1) of one channel, with r and d applied to
/// x_hat (r = 1, d = 0 for Ghost BatchNorm).
/// </summary>
internal static class BatchVariantReference
{
    public static (double Mean, double Var) Stats(double[] x, int n0, int n1, int c, int C, int S, bool cl)
    {
        double s = 0, m = (double)(n1 - n0) * S;
        for (int n = n0; n < n1; n++) for (int k = 0; k < S; k++) s += x[Oracle.At(n, c, k, C, S, cl)];
        double mu = s / m, q = 0;
        for (int n = n0; n < n1; n++) for (int k = 0; k < S; k++) { double e = x[Oracle.At(n, c, k, C, S, cl)] - mu; q += e * e; }
        return (mu, q / m);
    }

    /// <summary>y = w * ((x - mean) / sqrt(var + eps) * r + d) + b over samples [n0, n1), batch statistics of that range.</summary>
    public static void Normalize(double[] x, double[] y, int n0, int n1, int C, int S, bool cl, double[]? w, double[]? b, double eps, double[]? r = null, double[]? d = null)
    {
        for (int c = 0; c < C; c++)
        {
            var (mu, var) = Stats(x, n0, n1, c, C, S, cl);
            double sd = Math.Sqrt(var + eps);
            for (int n = n0; n < n1; n++)
                for (int k = 0; k < S; k++)
                {
                    int i = Oracle.At(n, c, k, C, S, cl);
                    y[i] = (w?[c] ?? 1) * ((x[i] - mu) / sd * (r?[c] ?? 1) + (d?[c] ?? 0)) + (b?[c] ?? 0);
                }
        }
    }

    /// <summary>
    /// The backward of <see cref="Normalize"/> with r and d constants: dx = w r rstd (dy - mean(dy) - x_hat mean(dy x_hat)),
    /// dW += sum dy (x_hat r + d), dB += sum dy.
    /// </summary>
    public static void Backward(double[] dy, double[] x, double[] dx, double[] dw, double[] db, int n0, int n1, int C, int S, bool cl,
        double[]? w, double eps, double[]? r = null, double[]? d = null)
    {
        double m = (double)(n1 - n0) * S;
        for (int c = 0; c < C; c++)
        {
            var (mu, var) = Stats(x, n0, n1, c, C, S, cl);
            double rs = 1 / Math.Sqrt(var + eps), rc = r?[c] ?? 1, dc = d?[c] ?? 0, sdy = 0, sdyx = 0;
            for (int n = n0; n < n1; n++)
                for (int k = 0; k < S; k++)
                {
                    int i = Oracle.At(n, c, k, C, S, cl);
                    double xh = (x[i] - mu) * rs;
                    sdy += dy[i]; sdyx += dy[i] * xh;
                    dw[c] += dy[i] * (xh * rc + dc);
                    db[c] += dy[i];
                }
            for (int n = n0; n < n1; n++)
                for (int k = 0; k < S; k++)
                {
                    int i = Oracle.At(n, c, k, C, S, cl);
                    double xh = (x[i] - mu) * rs;
                    dx[i] = (w?[c] ?? 1) * rc * rs * (dy[i] - sdy / m - xh * sdyx / m);
                }
        }
    }

    /// <summary>Batch Renorm's r and d from the whole batch and the moving mean and sigma (before their update).</summary>
    public static (double[] R, double[] D) RenormCorrection(double[] x, int N, int C, int S, bool cl, double eps, double[] mu, double[] sigma, double rMax, double dMax)
    {
        var r = new double[C]; var d = new double[C];
        for (int c = 0; c < C; c++)
        {
            var (m, v) = Stats(x, 0, N, c, C, S, cl);
            double sb = Math.Sqrt(v + eps);
            r[c] = Math.Min(Math.Max(sb / sigma[c], 1 / rMax), rMax);
            d[c] = Math.Min(Math.Max((m - mu[c]) / sigma[c], -dMax), dMax);
        }
        return (r, d);
    }

    /// <summary>The paper's update: mu += a (mu_B - mu), sigma += a (sigma_B - sigma), in place.</summary>
    public static void RenormUpdate(double[] x, int N, int C, int S, bool cl, double eps, double momentum, double[] mu, double[] sigma)
    {
        for (int c = 0; c < C; c++)
        {
            var (m, v) = Stats(x, 0, N, c, C, S, cl);
            mu[c] += momentum * (m - mu[c]);
            sigma[c] += momentum * (Math.Sqrt(v + eps) - sigma[c]);
        }
    }

    /// <summary>Ghost BatchNorm's running inputs: the average over contiguous ghosts of their means and unbiased variances.</summary>
    public static (double[] Mean, double[] UnbiasedVar) GhostAverages(double[] x, int N, int C, int S, bool cl, int v)
    {
        int g = N / v;
        var mean = new double[C]; var var = new double[C];
        for (int c = 0; c < C; c++)
            for (int k = 0; k < g; k++)
            {
                var (m, q) = Stats(x, k * v, (k + 1) * v, c, C, S, cl);
                mean[c] += m / g;
                var[c] += q * (v * S) / (v * S - 1.0) / g;
            }
        return (mean, var);
    }
}

[Trait("Category", "Kernel")]
public class BatchRenormTests
{
    private static int[] Shape(int n, int c, int s, bool cl) => cl ? [n, s, c] : [n, c, s];

    public static TheoryData<int, int, int, bool> Shapes()
    {
        var d = new TheoryData<int, int, int, bool>();
        foreach (bool cl in new[] { false, true })
        {
            d.Add(4, 3, 5, cl);
            d.Add(5, 17, 9, cl);
            d.Add(16, 9, 1, cl);
            d.Add(2, 4, 1100, cl);   // planes over 4 KiB in float: BatchNorm would fuse; renorm runs two passes
        }
        return d;
    }

    // Moving averages far enough from the batch that some r and d are clipped at rMax 1.5, dMax 0.5.
    // Channel 0 is always clipped (r and d), channel 1 never (the batches have mean ~1.5, sigma ~2).
    private static (double[] Mu, double[] Sigma) Moving(int c)
    {
        var mu = Data.RoundToFloat(Data.Normal(7, c, 1, 1.5));
        var sigma = Data.RoundToFloat(Data.Normal(8, c).Select(v => 0.5 + 2 * v * v).ToArray());
        (mu[0], sigma[0], mu[1], sigma[1]) = (10, 0.25, 1.5, 2);
        return (mu, sigma);
    }

    private static BatchRenorm<T> Layer<T>(int c, bool cl, double[] w, double[] b, double[] mu, double[] sigma, double rMax = 1.5, double dMax = 0.5)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var layer = new BatchRenorm<T>(c, rMax: rMax, dMax: dMax, channelsLast: cl);
        Check.Arr<T>(w).CopyTo(Guard.Span(layer.Weight!)); Check.Arr<T>(b).CopyTo(Guard.Span(layer.Bias!));
        Check.Arr<T>(mu).CopyTo(Guard.Span(layer.RunningMean)); Check.Arr<T>(sigma).CopyTo(Guard.Span(layer.RunningStd));
        return layer;
    }

    [Theory, MemberData(nameof(Shapes))]
    public void Training_forward_backward_and_update_match_reference(int n, int c, int s, bool cl)
    {
        var x = Data.RoundToFloat(Data.Normal(n + c + s, n * c * s, 1.5, 2));
        var w = Data.RoundToFloat(Data.Normal(c, c, 1, 0.4));
        var b = Data.RoundToFloat(Data.Normal(c + 1, c));
        var dy = Data.RoundToFloat(Data.Normal(s + 3, n * c * s));
        var (mu, sigma) = Moving(c);
        var (er, ed) = BatchVariantReference.RenormCorrection(x, n, c, s, cl, 1e-5, mu, sigma, 1.5, 0.5);
        Assert.True(er[0] == 1.5 && ed[0] == -0.5, "channel 0 must exercise the clip");
        Assert.True(er[1] > 1 / 1.5 && er[1] < 1.5 && Math.Abs(ed[1]) < 0.5, "channel 1 must not be clipped");
        var ey = new double[x.Length];
        BatchVariantReference.Normalize(x, ey, 0, n, c, s, cl, w, b, 1e-5, er, ed);
        var (edx, edw, edb) = (new double[x.Length], new double[c], new double[c]);
        BatchVariantReference.Backward(dy, x, edx, edw, edb, 0, n, c, s, cl, w, 1e-5, er, ed);
        var (emu, esigma) = ((double[])mu.Clone(), (double[])sigma.Clone());
        BatchVariantReference.RenormUpdate(x, n, c, s, cl, 1e-5, 0.01, emu, esigma);
        Paths.ForEach(p =>
        {
            One<float>(Tol.F32);
            One<double>(Tol.F64);
            void One<T>(Tol tol) where T : unmanaged, IFloatingPointIeee754<T>
            {
                var layer = Layer<T>(c, cl, w, b, mu, sigma);
                var y = new T[x.Length];
                layer.Forward(Check.Arr<T>(x), Shape(n, c, s, cl), y);
                Check.Close(ey, y, tol, $"{typeof(T).Name} y ({p})");
                Check.Close(er, layer.LastR, Tol.F64, $"{typeof(T).Name} r ({p})");
                Check.Close(ed, layer.LastD, Tol.F64, $"{typeof(T).Name} d ({p})");
                Check.Close(emu, Guard.Span(layer.RunningMean), tol, $"{typeof(T).Name} running_mean ({p})");
                Check.Close(esigma, Guard.Span(layer.RunningStd), tol, $"{typeof(T).Name} running_std ({p})");
                Assert.Equal(1, layer.NumBatchesTracked);
                var dx = new T[x.Length];
                layer.Backward(Check.Arr<T>(dy), Check.Arr<T>(x), Shape(n, c, s, cl), dx);
                Check.Close(edx, dx, tol, $"{typeof(T).Name} dx ({p})");
                Check.Close(edw, Guard.Span(layer.WeightGrad!), tol, $"{typeof(T).Name} dWeight ({p})");
                Check.Close(edb, Guard.Span(layer.BiasGrad!), tol, $"{typeof(T).Name} dBias ({p})");
            }
        });
    }

    [Theory]
    [InlineData(3, 2, 4, false)]
    [InlineData(4, 3, 1, false)]
    [InlineData(2, 3, 5, true)]
    public void Backward_agrees_with_finite_differences_with_r_and_d_held(int n, int c, int s, bool cl)
    {
        var x = Data.Normal(21, n * c * s, 0.5, 1.5);
        var w = Data.Normal(22, c, 1, 0.5);
        var b = Data.Normal(23, c);
        var dy = Data.Normal(26, n * c * s);
        var (mu, sigma) = Moving(c);
        // r and d are stop_gradient: computed once from the unperturbed x, then held fixed in the
        // loss, so the finite differences see only the paths through mu_B and sigma_B (the
        // library's backward). Letting them move would add d r/dx and d d/dx, which the paper drops.
        var (r, d) = BatchVariantReference.RenormCorrection(x, n, c, s, cl, 1e-5, mu, sigma, 1.5, 0.5);
        double Loss(double[] xx, double[] ww, double[] bb)
        {
            var y = new double[xx.Length];
            BatchVariantReference.Normalize(xx, y, 0, n, c, s, cl, ww, bb, 1e-5, r, d);
            return Oracle.Dot(y, dy);
        }
        var layer = Layer<double>(c, cl, w, b, mu, sigma);
        layer.Forward(x, Shape(n, c, s, cl), new double[x.Length]);
        Check.Close(r, layer.LastR, Tol.F64, "r");
        var dx = new double[x.Length];
        layer.Backward(dy, x, Shape(n, c, s, cl), dx);
        Check.Close(Oracle.NumericalGradient(v => Loss(v, w, b), x), dx, Tol.GradCheck, "dx");
        Check.Close(Oracle.NumericalGradient(v => Loss(x, v, b), w), Guard.Span(layer.WeightGrad!), Tol.GradCheck, "dWeight");
        Check.Close(Oracle.NumericalGradient(v => Loss(x, w, v), b), Guard.Span(layer.BiasGrad!), Tol.GradCheck, "dBias");
    }

    [Fact]
    public void R_and_d_are_clipped_when_the_moving_averages_are_far_off()
    {
        const int n = 6, c = 3, s = 4;
        var x = Data.Normal(31, n * c * s, 1.5, 2);
        // Channel 0 near the batch (no clip), channel 1 far above it, channel 2 with a tiny sigma.
        var layer = new BatchRenorm<double>(c, rMax: 2, dMax: 0.5);
        new double[] { 1.4, 100, 0 }.CopyTo(Guard.Span(layer.RunningMean));
        new double[] { 1.6, 100, 0.01 }.CopyTo(Guard.Span(layer.RunningStd));
        layer.Forward(x, [n, c, s], new double[x.Length]);
        Assert.InRange(layer.LastR[0], 1 / 2.0 + 1e-3, 2 - 1e-3);
        Assert.InRange(layer.LastD[0], -0.5 + 1e-3, 0.5 - 1e-3);
        Assert.Equal(0.5, layer.LastR[1]);    // sigma_B / 100 clipped to 1 / rMax
        Assert.Equal(-0.5, layer.LastD[1]);   // (mu_B - 100) / 100 ~ -1 clipped to -dMax
        Assert.Equal(2.0, layer.LastR[2]);    // sigma_B / 0.01 clipped to rMax
        Assert.Equal(0.5, layer.LastD[2]);
        // Relaxing the bounds (the paper's schedule) lets the same batch through further.
        layer.RMax = 300; layer.DMax = 1000;
        new double[] { 1.4, 100, 0 }.CopyTo(Guard.Span(layer.RunningMean));
        new double[] { 1.6, 100, 0.01 }.CopyTo(Guard.Span(layer.RunningStd));
        layer.Forward(x, [n, c, s], new double[x.Length]);
        var (r, d) = BatchVariantReference.RenormCorrection(x, n, c, s, false, 1e-5, [1.4, 100, 0], [1.6, 100, 0.01], 300, 1000);
        Assert.True(r[1] > 1 / 300.0 && r[2] < 300 && d[1] > -1000, "the wider bounds do not clip");
        Check.Close(r, layer.LastR, Tol.F64, "r");
        Check.Close(d, layer.LastD, Tol.F64, "d");
    }

    [Fact]
    public void Moving_averages_follow_the_paper_over_three_steps()
    {
        const int n = 4, c = 3, s = 5;
        var layer = new BatchRenorm<double>(c, momentum: 0.3, rMax: 1.2, dMax: 0.4);
        double[] mu = [0, 0, 0], sigma = [1, 1, 1];
        for (int step = 0; step < 3; step++)
        {
            var x = Data.Normal(40 + step, n * c * s, step - 1, 1 + step);
            // r and d come from the averages BEFORE this step's update.
            var (r, d) = BatchVariantReference.RenormCorrection(x, n, c, s, false, 1e-5, mu, sigma, 1.2, 0.4);
            BatchVariantReference.RenormUpdate(x, n, c, s, false, 1e-5, 0.3, mu, sigma);
            var y = layer.Forward(Tensor.Create(x, [n, c, s]));
            Check.Close(r, layer.LastR, Tol.F64, $"r, step {step}");
            Check.Close(d, layer.LastD, Tol.F64, $"d, step {step}");
            Check.Close(mu, Guard.Span(layer.RunningMean), Tol.F64, $"running_mean, step {step}");
            Check.Close(sigma, Guard.Span(layer.RunningStd), Tol.F64, $"running_std, step {step}");
            var ey = new double[x.Length];
            BatchVariantReference.Normalize(x, ey, 0, n, c, s, false, null, null, 1e-5, r, d);
            Check.Close(ey, Guard.Span(y), Tol.F64, $"y, step {step}");
        }
        Assert.Equal(3, layer.NumBatchesTracked);
        Assert.Equal(RunningStatsUpdate.Updated, layer.LastRunningStatsUpdate);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Eval_divides_by_the_moving_sigma_without_adding_eps(bool cl)
    {
        const int n = 3, c = 5, s = 6;
        var (mu, sigma) = Moving(c);
        sigma[0] = 1e-3;   // adding eps = 1e-5 again would more than triple this channel's sigma
        var w = Data.RoundToFloat(Data.Normal(53, c, 1, 0.3));
        var b = Data.RoundToFloat(Data.Normal(54, c));
        var x = Data.RoundToFloat(Data.Normal(55, n * c * s, 1, 2));
        var dy = Data.RoundToFloat(Data.Normal(56, n * c * s));
        var (ey, edx, edw) = (new double[x.Length], new double[x.Length], new double[c]);
        for (int a = 0; a < n; a++) for (int ch = 0; ch < c; ch++) for (int k = 0; k < s; k++)
                {
                    int i = Oracle.At(a, ch, k, c, s, cl);
                    ey[i] = w[ch] * (x[i] - mu[ch]) / sigma[ch] + b[ch];
                    edx[i] = dy[i] * w[ch] / sigma[ch];
                    edw[ch] += dy[i] * (x[i] - mu[ch]) / sigma[ch];
                }
        Paths.ForEach(p =>
        {
            var layer = Layer<float>(c, cl, w, b, mu, sigma);
            layer.Eval();
            var y = new float[x.Length];
            layer.Forward(Data.F(x), Shape(n, c, s, cl), y);
            Check.Close(ey, y, Tol.F32, $"y ({p})");
            Assert.Equal(0, layer.NumBatchesTracked);
            Check.Close(mu, Guard.Span(layer.RunningMean), Tol.F64, "running_mean unchanged");
            var dx = new float[x.Length];
            layer.Backward(Data.F(dy), Data.F(x), Shape(n, c, s, cl), dx);
            Check.Close(edx, dx, Tol.F32, $"dx ({p})");
            Check.Close(edw, Guard.Span(layer.WeightGrad!), Tol.F32, $"dWeight ({p})");
        });
    }

    public static TheoryData<int, int, int, bool> BatchNormShapes() => new()
    {
        { 4, 3, 5, false }, { 4, 3, 5, true }, { 16, 9, 1, false }, { 2, 4, 1100, false }, { 2, 4, 1100, true },
    };

    [Theory, MemberData(nameof(BatchNormShapes))]
    public void With_rMax_1_and_dMax_0_it_is_BatchNorm(int n, int c, int s, bool cl)
    {
        One<float>();
        One<double>();
        void One<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var x = Check.Arr<T>(Data.Normal(61, n * c * s, 1.5, 2));
            var dy = Check.Arr<T>(Data.Normal(62, n * c * s));
            var w = Check.Arr<T>(Data.Normal(63, c, 1, 0.4));
            var b = Check.Arr<T>(Data.Normal(64, c));
            // Moving averages far from the batch: with the clip closed they must not matter.
            var (mu, sigma) = Moving(c);
            var brn = new BatchRenorm<T>(c, momentum: 0.1, rMax: 1, dMax: 0, channelsLast: cl);
            var bn = new BatchNorm1d<T>(c, momentum: 0.1, channelsLast: cl);
            Check.Arr<T>(mu).CopyTo(Guard.Span(brn.RunningMean)); Check.Arr<T>(sigma).CopyTo(Guard.Span(brn.RunningStd));
            Check.Arr<T>(mu).CopyTo(Guard.Span(bn.RunningMean!));
            foreach (var layer in new ChannelNorm<T>[] { brn, bn })
            {
                w.CopyTo(Guard.Span(layer.Weight!)); b.CopyTo(Guard.Span(layer.Bias!));
            }
            int[] shape = Shape(n, c, s, cl);
            var (y1, y2, dx1, dx2) = (new T[x.Length], new T[x.Length], new T[x.Length], new T[x.Length]);
            brn.Forward(x, shape, y1); bn.Forward(x, shape, y2);
            brn.Backward(dy, x, shape, dx1); bn.Backward(dy, x, shape, dx2);
            Assert.All(brn.LastR.ToArray(), r => Assert.Equal(1.0, r));
            Assert.All(brn.LastD.ToArray(), d => Assert.Equal(0.0, Math.Abs(d)));
            string t = typeof(T).Name;
            WithinOneUlp<T>(y2, y1, $"{t} y");
            WithinOneUlp<T>(dx2, dx1, $"{t} dx");
            WithinOneUlp<T>(Guard.Span(bn.WeightGrad!), Guard.Span(brn.WeightGrad!), $"{t} dWeight");
            WithinOneUlp<T>(Guard.Span(bn.BiasGrad!), Guard.Span(brn.BiasGrad!), $"{t} dBias");
            WithinOneUlp<T>(Guard.Span(bn.RunningMean!), Guard.Span(brn.RunningMean), $"{t} running_mean");
        }
    }

    internal static void WithinOneUlp<T>(ReadOnlySpan<T> expected, ReadOnlySpan<T> actual, string what) where T : unmanaged, IFloatingPointIeee754<T>
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (expected[i] != actual[i] && T.BitIncrement(expected[i]) != actual[i] && T.BitDecrement(expected[i]) != actual[i])
                Assert.Fail($"{what}[{i}]: {actual[i]} is more than 1 ulp from {expected[i]}");
    }

    [Fact]
    public void Channels_last_gives_the_same_numbers_as_channels_first()
    {
        const int n = 3, c = 4, s = 6;
        var x = Data.Normal(71, n * c * s, 1, 2);
        var dy = Data.Normal(72, x.Length);
        var (xl, dyl) = (new double[x.Length], new double[x.Length]);
        for (int a = 0; a < n; a++) for (int ch = 0; ch < c; ch++) for (int k = 0; k < s; k++)
                {
                    xl[Oracle.At(a, ch, k, c, s, true)] = x[Oracle.At(a, ch, k, c, s, false)];
                    dyl[Oracle.At(a, ch, k, c, s, true)] = dy[Oracle.At(a, ch, k, c, s, false)];
                }
        var (mu, sigma) = Moving(c);
        var w = Data.Normal(73, c, 1, 0.3); var b = Data.Normal(74, c);
        var first = Layer<double>(c, false, w, b, mu, sigma);
        var last = Layer<double>(c, true, w, b, mu, sigma);
        var (y, yl, dx, dxl) = (new double[x.Length], new double[x.Length], new double[x.Length], new double[x.Length]);
        first.Forward(x, [n, c, s], y); last.Forward(xl, [n, s, c], yl);
        first.Backward(dy, x, [n, c, s], dx); last.Backward(dyl, xl, [n, s, c], dxl);
        for (int a = 0; a < n; a++) for (int ch = 0; ch < c; ch++) for (int k = 0; k < s; k++)
                {
                    Assert.Equal(y[Oracle.At(a, ch, k, c, s, false)], yl[Oracle.At(a, ch, k, c, s, true)], 1e-12);
                    Assert.Equal(dx[Oracle.At(a, ch, k, c, s, false)], dxl[Oracle.At(a, ch, k, c, s, true)], 1e-12);
                }
        Check.Close(first.LastR.ToArray(), last.LastR, new Tol(1e-13, 0), "r");
        Check.Close(first.LastD.ToArray(), last.LastD, new Tol(1e-13, 1e-15), "d");
        Check.Close(Guard.Span(first.RunningStd).ToArray(), Guard.Span(last.RunningStd), new Tol(1e-14, 0), "running_std");
        Check.Close(Guard.Span(first.WeightGrad!).ToArray(), Guard.Span(last.WeightGrad!), new Tol(1e-12, 1e-13), "dWeight");
    }

    [Fact]
    public void State_round_trips_through_safetensors_with_running_std()
    {
        var layer = new BatchRenorm<float>(5);
        Assert.Equal(new[] { "weight", "bias", "running_mean", "running_std" }, layer.Tensors.Select(t => t.Name));
        Data.F(Data.Normal(81, 5, 1, 0.2)).CopyTo(Guard.Span(layer.Weight!));
        for (int k = 0; k < 2; k++) layer.Forward(Tensor.Create(Data.F(Data.Normal(82 + k, 4 * 5 * 3, 2, 3)), [4, 5, 3]));
        string path = Path.Combine(Path.GetTempPath(), $"normkit-brn-{Guid.NewGuid():N}.safetensors");
        try
        {
            StateDict.Save(path, ("bn", (NormLayer<float>)layer));
            Assert.Contains("bn.running_std", SafeTensors.Read(path).Keys);
            var loaded = new BatchRenorm<float>(5);
            StateDict.Load(path, ("bn", (NormLayer<float>)loaded));
            foreach (var (a, b) in layer.Tensors.Zip(loaded.Tensors))
                Check.BitEqual<float>(Guard.Span(a.Value), Guard.Span(b.Value), a.Name);
            Assert.Equal(2, loaded.NumBatchesTracked);
            Assert.NotEqual(1f, Guard.Span(loaded.RunningStd)[0]);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void Hyperparameters_are_checked_and_a_bad_value_leaves_the_layer_as_it_was()
    {
        static void Throws(Action a, string param, params string[] fragments)
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(a);
            Assert.Equal(param, e.ParamName);
            foreach (var f in fragments) Assert.Contains(f, e.Message);
        }
        Throws(() => new BatchRenorm<float>(4, rMax: 0.5), "rMax", ">= 1", "0.5");
        Throws(() => new BatchRenorm<float>(4, rMax: double.PositiveInfinity), "rMax", "finite");
        Throws(() => new BatchRenorm<float>(4, rMax: double.NaN), "rMax", "NaN");
        Throws(() => new BatchRenorm<float>(4, dMax: -1), "dMax", ">= 0", "-1");
        Throws(() => new BatchRenorm<float>(4, dMax: double.PositiveInfinity), "dMax", "finite");
        Throws(() => new BatchRenorm<float>(4, momentum: 1.5), "momentum", "[0, 1]", "1.5");
        Throws(() => new BatchRenorm<float>(0), "numFeatures", "> 0");
        Throws(() => new BatchRenorm<float>(4, eps: 0), "eps");
        var layer = new BatchRenorm<float>(4, rMax: 2, dMax: 1);
        Throws(() => layer.RMax = 0.99, "RMax", ">= 1", "0.99");
        Throws(() => layer.DMax = double.NaN, "DMax", "NaN");
        Assert.Equal(2, layer.RMax);
        Assert.Equal(1, layer.DMax);
        layer.RMax = 1; layer.DMax = 0;
        Assert.Equal((1.0, 0.0), (layer.RMax, layer.DMax));
    }

    [Fact]
    public void A_throwing_call_leaves_the_layer_as_it_was()
    {
        var layer = new BatchRenorm<float>(3, rMax: 1.5, dMax: 0.5);
        var x = Data.F(Data.Normal(91, 2 * 3 * 4, 2, 3));
        var dy = Data.F(Data.Normal(92, x.Length));
        layer.Forward(x, [2, 3, 4], new float[x.Length]);
        var before = (Guard.Span(layer.RunningMean).ToArray(), Guard.Span(layer.RunningStd).ToArray(), layer.NumBatchesTracked,
            layer.LastR.ToArray(), layer.LastD.ToArray());
        var dxBefore = new float[x.Length];
        layer.Backward(dy, x, [2, 3, 4], dxBefore);

        var e = Assert.Throws<ArgumentException>(() => layer.Forward(new float[3], [1, 3], new float[3]));   // one value per channel
        Assert.Contains("more than 1 value per channel", e.Message);
        e = Assert.Throws<ArgumentException>(() => layer.Forward(new float[8], [2, 4], new float[8]));
        Assert.Equal("input", e.ParamName);
        Assert.Contains("4 channels", e.Message);
        Assert.Contains("NumFeatures = 3", e.Message);
        Assert.ThrowsAny<ArgumentException>(() => layer.Forward(x, [2, 3, 4], new float[23]));
        e = Assert.Throws<ArgumentException>(() => layer.Forward(new float[3], [3], new float[3]));
        Assert.Contains("rank 1", e.Message);
        // A moving sigma that is not > 0 is refused in training and eval before anything changes.
        float saved = Guard.Span(layer.RunningStd)[1];
        Guard.Span(layer.RunningStd)[1] = 0;
        e = Assert.Throws<ArgumentException>(() => layer.Forward(x, [2, 3, 4], new float[x.Length]));
        Assert.Contains("runningStd[1] is 0", e.Message);
        Guard.Span(layer.RunningStd)[1] = saved;

        Assert.Equal(before.Item1, Guard.Span(layer.RunningMean).ToArray());
        Assert.Equal(before.Item2, Guard.Span(layer.RunningStd).ToArray());
        Assert.Equal(before.NumBatchesTracked, layer.NumBatchesTracked);
        Assert.Equal(before.Item4, layer.LastR.ToArray());
        Assert.Equal(before.Item5, layer.LastD.ToArray());
        var dxAfter = new float[x.Length];
        layer.ZeroGrad();
        layer.Backward(dy, x, [2, 3, 4], dxAfter);
        Check.BitEqual<float>(dxBefore, dxAfter, "dx after failed forwards");
    }

    [Fact]
    public void Non_finite_batch_leaves_the_moving_averages_under_the_guard()
    {
        var layer = new BatchRenorm<float>(2);
        var y = layer.Forward(Tensor.Create(new float[] { 1, 5, float.NaN, 6, 3, 7 }, [3, 2]));
        Assert.True(float.IsNaN(Guard.Span(y)[0]));
        Assert.False(float.IsNaN(Guard.Span(y)[1]));
        Assert.Equal(RunningStatsUpdate.SkippedNonFinite, layer.LastRunningStatsUpdate);
        Assert.Equal(0, layer.NumBatchesTracked);
        Assert.Equal([0f, 0f], Guard.Span(layer.RunningMean).ToArray());
        Assert.Equal([1f, 1f], Guard.Span(layer.RunningStd).ToArray());
        layer.GuardRunningStats = false;
        layer.Forward(Tensor.Create(new float[] { 1, 5, float.NaN, 6, 3, 7 }, [3, 2]));
        Assert.True(float.IsNaN(Guard.Span(layer.RunningMean)[0]));
    }

    [Fact]
    public void Reset_restores_defaults()
    {
        var layer = new BatchRenorm<double>(3);
        layer.Forward(Tensor.Create(Data.Normal(95, 12, 3, 2), [4, 3]));
        layer.ResetParameters();
        Assert.Equal(0, layer.NumBatchesTracked);
        Assert.All(Guard.Span(layer.RunningMean).ToArray(), v => Assert.Equal(0, v));
        Assert.All(Guard.Span(layer.RunningStd).ToArray(), v => Assert.Equal(1, v));
        Assert.All(layer.LastR.ToArray(), v => Assert.Equal(1, v));
    }
}

[Trait("Category", "Kernel")]
public class GhostBatchNormTests
{
    private static int[] Shape(int n, int c, int s, bool cl) => cl ? [n, s, c] : [n, c, s];

    public static TheoryData<int, int, int, int, bool> Shapes()
    {
        var d = new TheoryData<int, int, int, int, bool>();
        foreach (bool cl in new[] { false, true })
        {
            d.Add(8, 3, 5, 2, cl);
            d.Add(12, 17, 9, 4, cl);
            d.Add(32, 9, 1, 8, cl);
            d.Add(4, 4, 1100, 2, cl);   // BatchNorm's fused per-channel path on each ghost
            d.Add(6, 5, 3, 6, cl);      // one ghost
        }
        return d;
    }

    private static GhostBatchNorm<T> Layer<T>(int c, int v, bool cl, double[] w, double[] b, double? momentum = 0.1)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var layer = new GhostBatchNorm<T>(c, v, momentum: momentum, channelsLast: cl);
        Check.Arr<T>(w).CopyTo(Guard.Span(layer.Weight!)); Check.Arr<T>(b).CopyTo(Guard.Span(layer.Bias!));
        return layer;
    }

    [Theory, MemberData(nameof(Shapes))]
    public void Training_matches_per_ghost_reference(int n, int c, int s, int v, bool cl)
    {
        var x = Data.RoundToFloat(Data.Normal(n + c + s + v, n * c * s, -0.5, 2));
        var w = Data.RoundToFloat(Data.Normal(c, c, 1, 0.4));
        var b = Data.RoundToFloat(Data.Normal(c + 1, c));
        var dy = Data.RoundToFloat(Data.Normal(s + 5, n * c * s));
        var (ey, edx, edw, edb) = (new double[x.Length], new double[x.Length], new double[c], new double[c]);
        for (int g = 0; g < n / v; g++)
        {
            BatchVariantReference.Normalize(x, ey, g * v, (g + 1) * v, c, s, cl, w, b, 1e-5);
            BatchVariantReference.Backward(dy, x, edx, edw, edb, g * v, (g + 1) * v, c, s, cl, w, 1e-5);
        }
        var (am, av) = BatchVariantReference.GhostAverages(x, n, c, s, cl, v);
        var erm = am.Select(m => 0.1 * m).ToArray();
        var erv = av.Select(q => 0.9 + 0.1 * q).ToArray();
        Paths.ForEach(p =>
        {
            One<float>(Tol.F32);
            One<double>(Tol.F64);
            void One<T>(Tol tol) where T : unmanaged, IFloatingPointIeee754<T>
            {
                var layer = Layer<T>(c, v, cl, w, b);
                var y = new T[x.Length];
                layer.Forward(Check.Arr<T>(x), Shape(n, c, s, cl), y);
                Check.Close(ey, y, tol, $"{typeof(T).Name} y ({p})");
                Check.Close(erm, Guard.Span(layer.RunningMean!), tol, $"{typeof(T).Name} running_mean ({p})");
                Check.Close(erv, Guard.Span(layer.RunningVar!), tol, $"{typeof(T).Name} running_var ({p})");
                Assert.Equal(1, layer.NumBatchesTracked);
                var dx = new T[x.Length];
                layer.Backward(Check.Arr<T>(dy), Check.Arr<T>(x), Shape(n, c, s, cl), dx);
                Check.Close(edx, dx, tol, $"{typeof(T).Name} dx ({p})");
                Check.Close(edw, Guard.Span(layer.WeightGrad!), tol, $"{typeof(T).Name} dWeight ({p})");
                Check.Close(edb, Guard.Span(layer.BiasGrad!), tol, $"{typeof(T).Name} dBias ({p})");
            }
        });
    }

    [Fact]
    public void Ghosts_are_contiguous_samples_not_Keras_strided_ones()
    {
        const int n = 4, c = 2, s = 3, v = 2;
        var x = Data.Normal(101, n * c * s, 0, 1);
        for (int i = 0; i < 2 * c * s; i++) x[i] += 10;   // samples 0 and 1 (the first contiguous ghost) are shifted
        var layer = new GhostBatchNorm<double>(c, v);
        var y = new double[x.Length];
        layer.Forward(x, [n, c, s], y);
        var contiguous = new double[x.Length];
        BatchVariantReference.Normalize(x, contiguous, 0, 2, c, s, false, null, null, 1e-5);
        BatchVariantReference.Normalize(x, contiguous, 2, 4, c, s, false, null, null, 1e-5);
        Check.Close(contiguous, y, Tol.F64, "y");
        // Keras's ghosts would be samples {0, 2} and {1, 3}: normalize that order and compare.
        int[] order = [0, 2, 1, 3];
        int block = c * s;
        var xs = new double[x.Length]; var ys = new double[x.Length];
        for (int k = 0; k < n; k++) Array.Copy(x, order[k] * block, xs, k * block, block);
        BatchVariantReference.Normalize(xs, ys, 0, 2, c, s, false, null, null, 1e-5);
        BatchVariantReference.Normalize(xs, ys, 2, 4, c, s, false, null, null, 1e-5);
        double largest = 0;
        for (int i = 0; i < block; i++) largest = Math.Max(largest, Math.Abs(ys[i] - y[i]));   // sample 0 sits first in both orders
        Assert.True(largest > 0.5, $"strided ghosts would differ by {largest} only");
    }

    [Theory]
    [InlineData(4, 2, 3, 2, false)]
    [InlineData(6, 3, 1, 3, false)]
    [InlineData(4, 3, 2, 2, true)]
    public void Backward_agrees_with_finite_differences(int n, int c, int s, int v, bool cl)
    {
        var x = Data.Normal(111, n * c * s, 0.2, 1.3);
        var w = Data.Normal(112, c, 1, 0.5);
        var b = Data.Normal(113, c);
        var dy = Data.Normal(114, n * c * s);
        double Loss(double[] xx, double[] ww, double[] bb)
        {
            var y = new double[xx.Length];
            for (int g = 0; g < n / v; g++) BatchVariantReference.Normalize(xx, y, g * v, (g + 1) * v, c, s, cl, ww, bb, 1e-5);
            return Oracle.Dot(y, dy);
        }
        var layer = Layer<double>(c, v, cl, w, b);
        layer.Forward(x, Shape(n, c, s, cl), new double[x.Length]);
        var dx = new double[x.Length];
        layer.Backward(dy, x, Shape(n, c, s, cl), dx);
        Check.Close(Oracle.NumericalGradient(u => Loss(u, w, b), x), dx, Tol.GradCheck, "dx");
        Check.Close(Oracle.NumericalGradient(u => Loss(x, u, b), w), Guard.Span(layer.WeightGrad!), Tol.GradCheck, "dWeight");
        Check.Close(Oracle.NumericalGradient(u => Loss(x, w, u), b), Guard.Span(layer.BiasGrad!), Tol.GradCheck, "dBias");
    }

    [Theory]
    [InlineData(0.25)]
    [InlineData(null)]
    public void Running_statistics_get_one_update_per_forward_over_three_steps(double? momentum)
    {
        const int n = 6, c = 3, s = 4, v = 2;
        var layer = new GhostBatchNorm<double>(c, v, momentum: momentum);
        double[] rm = [0, 0, 0], rv = [1, 1, 1];
        for (int step = 0; step < 3; step++)
        {
            var x = Data.Normal(120 + step, n * c * s, step, 1 + step);
            var (am, av) = BatchVariantReference.GhostAverages(x, n, c, s, false, v);
            double f = momentum ?? 1.0 / (step + 1);   // null: cumulative average, as BatchNorm
            for (int k = 0; k < c; k++) { rm[k] = (1 - f) * rm[k] + f * am[k]; rv[k] = (1 - f) * rv[k] + f * av[k]; }
            layer.Forward(Tensor.Create(x, [n, c, s]));
            Check.Close(rm, Guard.Span(layer.RunningMean!), Tol.F64, $"running_mean, step {step}");
            Check.Close(rv, Guard.Span(layer.RunningVar!), Tol.F64, $"running_var, step {step}");
            Assert.Equal(step + 1, layer.NumBatchesTracked);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Eval_uses_running_statistics_and_takes_any_N(bool cl)
    {
        const int n = 5, c = 3, s = 4;   // 5 is not a multiple of the ghost size 2
        var rm = Data.Normal(131, c); var rv = Data.Normal(132, c).Select(q => 0.5 + q * q).ToArray();
        var w = Data.Normal(133, c, 1, 0.3); var b = Data.Normal(134, c);
        var x = Data.Normal(135, n * c * s, 1, 2); var dy = Data.Normal(136, x.Length);
        var layer = Layer<double>(c, 2, cl, w, b);
        rm.CopyTo(Guard.Span(layer.RunningMean!)); rv.CopyTo(Guard.Span(layer.RunningVar!));
        layer.Eval();
        var y = new double[x.Length]; var dx = new double[x.Length];
        layer.Forward(x, Shape(n, c, s, cl), y);
        layer.Backward(dy, x, Shape(n, c, s, cl), dx);
        var (ey, edx) = (new double[x.Length], new double[x.Length]);
        for (int a = 0; a < n; a++) for (int ch = 0; ch < c; ch++) for (int k = 0; k < s; k++)
                {
                    int i = Oracle.At(a, ch, k, c, s, cl);
                    ey[i] = (x[i] - rm[ch]) / Math.Sqrt(rv[ch] + 1e-5) * w[ch] + b[ch];
                    edx[i] = dy[i] / Math.Sqrt(rv[ch] + 1e-5) * w[ch];
                }
        Check.Close(ey, y, Tol.F64, "y");
        Check.Close(edx, dx, Tol.F64, "dx");
        Assert.Equal(0, layer.NumBatchesTracked);
    }

    public static TheoryData<int, int, int, bool> BatchNormShapes() => new()
    {
        { 4, 3, 5, false }, { 4, 3, 5, true }, { 16, 9, 1, false }, { 2, 4, 1100, false }, { 2, 4, 1100, true },
    };

    [Theory, MemberData(nameof(BatchNormShapes))]
    public void With_one_ghost_it_is_BatchNorm(int n, int c, int s, bool cl)
    {
        One<float>(0.1);
        One<double>(0.1);
        One<float>(null);
        void One<T>(double? momentum) where T : unmanaged, IFloatingPointIeee754<T>
        {
            var w = Data.Normal(143, c, 1, 0.4); var b = Data.Normal(144, c);
            var gbn = Layer<T>(c, n, cl, w, b, momentum);
            var bn = new BatchNorm1d<T>(c, momentum: momentum, channelsLast: cl);
            Check.Arr<T>(w).CopyTo(Guard.Span(bn.Weight!)); Check.Arr<T>(b).CopyTo(Guard.Span(bn.Bias!));
            int[] shape = Shape(n, c, s, cl);
            string t = typeof(T).Name;
            for (int step = 0; step < 2; step++)
            {
                var x = Check.Arr<T>(Data.Normal(141 + step, n * c * s, 1.5, 2));
                var dy = Check.Arr<T>(Data.Normal(142 + step, n * c * s));
                var (y1, y2, dx1, dx2) = (new T[x.Length], new T[x.Length], new T[x.Length], new T[x.Length]);
                gbn.Forward(x, shape, y1); bn.Forward(x, shape, y2);
                gbn.Backward(dy, x, shape, dx1); bn.Backward(dy, x, shape, dx2);
                Check.BitEqual<T>(y2, y1, $"{t} y");
                Check.BitEqual<T>(dx2, dx1, $"{t} dx");
            }
            Check.BitEqual<T>(Guard.Span(bn.WeightGrad!), Guard.Span(gbn.WeightGrad!), $"{t} dWeight");
            Check.BitEqual<T>(Guard.Span(bn.BiasGrad!), Guard.Span(gbn.BiasGrad!), $"{t} dBias");
            Check.BitEqual<T>(Guard.Span(bn.RunningMean!), Guard.Span(gbn.RunningMean!), $"{t} running_mean");
            Check.BitEqual<T>(Guard.Span(bn.RunningVar!), Guard.Span(gbn.RunningVar!), $"{t} running_var");
            Assert.Equal(bn.NumBatchesTracked, gbn.NumBatchesTracked);
        }
    }

    [Fact]
    public void Channels_last_gives_the_same_numbers_as_channels_first()
    {
        const int n = 6, c = 4, s = 5, v = 3;
        var x = Data.Normal(151, n * c * s, 1, 2);
        var dy = Data.Normal(152, x.Length);
        var (xl, dyl) = (new double[x.Length], new double[x.Length]);
        for (int a = 0; a < n; a++) for (int ch = 0; ch < c; ch++) for (int k = 0; k < s; k++)
                {
                    xl[Oracle.At(a, ch, k, c, s, true)] = x[Oracle.At(a, ch, k, c, s, false)];
                    dyl[Oracle.At(a, ch, k, c, s, true)] = dy[Oracle.At(a, ch, k, c, s, false)];
                }
        var w = Data.Normal(153, c, 1, 0.3); var b = Data.Normal(154, c);
        var first = Layer<double>(c, v, false, w, b);
        var last = Layer<double>(c, v, true, w, b);
        var (y, yl, dx, dxl) = (new double[x.Length], new double[x.Length], new double[x.Length], new double[x.Length]);
        first.Forward(x, [n, c, s], y); last.Forward(xl, [n, s, c], yl);
        first.Backward(dy, x, [n, c, s], dx); last.Backward(dyl, xl, [n, s, c], dxl);
        for (int a = 0; a < n; a++) for (int ch = 0; ch < c; ch++) for (int k = 0; k < s; k++)
                {
                    Assert.Equal(y[Oracle.At(a, ch, k, c, s, false)], yl[Oracle.At(a, ch, k, c, s, true)], 1e-12);
                    Assert.Equal(dx[Oracle.At(a, ch, k, c, s, false)], dxl[Oracle.At(a, ch, k, c, s, true)], 1e-12);
                }
        Check.Close(Guard.Span(first.RunningVar!).ToArray(), Guard.Span(last.RunningVar!), new Tol(1e-14, 0), "running_var");
        Check.Close(Guard.Span(first.WeightGrad!).ToArray(), Guard.Span(last.WeightGrad!), new Tol(1e-12, 1e-13), "dWeight");
    }

    [Fact]
    public void State_round_trips_through_safetensors()
    {
        var layer = new GhostBatchNorm<double>(4, 2);
        Assert.Equal(new[] { "weight", "bias", "running_mean", "running_var" }, layer.Tensors.Select(t => t.Name));
        for (int k = 0; k < 3; k++) layer.Forward(Tensor.Create(Data.Normal(161 + k, 6 * 4 * 2, 2, 3), [6, 4, 2]));
        string path = Path.Combine(Path.GetTempPath(), $"normkit-gbn-{Guid.NewGuid():N}.safetensors");
        try
        {
            StateDict.Save(path, ("gbn", (NormLayer<double>)layer));
            var loaded = new GhostBatchNorm<double>(4, 2);
            StateDict.Load(path, ("gbn", (NormLayer<double>)loaded));
            foreach (var (a, b) in layer.Tensors.Zip(loaded.Tensors))
                Check.BitEqual<double>(Guard.Span(a.Value), Guard.Span(b.Value), a.Name);
            Assert.Equal(3, loaded.NumBatchesTracked);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void A_batch_that_is_not_whole_ghosts_is_refused_and_changes_nothing()
    {
        var e0 = Assert.Throws<ArgumentOutOfRangeException>(() => new GhostBatchNorm<float>(3, 0));
        Assert.Equal("virtualBatchSize", e0.ParamName);
        Assert.Contains("> 0 but was 0", e0.Message);

        var layer = new GhostBatchNorm<float>(3, 2);
        var x = Data.F(Data.Normal(171, 4 * 3 * 5, 2, 3));
        var dy = Data.F(Data.Normal(172, x.Length));
        layer.Forward(x, [4, 3, 5], new float[x.Length]);
        var before = (Guard.Span(layer.RunningMean!).ToArray(), Guard.Span(layer.RunningVar!).ToArray(), layer.NumBatchesTracked);
        var dxBefore = new float[x.Length];
        layer.Backward(dy, x, [4, 3, 5], dxBefore);

        var e = Assert.Throws<ArgumentException>(() => layer.Forward(new float[5 * 3 * 5], [5, 3, 5], new float[5 * 3 * 5]));
        Assert.Equal("input", e.ParamName);
        Assert.Contains("N = 5", e.Message);
        Assert.Contains("VirtualBatchSize = 2", e.Message);
        e = Assert.Throws<ArgumentException>(() => layer.Forward(Tensor.Create(new float[7 * 3], [7, 3, 1])));   // more ghosts than the last forward
        Assert.Contains("N = 7", e.Message);
        var single = new GhostBatchNorm<float>(3, 1);
        Assert.Contains("more than 1 value per channel", Assert.Throws<ArgumentException>(() => single.Forward(new float[6], [2, 3], new float[6])).Message);
        Assert.Equal(0, single.NumBatchesTracked);
        Assert.ThrowsAny<ArgumentException>(() => layer.Forward(new float[8 * 4], [8, 4], new float[8 * 4]));   // 4 channels
        Assert.ThrowsAny<ArgumentException>(() => layer.Forward(x, [4, 3, 5], new float[x.Length - 1]));

        Assert.Equal(before.Item1, Guard.Span(layer.RunningMean!).ToArray());
        Assert.Equal(before.Item2, Guard.Span(layer.RunningVar!).ToArray());
        Assert.Equal(before.NumBatchesTracked, layer.NumBatchesTracked);
        var dxAfter = new float[x.Length];
        layer.Backward(dy, x, [4, 3, 5], dxAfter);
        Check.BitEqual<float>(dxBefore, dxAfter, "dx after failed forwards");

        // Eval takes any N, and a non-finite ghost leaves the running statistics under the guard.
        var nan = (float[])x.Clone(); nan[0] = float.NaN;
        layer.Forward(nan, [4, 3, 5], new float[x.Length]);
        Assert.Equal(RunningStatsUpdate.SkippedNonFinite, layer.LastRunningStatsUpdate);
        Assert.Equal(before.Item2, Guard.Span(layer.RunningVar!).ToArray());
        layer.Eval();
        layer.Forward(new float[5 * 3 * 5], [5, 3, 5], new float[5 * 3 * 5]);
    }
}
