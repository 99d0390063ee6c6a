using NormKit.Kernels;
using NormKit.Layers;
using NormKit.Tests.Reference;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>The core's hazards and invariances, run through GroupNorm, InstanceNorm, RMSNorm and masked BatchNorm.</summary>
[Trait("Category", "Kernel")]
[Collection("Threads")]
public class FamilyPropertyTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GroupNorm_constant_group_gives_exactly_the_bias_and_large_offsets_stay_accurate(bool cl)
    {
        const int n = 2, c = 8, s = 13, g = 4;
        int[] shape = cl ? [n, s, c] : [n, c, s];
        var bias = Data.F(Data.Normal(1, c));
        var w = Data.F(Data.Normal(2, c, 1, 0.5));
        var constant = Enumerable.Repeat(1234f, n * c * s).ToArray();
        var offset = Data.RoundToFloat(Data.Normal(3, n * c * s, 2000, 1));
        var huge = Data.RoundToFloat(Data.Normal(4, n * c * s, 0, 1e30));
        Paths.ForEach(p =>
        {
            var y = new float[constant.Length];
            Functional.GroupNorm<float>(constant, shape, g, y, w, bias, channelsLast: cl);
            for (int i = 0; i < y.Length; i++) Assert.Equal(bias[cl ? i % c : i / s % c], y[i]);
            foreach (var (x, what) in new[] { (offset, "randn + 2000"), (huge, "values near 1e30") })
            {
                Functional.GroupNorm<float>(Data.F(x), shape, g, y, w, bias, channelsLast: cl);
                var (ey, _, _) = Oracle.GroupNorm(x, n, c, s, cl, g, Data.D(w), Data.D(bias), 1e-5);
                Check.Close(ey, y, Tol.F32, $"{what} ({p})");
            }
        });
    }

    [Fact]
    public void RMSNorm_handles_values_whose_squares_overflow_float()
    {
        var x = Data.RoundToFloat(Data.Normal(5, 3 * 40, 0, 1e30));
        var (ey, _) = Oracle.RmsNorm(x, 3, 40, null, 1e-6);
        Paths.ForEach(p =>
        {
            var y = new float[x.Length];
            Functional.RmsNorm<float>(Data.F(x), [3, 40], [40], y, eps: 1e-6);
            Check.Close(ey, y, Tol.F32, $"1e30 ({p})");
        });
    }

    [Fact]
    public void Family_results_are_bitwise_identical_for_1_2_and_3_threads()
    {
        const int n = 6, c = 32, s = 700;
        var x = Data.F(Data.Normal(6, n * c * s, 1, 2));
        var dy = Data.F(Data.Normal(7, x.Length));
        var mask = Enumerable.Range(0, n * s).Select(i => i % s < s - 37 * (i / s)).ToArray();
        List<float[]> Run(int threads)
        {
            var outputs = new List<float[]>();
            Paths.WithThreads(threads, () =>
            {
                foreach (bool cl in new[] { false, true })
                {
                    int[] shape = cl ? [n, s, c] : [n, c, s];
                    ChannelNorm<float>[] layers = [new GroupNorm<float>(8, c, channelsLast: cl), new InstanceNorm1d<float>(c, affine: true, channelsLast: cl)];
                    foreach (var layer in layers)
                    {
                        var y = new float[x.Length]; var dx = new float[x.Length];
                        layer.Forward(x, shape, y);
                        layer.Backward(dy, x, shape, dx);
                        outputs.AddRange([y, dx, Guard.Span(layer.WeightGrad!).ToArray()]);
                    }
                    var bn = new BatchNorm1d<float>(c, channelsLast: cl);
                    var ym = new float[x.Length]; var dxm = new float[x.Length];
                    bn.Forward(x, shape, ym, mask);
                    bn.Backward(dy, x, shape, dxm, mask);
                    outputs.AddRange([ym, dxm, Guard.Span(bn.RunningVar!).ToArray()]);
                }
                var rms = new RMSNorm<float>(c * 10);
                var yr = new float[x.Length]; var dxr = new float[x.Length];
                rms.Forward(x, [n * s / 10, c * 10], yr);
                rms.Backward(dy, x, [n * s / 10, c * 10], dxr);
                outputs.AddRange([yr, dxr, Guard.Span(rms.WeightGrad!).ToArray()]);
            });
            return outputs;
        }
        var one = Run(1);
        foreach (int threads in new[] { 2, 3 })
        {
            long before = WorkerPool.ParallelRuns;
            var many = Run(threads);
            Assert.True(WorkerPool.ParallelRuns > before, "helper threads were used");
            for (int k = 0; k < one.Count; k++) Check.BitEqual<float>(one[k], many[k], $"output {k}, {threads} threads");
        }
    }
}

