using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Layers;
using NormKit.Tests.Reference;
using NormKit.Tests.Support;

namespace NormKit.Tests;

[Trait("Category", "Kernel")]
public class BatchNormTests
{
    // (N, C, S, channelsLast): S = 1 is BatchNorm1d on (N, C); channel counts around vector widths.
    public static TheoryData<int, int, int, bool> Shapes()
    {
        var d = new TheoryData<int, int, int, bool>();
        foreach (bool cl in new[] { false, true })
        {
            d.Add(4, 3, 5, cl);
            d.Add(2, 7, 33, cl);
            d.Add(3, 16, 1, cl);
            d.Add(5, 17, 9, cl);
            d.Add(2, 33, 4, cl);
            d.Add(16, 65, 1, cl);
            d.Add(3, 8, 257, cl);
            d.Add(2, 1, 3, cl);
        }
        d.Add(70, 3, 200, false);    // more planes than one chunk
        d.Add(7, 5, 3000, true);     // more rows than one block
        return d;
    }

    private static int[] Shape(int n, int c, int s, bool cl) => cl ? [n, s, c] : [n, c, s];

    [Theory, MemberData(nameof(Shapes))]
    public void Training_forward_and_backward_match_reference(int n, int c, int s, bool cl)
    {
        var x = Data.RoundToFloat(Data.Normal(n * c + s, n * c * s, 1.5, 2));
        var w = Data.RoundToFloat(Data.Normal(c, c, 1, 0.4));
        var b = Data.RoundToFloat(Data.Normal(c + 1, c));
        var dy = Data.RoundToFloat(Data.Normal(s + 3, n * c * s));
        var ey = Oracle.BatchNormTrain(x, n, c, s, cl, w, b, 1e-5);
        var (edx, edw, edb) = Oracle.BatchNormBackwardTrain(dy, x, n, c, s, cl, w, 1e-5);
        Paths.ForEach(p =>
        {
            One<float>(Tol.F32);
            One<double>(Tol.F64);
            void One<T>(Tol tol) where T : unmanaged, IFloatingPointIeee754<T>
            {
                var y = new T[x.Length];
                var mean = new double[c]; var rstd = new double[c];
                Functional.BatchNorm<T>(Check.Arr<T>(x), Shape(n, c, s, cl), y, default, default, Check.Arr<T>(w), Check.Arr<T>(b),
                    training: true, channelsLast: cl, saveMean: mean, saveRstd: rstd);
                Check.Close(ey, y, tol, $"{typeof(T).Name} y ({p})");
                var dx = new T[x.Length]; var dw = new T[c]; var db = new T[c];
                Functional.BatchNormBackward<T>(Check.Arr<T>(dy), Check.Arr<T>(x), Shape(n, c, s, cl), Check.Arr<T>(w), mean, rstd, true, dx, dw, db, cl);
                Check.Close(edx, dx, tol, $"{typeof(T).Name} dx ({p})");
                Check.Close(edw, dw, tol, $"{typeof(T).Name} dWeight ({p})");
                Check.Close(edb, db, tol, $"{typeof(T).Name} dBias ({p})");
            }
        });
    }

    [Theory]
    [InlineData(3, 2, 4, false, true)]
    [InlineData(4, 3, 1, false, true)]
    [InlineData(2, 3, 5, true, true)]
    [InlineData(3, 2, 4, false, false)]
    [InlineData(2, 3, 5, true, false)]
    public void Backward_agrees_with_finite_differences(int n, int c, int s, bool cl, bool training)
    {
        var x = Data.Normal(21, n * c * s, 0.5, 1.5);
        var w = Data.Normal(22, c, 1, 0.5);
        var b = Data.Normal(23, c);
        var rm = Data.Normal(24, c, 0, 0.3);
        var rv = Data.Normal(25, c, 0, 0.2).Select(v => 1 + Math.Abs(v)).ToArray();
        var dy = Data.Normal(26, n * c * s);
        int[] shape = Shape(n, c, s, cl);
        double Loss(double[] xx, double[] ww, double[] bb)
        {
            var y = new double[xx.Length];
            // Running buffers are copied so the finite differences see the same state each time.
            Functional.BatchNorm<double>(xx, shape, y, (double[])rm.Clone(), (double[])rv.Clone(), ww, bb, training, channelsLast: cl);
            return Oracle.Dot(y, dy);
        }
        var mean = new double[c]; var rstd = new double[c];
        Functional.BatchNorm<double>(x, shape, new double[x.Length], (double[])rm.Clone(), (double[])rv.Clone(), w, b, training,
            channelsLast: cl, saveMean: mean, saveRstd: rstd);
        var dx = new double[x.Length]; var dw = new double[c]; var db = new double[c];
        Functional.BatchNormBackward<double>(dy, x, shape, w, mean, rstd, training, dx, dw, db, cl);
        Check.Close(Oracle.NumericalGradient(v => Loss(v, w, b), x), dx, Tol.GradCheck, "dx");
        Check.Close(Oracle.NumericalGradient(v => Loss(x, v, b), w), dw, Tol.GradCheck, "dWeight");
        Check.Close(Oracle.NumericalGradient(v => Loss(x, w, v), b), db, Tol.GradCheck, "dBias");
    }

