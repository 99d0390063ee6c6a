using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Layers;
using NormKit.Tests.Reference;
using NormKit.Tests.Support;

namespace NormKit.Tests;

[Trait("Category", "Kernel")]
public class GroupNormTests
{
    public static TheoryData<int, int, int, int, bool> Shapes()
    {
        var d = new TheoryData<int, int, int, int, bool>();
        foreach (bool cl in new[] { false, true })
        {
            d.Add(2, 6, 5, 3, cl);
            d.Add(3, 8, 17, 4, cl);
            d.Add(2, 32, 9, 32, cl);    // G = C: InstanceNorm
            d.Add(2, 12, 33, 1, cl);    // G = 1: LayerNorm over (C, S)
            d.Add(4, 64, 3, 8, cl);
            d.Add(1, 4, 1, 2, cl);      // one spatial element
        }
        return d;
    }

    private static int[] Shape(int n, int c, int s, bool cl) => cl ? [n, s, c] : [n, c, s];

    [Theory, MemberData(nameof(Shapes))]
    public void Forward_and_backward_match_reference(int n, int c, int s, int g, bool cl)
    {
        var x = Data.RoundToFloat(Data.Normal(n * c + s + g, n * c * s, -0.5, 2));
        var w = Data.RoundToFloat(Data.Normal(c, c, 1, 0.4));
        var b = Data.RoundToFloat(Data.Normal(c + 1, c));
        var dy = Data.RoundToFloat(Data.Normal(s + 5, n * c * s));
        var (ey, em, er) = Oracle.GroupNorm(x, n, c, s, cl, g, w, b, 1e-5);
        var (edx, edw, edb) = Oracle.GroupNormBackward(dy, x, n, c, s, cl, g, w, 1e-5);
        Paths.ForEach(p =>
        {
            One<float>(Tol.F32);
            One<double>(Tol.F64);
            void One<T>(Tol tol) where T : unmanaged, IFloatingPointIeee754<T>
            {
                var y = new T[x.Length]; var mean = new double[n * g]; var rstd = new double[n * g];
                Functional.GroupNorm<T>(Check.Arr<T>(x), Shape(n, c, s, cl), g, y, Check.Arr<T>(w), Check.Arr<T>(b), 1e-5, cl, mean, rstd);
                Check.Close(ey, y, tol, $"{typeof(T).Name} y ({p})");
                Check.Close(em, mean, Tol.F64, $"{typeof(T).Name} mean ({p})");
                Check.Close(er, rstd, Tol.F64, $"{typeof(T).Name} rstd ({p})");
                var dx = new T[x.Length]; var dw = new T[c]; var db = new T[c];
                Functional.GroupNormBackward<T>(Check.Arr<T>(dy), Check.Arr<T>(x), Shape(n, c, s, cl), g, Check.Arr<T>(w), mean, rstd, dx, dw, db, cl);
                Check.Close(edx, dx, tol, $"{typeof(T).Name} dx ({p})");
                Check.Close(edw, dw, tol, $"{typeof(T).Name} dWeight ({p})");
                Check.Close(edb, db, tol, $"{typeof(T).Name} dBias ({p})");
            }
        });
    }