/// <summary>The fused per-channel BatchNorm passes give the bits of the two-pass path.</summary>
[Trait("Category", "Kernel")]
[Collection("Threads")]
public class FusedChannelPassTests
{
    [Theory]
    [InlineData(4, 3, 1024)]
    [InlineData(2, 17, 1100)]
    [InlineData(3, 5, 3000)]
    public void Fused_and_two_pass_BatchNorm_agree_bitwise(int n, int c, int s)
    {
        var x = Data.F(Data.Normal(n + c + s, n * c * s, 3, 2));
        var dy = Data.F(Data.Normal(s, x.Length));
        float[][] Run()
        {
            var bn = new BatchNorm1d<float>(c);
            Data.F(Data.Normal(1, c, 1, 0.3)).CopyTo(Guard.Span(bn.Weight!));
            var y = new float[x.Length]; var dx = new float[x.Length];
            bn.Forward(x, [n, c, s], y);
            bn.Backward(dy, x, [n, c, s], dx);
            return [y, dx, Guard.Span(bn.RunningMean!).ToArray(), Guard.Span(bn.RunningVar!).ToArray(),
                Guard.Span(bn.WeightGrad!).ToArray(), Guard.Span(bn.BiasGrad!).ToArray()];
        }
        Paths.ForEach(p =>
        {
            long old = ChannelKernel.FuseLimitBytes;
            ChannelKernel.FuseLimitBytes = long.MaxValue;
            var fused = Run();
            ChannelKernel.FuseLimitBytes = old;
            ChannelKernel.FuseLimitBytes = 0;
            try
            {
                var twoPass = Run();
                for (int k = 0; k < fused.Length; k++) Check.BitEqual<float>(twoPass[k], fused[k], $"output {k} ({p})");
            }
            finally { ChannelKernel.FuseLimitBytes = old; }
        });
    }
}

/// <summary>GroupNorm's and InstanceNorm's forward fused per (sample, group) gives the bits of the two-pass path.</summary>
[Trait("Category", "Kernel")]
[Collection("Threads")]
public class FusedGroupPassTests
{
    [Theory]
    [InlineData(2, 8, 4, 100)]
    [InlineData(3, 6, 3, 37)]      // spans not a multiple of any width
    [InlineData(2, 12, 1, 33)]     // one group: LayerNorm over (C, S)
    [InlineData(2, 32, 8, 1100)]
    [InlineData(5, 4, 2, 1)]       // one element per plane: runs as columns, never fused
    public void Fused_and_two_pass_GroupNorm_and_InstanceNorm_agree_bitwise(int n, int c, int g, int s)
    {
        var x = Data.F(Data.Normal(n + c + g + s, n * c * s, 3, 2));
        var w = Data.F(Data.Normal(1, c, 1, 0.3));
        var b = Data.F(Data.Normal(2, c));
        // Outputs widened to double (exactly), with the saved statistics as they are.
        double[][] Run()
        {
            var y = new float[x.Length]; var mean = new double[n * g]; var rstd = new double[n * g];
            Functional.GroupNorm<float>(x, [n, c, s], g, y, w, b, 1e-5, saveMean: mean, saveRstd: rstd);
            var outputs = new List<double[]> { Data.D(y), mean, rstd };
            if (s > 1)
            {
                var yi = new float[x.Length]; var rm = new float[c]; var rv = Enumerable.Repeat(1f, c).ToArray();
                var im = new double[n * c]; var ir = new double[n * c];
                Functional.InstanceNorm<float>(x, [n, c, s], yi, rm, rv, w, b, training: true, saveMean: im, saveRstd: ir);
                outputs.AddRange([Data.D(yi), Data.D(rm), Data.D(rv), im, ir]);
            }
            return [.. outputs];
        }
        Paths.ForEach(p =>
        {
            long old = ChannelKernel.GroupFuseLimitBytes;
            try
            {
                ChannelKernel.GroupFuseLimitBytes = 0;
                var twoPass = Run();
                foreach (int threads in new[] { 1, 2 })
                    Paths.WithThreads(threads, () =>
                    {
                        ChannelKernel.GroupFuseLimitBytes = long.MaxValue;
                        var fused = Run();
                        ChannelKernel.GroupFuseLimitBytes = 0;
                        var again = Run();
                        for (int k = 0; k < fused.Length; k++)
                        {
                            Check.BitEqual<double>(twoPass[k], fused[k], $"output {k} fused ({p}, {threads} threads)");
                            Check.BitEqual<double>(twoPass[k], again[k], $"output {k} two-pass ({p}, {threads} threads)");
                        }
                    });
            }
            finally { ChannelKernel.GroupFuseLimitBytes = old; }
        });
    }
}