    [Fact]
    public void Running_update_uses_momentum_and_unbiased_variance()
    {
        const int n = 4, c = 3, s = 5;
        var bn = new BatchNorm1d<double>(c);
        var x = Data.Normal(31, n * c * s, 2, 3);
        bn.Forward(Tensor.Create(x, [n, c, s]));
        var (mean, biased) = Oracle.ChannelStats(x, n, c, s, false);
        double cnt = n * s;
        var expMean = mean.Select(m => 0.9 * 0 + 0.1 * m).ToArray();
        var expVar = biased.Select(v => 0.9 * 1 + 0.1 * v * cnt / (cnt - 1)).ToArray();
        Check.Close(expMean, Guard.Span(bn.RunningMean!), Tol.F64, "running_mean");
        Check.Close(expVar, Guard.Span(bn.RunningVar!), Tol.F64, "running_var");
        Assert.Equal(1, bn.NumBatchesTracked);
        Assert.Equal(RunningStatsUpdate.Updated, bn.LastRunningStatsUpdate);
    }

    [Fact]
    public void Momentum_null_keeps_a_cumulative_average()
    {
        const int n = 3, c = 2, s = 4;
        var bn = new BatchNorm1d<double>(c, momentum: null);
        var means = new List<double[]>(); var vars = new List<double[]>();
        for (int k = 0; k < 3; k++)
        {
            var x = Data.Normal(40 + k, n * c * s, k, 1 + k);
            bn.Forward(Tensor.Create(x, [n, c, s]));
            var (m, v) = Oracle.ChannelStats(x, n, c, s, false);
            means.Add(m); vars.Add(v.Select(q => q * (n * s) / (n * s - 1.0)).ToArray());
        }
        Assert.Equal(3, bn.NumBatchesTracked);
        Check.Close(Enumerable.Range(0, c).Select(i => means.Average(m => m[i])).ToArray(), Guard.Span(bn.RunningMean!), Tol.F64, "running_mean");
        Check.Close(Enumerable.Range(0, c).Select(i => vars.Average(v => v[i])).ToArray(), Guard.Span(bn.RunningVar!), Tol.F64, "running_var");
    }

    [Theory]
    [InlineData(false, 5, 6, 7)]
    [InlineData(true, 37, 2, 3)]
    public void Eval_uses_running_statistics_and_backward_is_a_scale(bool cl, int c, int h, int wd)
    {
        const int n = 3;
        int s = h * wd;
        var rm = Data.RoundToFloat(Data.Normal(51, c));
        var rv = Data.RoundToFloat(Data.Normal(52, c).Select(v => 0.5 + v * v).ToArray());
        var w = Data.RoundToFloat(Data.Normal(53, c, 1, 0.3));
        var b = Data.RoundToFloat(Data.Normal(54, c));
        var x = Data.RoundToFloat(Data.Normal(55, n * c * s, 1, 2));
        var dy = Data.RoundToFloat(Data.Normal(56, n * c * s));
        nint[] shape = cl ? [n, h, wd, c] : [n, c, h, wd];
        var edx = new double[x.Length];
        var edw = new double[c];
        for (int a = 0; a < n; a++) for (int ch = 0; ch < c; ch++) for (int k = 0; k < s; k++)
                {
                    int i = Oracle.At(a, ch, k, c, s, cl);
                    double rs = 1 / Math.Sqrt(rv[ch] + 1e-5);
                    edx[i] = dy[i] * rs * w[ch];
                    edw[ch] += dy[i] * (x[i] - rm[ch]) * rs;
                }
        Paths.ForEach(p =>
        {
            var bn = new BatchNorm2d<float>(c, channelsLast: cl);
            Data.F(rm).CopyTo(Guard.Span(bn.RunningMean!)); Data.F(rv).CopyTo(Guard.Span(bn.RunningVar!));
            Data.F(w).CopyTo(Guard.Span(bn.Weight!)); Data.F(b).CopyTo(Guard.Span(bn.Bias!));
            bn.Eval();
            var y = bn.Forward(Tensor.Create(Data.F(x), shape));
            Check.Close(Oracle.BatchNormApply(x, n, c, s, cl, rm, rv, w, b, 1e-5), Guard.Span(y), Tol.F32, $"y ({p})");
            Assert.Equal(0, bn.NumBatchesTracked);
            var dx = bn.Backward(Tensor.Create(Data.F(dy), shape));
            Check.Close(edx, Guard.Span(dx), Tol.F32, $"dx ({p})");
            Check.Close(edw, Guard.Span(bn.WeightGrad!), Tol.F32, $"dWeight ({p})");
        });
    }