    [Theory]
    [InlineData(2, 6, 4, 3, false)]
    [InlineData(2, 6, 4, 2, true)]
    [InlineData(3, 4, 5, 4, false)]
    public void Backward_agrees_with_finite_differences(int n, int c, int s, int g, bool cl)
    {
        var x = Data.Normal(1, n * c * s, 0.2, 1.3);
        var w = Data.Normal(2, c, 1, 0.5);
        var b = Data.Normal(3, c);
        var dy = Data.Normal(4, n * c * s);
        int[] shape = Shape(n, c, s, cl);
        double Loss(double[] xx, double[] ww, double[] bb)
        {
            var y = new double[xx.Length];
            Functional.GroupNorm<double>(xx, shape, g, y, ww, bb, 1e-5, cl);
            return Oracle.Dot(y, dy);
        }
        var mean = new double[n * g]; var rstd = new double[n * g];
        Functional.GroupNorm<double>(x, shape, g, new double[x.Length], w, b, 1e-5, cl, mean, rstd);
        var dx = new double[x.Length]; var dw = new double[c]; var db = new double[c];
        Functional.GroupNormBackward<double>(dy, x, shape, g, w, mean, rstd, dx, dw, db, cl);
        Check.Close(Oracle.NumericalGradient(v => Loss(v, w, b), x), dx, Tol.GradCheck, "dx");
        Check.Close(Oracle.NumericalGradient(v => Loss(x, v, b), w), dw, Tol.GradCheck, "dWeight");
        Check.Close(Oracle.NumericalGradient(v => Loss(x, w, v), b), db, Tol.GradCheck, "dBias");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void One_group_equals_LayerNorm_over_channels_and_space(bool cl)
    {
        const int n = 3, c = 6, s = 11;
        var x = Data.Normal(5, n * c * s, 4, 3);
        var gn = new double[x.Length];
        Functional.GroupNorm<double>(x, cl ? [n, s, c] : [n, c, s], 1, gn, channelsLast: cl);
        var ln = new double[x.Length];
        Functional.LayerNorm<double>(x, [n, c * s], [c * s], ln);
        Check.Close(ln, gn, Tol.F64, "GroupNorm(1) vs LayerNorm over (C, S)");
    }

    [Fact]
    public void Channels_not_divisible_by_groups_fail_at_construction_naming_both()
    {
        var e = Assert.Throws<ArgumentException>(() => new GroupNorm<float>(4, 6));
        Assert.Contains("NumChannels (6) must be divisible by NumGroups (4)", e.Message);
        Assert.Equal("numGroups", e.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => new GroupNorm<float>(0, 6));
        var gn = new GroupNorm<float>(2, 6);
        var e2 = Assert.Throws<ArgumentException>(() => gn.Forward(Tensor.Create(new float[2 * 4 * 3], [2, 4, 3])));
        Assert.Contains("4 channels", e2.Message);
        Assert.Contains("NumChannels = 6", e2.Message);
    }

    [Fact]
    public void Layer_matches_functional_and_is_batch_independent()
    {
        var gn = new GroupNorm<float>(2, 4);
        Data.F(Data.Normal(7, 4, 1, 0.3)).CopyTo(Guard.Span(gn.Weight!));
        var x = Data.F(Data.Normal(8, 3 * 4 * 5));
        var y = gn.Forward(Tensor.Create(x, [3, 4, 5]));
        var one = gn.Forward(Tensor.Create(x[20..40], [1, 4, 5]));   // sample 1 alone
        Check.BitEqual<float>(Guard.Span(y).Slice(20, 20), Guard.Span(one), "sample 1 alone");
        gn.Eval();
        Check.BitEqual<float>(Guard.Span(one), Guard.Span(gn.Forward(Tensor.Create(x[20..40], [1, 4, 5]))), "eval equals train");
        var dy = Data.F(Data.Normal(9, 20));
        var dx = gn.Backward(Tensor.Create(dy, [1, 4, 5]));
        var (edx, edw, edb) = Oracle.GroupNormBackward(Data.D(dy), Data.D(x[20..40]), 1, 4, 5, false, 2, Data.D(Guard.Span(gn.Weight!).ToArray()), 1e-5);
        Check.Close(edx, Guard.Span(dx), Tol.F32, "dx");
        Check.Close(edw, Guard.Span(gn.WeightGrad!), Tol.F32, "dWeight");
        Check.Close(edb, Guard.Span(gn.BiasGrad!), Tol.F32, "dBias");
    }
}

[Trait("Category", "Kernel")]
public class InstanceNormTests
{
    [Fact]
    public void Defaults_follow_PyTorch()
    {
        var inorm = new InstanceNorm2d<float>(3);
        Assert.False(inorm.Affine);
        Assert.False(inorm.TrackRunningStats);
        Assert.Null(inorm.Weight);
        Assert.Null(inorm.RunningMean);
        Assert.Equal(0.1, inorm.Momentum);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Equals_GroupNorm_with_one_group_per_channel_bitwise(bool cl)
    {
        var x = Data.F(Data.Normal(1, 3 * 5 * 7, 2, 3));
        int[] shape = cl ? [3, 7, 5] : [3, 5, 7];
        var a = new float[x.Length]; var b = new float[x.Length];
        Functional.GroupNorm<float>(x, shape, 5, a, channelsLast: cl);
        Functional.InstanceNorm<float>(x, shape, b, channelsLast: cl);
        Check.BitEqual<float>(a, b, "GroupNorm(C) vs InstanceNorm");
        var inorm = new InstanceNorm1d<float>(5, channelsLast: cl);
        var y = inorm.Forward(Tensor.Create(x, shape.Select(v => (nint)v).ToArray()));
        Check.BitEqual<float>(a, Guard.Span(y), "layer");
    }

    [Fact]
    public void Running_statistics_average_the_instances_and_drive_eval()
    {
        const int n = 3, c = 2, s = 6;
        var x = Data.Normal(2, n * c * s, 1, 2);
        var inorm = new InstanceNorm1d<double>(c, trackRunningStats: true, affine: true);
        inorm.Forward(Tensor.Create(x, [n, c, s]));
        var (_, mean, rstd) = Oracle.GroupNorm(x, n, c, s, false, c, null, null, 0);   // eps 0: exact instance statistics
        var expMean = new double[c]; var expVar = new double[c];
        for (int k = 0; k < c; k++)
            for (int a = 0; a < n; a++)
            {
                expMean[k] += 0.1 * mean[a * c + k] / n;
                expVar[k] += 0.1 * (1 / (rstd[a * c + k] * rstd[a * c + k])) * s / (s - 1) / n;
            }
        for (int k = 0; k < c; k++) expVar[k] += 0.9;
        Check.Close(expMean, Guard.Span(inorm.RunningMean!), Tol.F64, "running_mean");
        Check.Close(expVar, Guard.Span(inorm.RunningVar!), Tol.F64, "running_var");
        Assert.Equal(0, inorm.NumBatchesTracked);   // PyTorch's InstanceNorm never counts
        inorm.Eval();
        var y = inorm.Forward(Tensor.Create(x, [n, c, s]));
        Check.Close(Oracle.BatchNormApply(x, n, c, s, false, expMean, expVar, null, null, 1e-5), Guard.Span(y), Tol.F64, "eval y");
        var dy = Data.Normal(3, x.Length);
        var dx = inorm.Backward(Tensor.Create(dy, [n, c, s]));
        for (int i = 0; i < x.Length; i++)
            Assert.Equal(dy[i] / Math.Sqrt(expVar[i / s % c] + 1e-5), Guard.Span(dx)[i], 12);
    }

    [Fact]
    public void One_spatial_element_in_training_is_an_error()
    {
        var inorm = new InstanceNorm1d<float>(3);
        var e = Assert.Throws<ArgumentException>(() => inorm.Forward(Tensor.Create(new float[6], [2, 3, 1])));
        Assert.Contains("Expected more than 1 spatial element when training, got input size [2, 3, 1]", e.Message);
    }

    [Fact]
    public void Backward_agrees_with_finite_differences()
    {
        var x = Data.Normal(5, 2 * 3 * 4, 0, 2);
        var dy = Data.Normal(6, x.Length);
        var inorm = new InstanceNorm1d<double>(3, affine: true);
        Data.Normal(7, 3, 1, 0.3).CopyTo(Guard.Span(inorm.Weight!));
        inorm.Forward(x, [2, 3, 4], new double[x.Length]);
        var dx = new double[x.Length];
        inorm.Backward(dy, x, [2, 3, 4], dx);
        var probe = new InstanceNorm1d<double>(3, affine: true);
        Guard.Span(inorm.Weight!).CopyTo(Guard.Span(probe.Weight!));
        double Loss(double[] v) { var y = new double[v.Length]; probe.Forward(v, [2, 3, 4], y); return Oracle.Dot(y, dy); }
        Check.Close(Oracle.NumericalGradient(Loss, x), dx, Tol.GradCheck, "dx");
    }
}

[Trait("Category", "Kernel")]
public class RmsNormTests
{
    public static TheoryData<int> Lengths() => new(Paths.Lengths);