/// <summary>
/// The channels-last column path merges its per-block partials in parallel over columns, with
/// Chan's per-block factors taken once per block: the bits of the serial per-column merge.
/// </summary>
[Trait("Category", "Kernel")]
[Collection("Threads")]
public class ColumnMergeTests
{
    // Scratch of exactly the size the path asks for, holding what a pooled array may hold:
    // the results must not depend on it.
    private static double[] Stale(int length) => Enumerable.Repeat(double.NaN, length).ToArray();

    [Fact]
    public void Scratch_is_what_the_path_uses()
    {
        // BatchNorm1d [256, 1024]: 16 blocks of 16 rows, two rows of partials each; not 3 * N * C.
        var columns = new ChannelLayout(256, 1024, 1, false);
        Assert.Equal(2 * 16 * 1024, ChannelKernel.ChannelMomentsScratch(columns, masked: false));
        Assert.Equal(2 * 16 * 1024, ChannelKernel.ChannelGradSumsScratch(columns, masked: false));
        // A mask, or channels-first planes: per-plane statistics.
        Assert.Equal(3 * 256 * 1024, ChannelKernel.ChannelMomentsScratch(columns, masked: true));
        Assert.Equal(2 * 256 * 1024, ChannelKernel.ChannelGradSumsScratch(columns, masked: true));
        var planes = new ChannelLayout(8, 16, 49, false);
        Assert.Equal(3 * 8 * 16, ChannelKernel.ChannelMomentsScratch(planes, masked: false));
        Assert.Equal(2 * 8 * 16, ChannelKernel.ChannelGradSumsScratch(planes, masked: false));
    }

