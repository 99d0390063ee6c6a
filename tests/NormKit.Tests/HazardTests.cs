using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Layers;
using NormKit.Tests.Reference;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>The numeric hazards of REFERENCE.md, each run through LayerNorm (a row) and BatchNorm (a channel) on every path.</summary>
[Trait("Category", "Kernel")]
public class HazardTests
{
    /// <summary>Normalizes one segment both ways and checks y, mean and variance against the float64 oracle.</summary>
    private static void SegmentMatchesOracle(float[] values, string what)
    {
        int n = values.Length;
        var x = Data.D(values);
        var w = Data.RoundToFloat(Data.Normal(n, n, 1, 0.2));
        var b = Data.RoundToFloat(Data.Normal(n + 1, n));
        var (ey, em, er) = Oracle.LayerNorm(x, 1, n, w, b, 1e-5);
        Paths.ForEach(p =>
        {
            var y = new float[n]; var mean = new double[1]; var rstd = new double[1];
            Functional.LayerNorm<float>(values, [1, n], [n], y, Data.F(w), Data.F(b), 1e-5, mean, rstd);
            Check.Close(ey, y, Tol.F32, $"{what}: LayerNorm y ({p})");
            Check.Close(em, mean, Tol.F64, $"{what}: LayerNorm mean ({p})");
            Check.Close(er, rstd, Tol.F64, $"{what}: LayerNorm rstd ({p})");

            // The same values as one BatchNorm channel: (N = n, C = 1).
            var yb = new float[n]; var bm = new double[1]; var br = new double[1];
            Functional.BatchNorm<float>(values, [n, 1], yb, default, default, default, default, training: true, saveMean: bm, saveRstd: br);
            var eb = Oracle.BatchNormTrain(x, n, 1, 1, false, null, null, 1e-5);
            Check.Close(eb, yb, Tol.F32, $"{what}: BatchNorm y ({p})");
            Check.Close(em, bm, Tol.F64, $"{what}: BatchNorm mean ({p})");
            Check.Close(er, br, Tol.F64, $"{what}: BatchNorm rstd ({p})");
        });
    }

    [Fact]
    public void Large_offset_randn_plus_2000()
    {
        // pytorch#51102: one-pass variance gave var up to 48425 for randn(5,4) + 2000.
        var x = Data.F(Data.Normal(1, 20, 2000, 1));
        for (int r = 0; r < 5; r++) SegmentMatchesOracle(x[(r * 4)..(r * 4 + 4)], $"row {r}");
        SegmentMatchesOracle(x, "all 20");
    }

    [Fact]
    public void Four_consecutive_integers_at_40000_have_variance_1_25()
    {
        // onnxruntime#28463 gave NaN.
        SegmentMatchesOracle([40000, 40001, 40002, 40003], "[40000..40003]");
        var rstd = new double[1];
        Functional.LayerNorm<float>(new float[] { 40000, 40001, 40002, 40003 }, [1, 4], [4], new float[4], rstd: rstd);
        Assert.Equal(1 / Math.Sqrt(1.25 + 1e-5), rstd[0], 12);
    }

    [Fact]
    public void Tiny_variance_under_a_large_constant_stays_positive()
    {
        // 10240 values of 256 with the last 255: true variance 9.76e-5; one-pass gave a negative one.
        var x = Enumerable.Repeat(256f, 10240).ToArray();
        x[^1] = 255;
        SegmentMatchesOracle(x, "256 x 10239, 255");
        var rstd = new double[1];
        Functional.LayerNorm<float>(x, [1, x.Length], [x.Length], new float[x.Length], rstd: rstd);
        double trueVar = 10239.0 / 10240 / 10240;
        Assert.Equal(1 / Math.Sqrt(trueVar + 1e-5), rstd[0], 9);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(1e2)]
    [InlineData(1e3)]
    [InlineData(1e4)]
    public void Sixteen_values_mean_plus_i_millis(double mean)
    {
        // tracel-ai/burn#5607: 16 values mean + i * 1e-3, against a double two-pass reference.
        SegmentMatchesOracle(Enumerable.Range(0, 16).Select(i => (float)(mean + i * 1e-3)).ToArray(), $"mean {mean}");
    }

    [Fact]
    public void Values_near_1e30_do_not_overflow()
    {
        // (x - mean)^2 overflows float near 1e30 (pytorch#162489): statistics are accumulated in double.
        var x = new float[] { 1e30f, -2e30f, 3e30f, 0.5e30f, -1e30f, 2.5e30f };
        SegmentMatchesOracle(x, "1e30");
        var y = new float[x.Length];
        Functional.LayerNorm<float>(x, [1, x.Length], [x.Length], y);
        Assert.All(y, v => Assert.True(float.IsFinite(v)));
    }