    [Theory, MemberData(nameof(Lengths))]
    public void Forward_and_backward_match_reference(int cols)
    {
        const int rows = 4;
        var x = Data.RoundToFloat(Data.Normal(cols, rows * cols, 0.3, 2));
        var w = Data.RoundToFloat(Data.Normal(cols + 1, cols, 1, 0.4));
        var dy = Data.RoundToFloat(Data.Normal(cols + 2, rows * cols));
        Paths.ForEach(p =>
        {
            One<float>(Tol.F32);
            One<double>(Tol.F64);
            void One<T>(Tol tol) where T : unmanaged, IFloatingPointIeee754<T>
            {
                double eps = Functional.MachineEpsilon<T>();
                var (ey, er) = Oracle.RmsNorm(x, rows, cols, w, eps);
                var y = new T[x.Length]; var rstd = new double[rows];
                Functional.RmsNorm<T>(Check.Arr<T>(x), [rows, cols], [cols], y, Check.Arr<T>(w), rstd: rstd);
                Check.Close(ey, y, tol, $"{typeof(T).Name} y ({p})");
                Check.Close(er, rstd, Tol.F64, $"{typeof(T).Name} rstd ({p})");
                // Backward against finite differences of the reference (in double, central differences).
                var dx = new T[x.Length]; var dw = new T[cols];
                Functional.RmsNormBackward<T>(Check.Arr<T>(dy), Check.Arr<T>(x), [rows, cols], [cols], rstd, Check.Arr<T>(w), dx, dw);
                Check.Close(Oracle.RmsNormBackward(dy, x, rows, cols, w, eps), dx, tol, $"{typeof(T).Name} dx against the analytic reference ({p})");
                if (cols <= 40)
                {
                    var edx = Oracle.NumericalGradient(v => Oracle.Dot(Oracle.RmsNorm(v, rows, cols, w, eps).Y, dy), x);
                    var edw = Oracle.NumericalGradient(v => Oracle.Dot(Oracle.RmsNorm(x, rows, cols, v, eps).Y, dy), w);
                    Check.Close(edx, dx, Tol.GradCheck, $"{typeof(T).Name} dx ({p})");
                    Check.Close(edw, dw, Tol.GradCheck, $"{typeof(T).Name} dWeight ({p})");
                }
            }
        });
    }