    [Theory]
    [InlineData(256, 1024)]   // 16 blocks of 16 rows
    [InlineData(1000, 64)]    // 4 blocks, the last one short
    [InlineData(40, 5001)]    // blocks of 3 rows, columns not a multiple of any width
    [InlineData(3000, 17)]
    [InlineData(100, 3)]      // one block
    public void Column_moments_and_sums_equal_the_serial_merge_of_their_blocks_bitwise(int rows, int c)
    {
        var x = Data.F(Data.Normal(rows + c, rows * c, 3, 2));
        var dy = Data.F(Data.Normal(c, x.Length));
        var about = Data.Normal(rows, c, 3, 0.1);
        int per = ChannelKernel.BlockRows(c);
        Paths.ForEach(p =>
        {
            // The specification: each block alone (one block: its partials as they are), on clean
            // scratch, then Reductions.ChanMerge per column and plain sums, serially in block order.
            double[] count = new double[c], mean = new double[c], m2 = new double[c], sum = new double[c], dot = new double[c];
            double[] bc = new double[c], bm = new double[c], bq = new double[c], bs = new double[c], bd = new double[c];
            for (int r0 = 0; r0 < rows; r0 += per)
            {
                int n = Math.Min(per, rows - r0);
                var l = new ChannelLayout(n, c, 1, false);
                var xb = x.AsSpan(r0 * c, n * c);
                ChannelKernel.ChannelMoments<float>(xb, l, default, bc, bm, bq, new double[ChannelKernel.ChannelMomentsScratch(l, false)]);
                ChannelKernel.ChannelGradSums<float>(dy.AsSpan(r0 * c, n * c), xb, l, default, about, bs, bd, new double[ChannelKernel.ChannelGradSumsScratch(l, false)]);
                for (int k = 0; k < c; k++)
                {
                    Reductions.ChanMerge(ref count[k], ref mean[k], ref m2[k], bc[k], bm[k], bq[k]);
                    sum[k] += bs[k]; dot[k] += bd[k];
                }
            }
            foreach (int threads in new[] { 1, 2 })
                Paths.WithThreads(threads, () =>
                {
                    var l = new ChannelLayout(rows, c, 1, false);
                    double[] ac = new double[c], am = new double[c], aq = new double[c], asum = new double[c], adot = new double[c];
                    ChannelKernel.ChannelMoments<float>(x, l, default, ac, am, aq, Stale(ChannelKernel.ChannelMomentsScratch(l, false)));
                    ChannelKernel.ChannelGradSums<float>(dy, x, l, default, about, asum, adot, Stale(ChannelKernel.ChannelGradSumsScratch(l, false)));
                    string at = $"[{rows},{c}] {p}, {threads} threads";
                    Check.BitEqual<double>(count, ac, $"count {at}");
                    Check.BitEqual<double>(mean, am, $"mean {at}");
                    Check.BitEqual<double>(m2, aq, $"M2 {at}");
                    Check.BitEqual<double>(sum, asum, $"sum {at}");
                    Check.BitEqual<double>(dot, adot, $"dot {at}");
                });
        });
    }
}

/// <summary>Normalize skips subtracting lo when every lo is +0 (eval): the bits of the full formula.</summary>
[Trait("Category", "Kernel")]
public class NormalizeLoTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Normalize_gives_the_bits_of_the_scalar_formula_whether_lo_is_skipped_or_not(bool cl)
    {
        const int n = 2, c = 3, s = 37;
        var l = new ChannelLayout(n, c, s, cl);
        var x = Data.F(Data.Normal(9, n * c * s, 0, 2));
        int Channel(int i) => cl ? i % c : i / s % c;
        // x - hi = -0 (x = -0, hi = 0) and +0 (x = hi); then b = -0 keeps the sign of d * a.
        float[] hi = [0f, 1.5f, -2f], a = [1.25f, -0.5f, 3f], b = [-0f, 0.25f, -1f];
        for (int i = 0; i < x.Length; i += 5) x[i] = Channel(i) == 0 ? -0f : hi[Channel(i)];
        x[1] = float.NaN; x[2] = float.PositiveInfinity; x[3] = float.NegativeInfinity; x[4] = -0f;
        float[][] los = [[0f, 0f, 0f], [-0f, 0f, 0f], [1e-9f, 0f, -3e-8f]];   // skipped, not skipped (-0), not skipped
        Paths.ForEach(p =>
        {
            foreach (var lo in los)
            {
                var y = new float[x.Length];
                ChannelKernel.Normalize<float>(x, l, default, perPlane: false, hi, lo, a, b, y);
                var expected = new float[x.Length];
                for (int i = 0; i < x.Length; i++)
                {
                    int k = Channel(i);
                    expected[i] = (x[i] - hi[k] - lo[k]) * a[k] + b[k];
                }
                Check.BitEqual<float>(expected, y, $"lo [{string.Join(", ", lo.Select(v => v.ToString("R")))}] ({p}, channels-last {cl})");
            }
        });
    }
}