    [Fact]
    public void Without_running_stats_eval_uses_batch_statistics()
    {
        var bn = new BatchNorm1d<double>(3, trackRunningStats: false);
        Assert.Null(bn.RunningMean); Assert.Null(bn.RunningVar);
        var x = Data.Normal(61, 4 * 3);
        var train = bn.Forward(Tensor.Create(x, [4, 3]));
        bn.Eval();
        var eval = bn.Forward(Tensor.Create(x, [4, 3]));
        Check.BitEqual<double>(Guard.Span(train), Guard.Span(eval), "train vs eval");
        Check.Close(Oracle.BatchNormTrain(x, 4, 3, 1, false, null, null, 1e-5), Guard.Span(eval), Tol.F64, "y");
        Assert.Equal(0, bn.NumBatchesTracked);
    }

    [Fact]
    public void Affine_false_has_no_weight_or_bias()
    {
        var bn = new BatchNorm3d<double>(2, affine: false);
        Assert.Null(bn.Weight); Assert.Null(bn.Bias); Assert.Null(bn.WeightGrad);
        var x = Data.Normal(62, 2 * 2 * 2 * 2 * 3);
        var y = bn.Forward(Tensor.Create(x, [2, 2, 2, 2, 3]));
        Check.Close(Oracle.BatchNormTrain(x, 2, 2, 12, false, null, null, 1e-5), Guard.Span(y), Tol.F64, "y");
        var dy = Data.Normal(63, x.Length);
        var dx = bn.Backward(Tensor.Create(dy, [2, 2, 2, 2, 3]));
        Check.Close(Oracle.BatchNormBackwardTrain(dy, x, 2, 2, 12, false, null, 1e-5).Dx, Guard.Span(dx), Tol.F64, "dx");
    }