    [Fact]
    public void Default_eps_is_the_machine_epsilon_of_the_element_type()
    {
        Assert.Equal(1.1920928955078125e-7, new RMSNorm<float>(4).Eps);
        Assert.Equal(2.220446049250313e-16, new RMSNorm<double>(4).Eps);
        Assert.Equal(1e-6, new RMSNorm<float>(4, eps: 1e-6).Eps);
        Assert.Null(new RMSNorm<float>(4).Bias);
    }

    [Fact]
    public void Equals_LayerNorm_without_bias_on_zero_mean_rows()
    {
        const int rows = 5, cols = 48;
        var x = Data.Normal(3, rows * cols);
        for (int r = 0; r < rows; r++)
        {
            double m = x.Skip(r * cols).Take(cols).Average();
            for (int j = 0; j < cols; j++) x[r * cols + j] -= m;
        }
        var w = Data.Normal(4, cols, 1, 0.2);
        var ln = new double[x.Length]; var rms = new double[x.Length];
        Functional.LayerNorm<double>(x, [rows, cols], [cols], ln, w, default, 1e-5);
        Functional.RmsNorm<double>(x, [rows, cols], [cols], rms, w, 1e-5);
        Check.Close(ln, rms, Tol.F64, "RMSNorm vs LayerNorm");
    }
}

[Trait("Category", "Kernel")]
public class FusedResidualTests
{
    [Theory]
    [InlineData(true, 37)]
    [InlineData(false, 37)]
    [InlineData(true, 256)]
    [InlineData(false, 129)]
    public void Fused_add_norm_equals_add_then_norm_bitwise_forward_and_backward(bool layerNorm, int cols)
    {
        const int rows = 6;
        var x = Data.F(Data.Normal(1, rows * cols, 1, 2));
        var res = Data.F(Data.Normal(2, rows * cols, -1, 1));
        var dy = Data.F(Data.Normal(3, rows * cols));
        var ds = Data.F(Data.Normal(4, rows * cols));
        Paths.ForEach(p =>
        {
            RowNorm<float> fused = layerNorm ? new LayerNorm<float>(cols) : new RMSNorm<float>(cols);
            RowNorm<float> plain = layerNorm ? new LayerNorm<float>(cols) : new RMSNorm<float>(cols);
            var w = Data.F(Data.Normal(5, cols, 1, 0.3));
            w.CopyTo(Guard.Span(fused.Weight!)); w.CopyTo(Guard.Span(plain.Weight!));
            var s = new float[x.Length]; var y = new float[x.Length];
            fused.ForwardResidual(x, res, [rows, cols], s, y);
            var s2 = x.Zip(res, (a, b) => a + b).ToArray();
            var y2 = new float[x.Length];
            plain.Forward(s2, [rows, cols], y2);
            Check.BitEqual<float>(s2, s, $"sum ({p})");
            Check.BitEqual<float>(y2, y, $"y ({p})");
            var g = new float[x.Length];
            fused.BackwardResidual(dy, ds, s, [rows, cols], g);
            var g2 = new float[x.Length];
            plain.Backward(dy, s2, [rows, cols], g2);
            for (int i = 0; i < g2.Length; i++) g2[i] += ds[i];
            Check.BitEqual<float>(g2, g, $"gradient of x and residual ({p})");
            Check.BitEqual<float>(Guard.Span(plain.WeightGrad!), Guard.Span(fused.WeightGrad!), $"dWeight ({p})");
        });
    }