    [Fact]
    public void Constant_segment_gives_exactly_the_bias()
    {
        // onnxruntime#21935 gave NaN for a constant row of 1234.0.
        foreach (int n in new[] { 1, 7, 64, 100 })
        {
            var x = Enumerable.Repeat(1234f, n).ToArray();
            var w = Data.F(Data.Normal(n, n, 1, 0.5));
            var b = Data.F(Data.Normal(n + 1, n));
            Paths.ForEach(p =>
            {
                var y = new float[n];
                Functional.LayerNorm<float>(x, [1, n], [n], y, w, b);
                Check.BitEqual<float>(b, y, $"LayerNorm n={n} ({p})");

                // BatchNorm: three constant channels of n values each, channels-first and channels-last.
                var bias = new float[] { 0.5f, -2f, 3.25f };
                var xc = new float[3 * n];
                for (int i = 0; i < xc.Length; i++) xc[i] = 1234f;
                var yc = new float[3 * n];
                if (n > 1)
                {
                    Functional.BatchNorm<float>(xc, [1, 3, n], yc, default, default, new float[] { 2, 3, 4 }, bias, training: true);
                    for (int i = 0; i < yc.Length; i++) Assert.Equal(bias[i / n], yc[i]);
                    Functional.BatchNorm<float>(xc, [n, 3], yc, default, default, new float[] { 2, 3, 4 }, bias, training: true);
                    for (int i = 0; i < yc.Length; i++) Assert.Equal(bias[i % 3], yc[i]);
                }
            });
        }
    }

    [Fact]
    public void Single_element_rows_give_the_bias_and_zero_gradients()
    {
        // pytorch#188372, #94288.
        var ln = new LayerNorm<float>(1);
        Guard.Span(ln.Weight!)[0] = 2.5f;
        Guard.Span(ln.Bias!)[0] = -0.75f;
        var x = Tensor.Create(new float[] { 3, -7, 1e6f, 0 }, [4, 1]);
        var y = ln.Forward(x);
        Assert.All(Guard.Span(y).ToArray(), v => Assert.Equal(-0.75f, v));
        var dx = ln.Backward(Tensor.Create(new float[] { 1, 2, -3, 4 }, [4, 1]));
        Assert.All(Guard.Span(dx).ToArray(), v => Assert.Equal(0f, v));
        Assert.Equal(0f, Guard.Span(ln.WeightGrad!)[0]);
        Assert.Equal(4f, Guard.Span(ln.BiasGrad!)[0]);
    }

    [Fact]
    public void Backward_twice_gives_identical_bits_and_zero_dy_gives_exact_zero()
    {
        var x = Data.F(Data.Normal(3, 6 * 50, 5, 3));
        var dy = Data.F(Data.Normal(4, 6 * 50));
        Paths.ForEach(p =>
        {
            var ln = new LayerNorm<float>(50);
            ln.Forward(x, [6, 50], new float[x.Length]);
            var a = new float[x.Length]; var b = new float[x.Length];
            ln.Backward(dy, x, [6, 50], a);
            ln.Backward(dy, x, [6, 50], b);
            Check.BitEqual<float>(a, b, $"LayerNorm dx twice ({p})");
            ln.Backward(new float[x.Length], x, [6, 50], a);
            Assert.All(a, v => Assert.Equal(0f, v));

            var bn = new BatchNorm1d<float>(6);
            bn.Forward(x, [5, 6, 10], new float[x.Length]);
            bn.Backward(dy, x, [5, 6, 10], a);
            bn.Backward(dy, x, [5, 6, 10], b);
            Check.BitEqual<float>(a, b, $"BatchNorm dx twice ({p})");
            bn.Backward(new float[x.Length], x, [5, 6, 10], a);
            Assert.All(a, v => Assert.Equal(0f, v));
        });
    }

    [Fact]
    public void Rows_are_independent_of_their_neighbours_bitwise()
    {
        // pytorch#149301: LN(x)[:-1] must equal LN(x[:-1]) bit for bit.
        var x = Data.F(Data.Normal(5, 9 * 77, 1, 2));
        Paths.ForEach(p =>
        {
            var all = new float[x.Length];
            Functional.LayerNorm<float>(x, [9, 77], [77], all);
            var fewer = new float[8 * 77];
            Functional.LayerNorm<float>(x.AsSpan(0, 8 * 77), [8, 77], [77], fewer);
            Check.BitEqual<float>(all.AsSpan(0, 8 * 77), fewer, $"rows 0..7 ({p})");
        });
    }
}