    [Fact]
    public void Reset_restores_defaults()
    {
        var bn = new BatchNorm1d<float>(4);
        bn.Forward(Tensor.Create(Data.F(Data.Normal(64, 12, 3)), [3, 4]));
        Guard.Span(bn.Weight!).Fill(3);
        bn.ResetRunningStats();
        Assert.Equal(0, bn.NumBatchesTracked);
        Assert.All(Guard.Span(bn.RunningMean!).ToArray(), v => Assert.Equal(0f, v));
        Assert.All(Guard.Span(bn.RunningVar!).ToArray(), v => Assert.Equal(1f, v));
        Assert.All(Guard.Span(bn.Weight!).ToArray(), v => Assert.Equal(3f, v));
        bn.ResetParameters();
        Assert.All(Guard.Span(bn.Weight!).ToArray(), v => Assert.Equal(1f, v));
        Assert.All(Guard.Span(bn.Bias!).ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void One_value_per_channel_fails_in_training_and_works_in_eval()
    {
        var bn = new BatchNorm1d<float>(3);
        var x = Tensor.Create(new float[] { 1, 2, 3 }, [1, 3]);
        var e = Assert.Throws<ArgumentException>(() => bn.Forward(x));
        Assert.Contains("Expected more than 1 value per channel when training, got input size [1, 3]", e.Message);
        Assert.Equal(0, bn.NumBatchesTracked);
        bn.Eval();
        var y = bn.Forward(x);
        Check.Close(new double[] { 1 / Math.Sqrt(1 + 1e-5), 2 / Math.Sqrt(1 + 1e-5), 3 / Math.Sqrt(1 + 1e-5) }, Guard.Span(y), Tol.F32, "eval y");
    }

    [Fact]
    public void Empty_batch_gives_empty_output_and_leaves_statistics()
    {
        var bn = new BatchNorm2d<float>(3);
        var y = bn.Forward(Tensor.Create(Array.Empty<float>(), [0, 3, 4, 4]));
        Assert.Equal(0, y.FlattenedLength);
        Assert.Equal([0, 3, 4, 4], y.Lengths.ToArray().Select(v => (int)v));
        Assert.Equal(1, bn.NumBatchesTracked);   // counted, as PyTorch's module counts it (EdgeSemanticsTests)
        Assert.All(Guard.Span(bn.RunningVar!).ToArray(), v => Assert.Equal(1f, v));
        var dx = bn.Backward(Tensor.Create(Array.Empty<float>(), [0, 3, 4, 4]));
        Assert.Equal(0, dx.FlattenedLength);
        Assert.All(Guard.Span(bn.WeightGrad!).ToArray(), v => Assert.Equal(0f, v));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Non_finite_batch_follows_IEEE_and_the_guard_protects_running_statistics(bool guard)
    {
        var bn = new BatchNorm1d<float>(2) { GuardRunningStats = guard };
        var y = bn.Forward(Tensor.Create(new float[] { 1, 5, float.NaN, 6, 3, 7 }, [3, 2]));
        Assert.True(float.IsNaN(Guard.Span(y)[0]) && float.IsNaN(Guard.Span(y)[2]), "channel 0 holds a NaN: its outputs are NaN");
        Assert.False(float.IsNaN(Guard.Span(y)[1]), "channel 1 is finite");
        if (guard)
        {
            Assert.Equal(RunningStatsUpdate.SkippedNonFinite, bn.LastRunningStatsUpdate);
            Assert.Equal(0, bn.NumBatchesTracked);
            Assert.Equal([0f, 0f], Guard.Span(bn.RunningMean!).ToArray());
            Assert.Equal([1f, 1f], Guard.Span(bn.RunningVar!).ToArray());
        }
        else
        {
            Assert.Equal(RunningStatsUpdate.Updated, bn.LastRunningStatsUpdate);
            Assert.True(float.IsNaN(Guard.Span(bn.RunningMean!)[0]));
        }
        var inf = bn.Forward(Tensor.Create(new float[] { 1, 5, float.PositiveInfinity, 6 }, [2, 2]));
        Assert.True(float.IsNaN(Guard.Span(inf)[0]));
    }

    [Fact]
    public void Negative_running_variance_in_eval_is_rejected()
    {
        var bn = new BatchNorm1d<float>(2);
        Guard.Span(bn.RunningVar!)[1] = -0.5f;
        bn.Eval();
        var e = Assert.Throws<ArgumentException>(() => bn.Forward(Tensor.Create(new float[] { 1, 2, 3, 4 }, [2, 2])));
        Assert.Contains("runningVar[1] is -0.5", e.Message);
    }

    [Fact]
    public void Onnx_and_Keras_conventions_are_expressible()
    {
        // ONNX: running = old * 0.9 + batch * 0.1 with the biased variance = momentum 0.1, unbiasedRunningVar false.
        var x = Data.Normal(71, 4 * 2);
        var rm = new double[2]; var rv = new double[] { 1, 1 };
        Functional.BatchNorm<double>(x, [4, 2], new double[8], rm, rv, default, default, training: true, momentum: 1 - 0.9, unbiasedRunningVar: false);
        var (m, v) = Oracle.ChannelStats(x, 4, 2, 1, false);
        Check.Close(m.Select(a => 0.1 * a).ToArray(), rm, Tol.F64, "running_mean");
        Check.Close(v.Select(a => 0.9 + 0.1 * a).ToArray(), rv, Tol.F64, "running_var (biased)");
    }

    [Fact]
    public void Span_overloads_match_tensor_overloads()
    {
        var x = Data.F(Data.Normal(81, 2 * 3 * 4));
        var a = new BatchNorm1d<float>(3);
        var b = new BatchNorm1d<float>(3);
        var ya = a.Forward(Tensor.Create(x, [2, 3, 4]));
        var yb = new float[x.Length];
        b.Forward(x, [2, 3, 4], yb);
        Check.BitEqual<float>(Guard.Span(ya), yb, "y");
        var dy = Data.F(Data.Normal(82, x.Length));
        var dxa = a.Backward(Tensor.Create(dy, [2, 3, 4]));
        var dxb = new float[x.Length];
        b.Backward(dy, x, [2, 3, 4], dxb);
        Check.BitEqual<float>(Guard.Span(dxa), dxb, "dx");
        Check.BitEqual<float>(Guard.Span(a.WeightGrad!), Guard.Span(b.WeightGrad!), "dWeight");
    }
}