    [Fact]
    public void Fused_backward_agrees_with_finite_differences()
    {
        const int rows = 3, cols = 7;
        var x = Data.Normal(1, rows * cols); var r = Data.Normal(2, rows * cols);
        var dy = Data.Normal(3, rows * cols); var ds = Data.Normal(4, rows * cols);
        var w = Data.Normal(5, cols, 1, 0.3); var b = Data.Normal(6, cols);
        double Loss(double[] xx)
        {
            var s = new double[xx.Length]; var y = new double[xx.Length];
            Functional.AddLayerNorm<double>(xx, r, [rows, cols], [cols], s, y, w, b);
            return Oracle.Dot(y, dy) + Oracle.Dot(s, ds);
        }
        var sum = new double[x.Length]; var mean = new double[rows]; var rstd = new double[rows];
        Functional.AddLayerNorm<double>(x, r, [rows, cols], [cols], sum, new double[x.Length], w, b, 1e-5, mean, rstd);
        var gx = new double[x.Length];
        Functional.AddLayerNormBackward<double>(dy, ds, sum, [rows, cols], [cols], mean, rstd, w, gx);
        Check.Close(Oracle.NumericalGradient(Loss, x), gx, Tol.GradCheck, "d/dx (equals d/dresidual)");
    }
}

[Trait("Category", "Kernel")]
public class MaskedBatchNormTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Padding_stays_out_of_statistics_running_update_and_gradients(bool cl)
    {
        const int n = 4, c = 19, s = 9;
        var x = Data.RoundToFloat(Data.Normal(1, n * c * s, 1, 2));
        var lengths = new[] { 9, 5, 1, 7 };   // valid prefix of each sequence
        var mask = new bool[n * s];
        for (int a = 0; a < n; a++) for (int k = 0; k < lengths[a]; k++) mask[a * s + k] = true;
        // Padded positions hold garbage that must not matter.
        for (int a = 0; a < n; a++) for (int ch = 0; ch < c; ch++) for (int k = lengths[a]; k < s; k++) x[Oracle.At(a, ch, k, c, s, cl)] = 1e6;
        var w = Data.RoundToFloat(Data.Normal(2, c, 1, 0.3));
        var ey = Oracle.MaskedBatchNorm(x, mask, n, c, s, cl, w, null, 1e-5, out var mean, out var var, out double cnt);
        int[] shape = cl ? [n, s, c] : [n, c, s];
        Paths.ForEach(p =>
        {
            var bn = new BatchNorm1d<double>(c, channelsLast: cl);
            w.CopyTo(Guard.Span(bn.Weight!));
            var y = new double[x.Length];
            bn.Forward(x, shape, y, mask);
            Check.Close(ey, y, Tol.F64, $"y ({p})");
            Check.Close(mean.Select(m => 0.1 * m).ToArray(), Guard.Span(bn.RunningMean!), Tol.F64, $"running_mean ({p})");
            Check.Close(var.Select(v => 0.9 + 0.1 * v * cnt / (cnt - 1)).ToArray(), Guard.Span(bn.RunningVar!), Tol.F64, $"running_var ({p})");

            var dy = Data.Normal(3, x.Length);
            var dx = new double[x.Length];
            bn.Backward(dy, x, shape, dx, mask);
            double Loss(double[] v) => Oracle.Dot(Oracle.MaskedBatchNorm(v, mask, n, c, s, cl, w, null, 1e-5, out _, out _, out _), dy);
            // Central differences of the masked oracle at the unmasked positions; masked ones must be 0.
            var idx = Enumerable.Range(0, x.Length).Where(i => i % 5 == 0).ToArray();
            foreach (int i in idx)
            {
                var xp = (double[])x.Clone(); xp[i] += 1e-6;
                var xm = (double[])x.Clone(); xm[i] -= 1e-6;
                double num = (Loss(xp) - Loss(xm)) / 2e-6;
                Assert.True(Math.Abs(num - dx[i]) <= 1e-5 + 1e-3 * Math.Abs(num), $"dx[{i}] = {dx[i]}, finite differences {num} ({p})");
            }
            Assert.Throws<ArgumentException>(() => bn.Backward(dy, x, shape, dx));   // the forward's mask is required
        });
    }

    [Fact]
    public void Mask_of_the_wrong_length_is_named()
    {
        var e = Assert.Throws<ArgumentException>(() =>
            Functional.BatchNorm<float>(new float[24], [2, 3, 4], new float[24], default, default, default, default, true, mask: new bool[7]));
        Assert.Equal("mask", e.ParamName);
        Assert.Contains("needs 8", e.Message);
    }
}
