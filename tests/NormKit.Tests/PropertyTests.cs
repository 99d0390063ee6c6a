using CsCheck;
using NormKit.Kernels;
using NormKit.Layers;
using NormKit.Tests.Reference;
using NormKit.Tests.Support;
using Check = NormKit.Tests.Support.Check;

namespace NormKit.Tests;

[CollectionDefinition("Threads", DisableParallelization = true)]
public class ThreadsCollection;

/// <summary>Properties over random shapes and data (CsCheck).</summary>
[Trait("Category", "Kernel")]
[Collection("Threads")]
public class PropertyTests
{
    private static readonly Gen<(int Rows, int Cols, int Seed, double Offset, double Scale)> Rows =
        Gen.Select(Gen.Int[1, 12], Gen.Int[1, 300], Gen.Int, Gen.Double[-1e3, 1e3], Gen.Double[0.01, 100]);

    [Fact]
    public void LayerNorm_output_has_mean_zero_and_variance_one_before_the_affine()
    {
        Rows.Sample(t =>
        {
            var x = Data.Normal(t.Seed, t.Rows * t.Cols, t.Offset, t.Scale);
            var y = new double[x.Length];
            Functional.LayerNorm<double>(x, [t.Rows, t.Cols], [t.Cols], y, eps: 1e-5);
            var (_, _, rstd) = Oracle.LayerNorm(x, t.Rows, t.Cols, null, null, 0);   // eps 0: the true 1/std
            for (int r = 0; r < t.Rows; r++)
            {
                var row = y.AsSpan(r * t.Cols, t.Cols).ToArray();
                double m = row.Average(), v = row.Select(a => (a - m) * (a - m)).Average();
                double trueVar = 1 / (rstd[r] * rstd[r]);
                Assert.True(Math.Abs(m) < 1e-9, $"row {r} mean {m}");
                if (t.Cols > 1) Assert.True(Math.Abs(v - trueVar / (trueVar + 1e-5)) < 1e-9, $"row {r} var {v}");
            }
        }, iter: 200);
    }

    [Fact]
    public void LayerNorm_is_invariant_to_a_shift_and_at_eps_zero_to_a_positive_scale()
    {
        Gen.Select(Rows, Gen.Double[-1e4, 1e4], Gen.Double[1e-3, 1e3]).Sample((t, shift, scale) =>
        {
            if (t.Cols < 2) return;
            var x = Data.Normal(t.Seed, t.Rows * t.Cols, t.Offset, t.Scale);
            var y = new double[x.Length];
            var ys = new double[x.Length];
            var yk = new double[x.Length];
            // The kernel is called directly so that eps can be 0 (the public API requires eps > 0).
            var m = new double[t.Rows]; var r = new double[t.Rows];
            RowKernel.Forward<double>(x, default, default, default, new RowLayout(t.Rows, t.Cols), 0, true, y, default, m, r);
            RowKernel.Forward<double>(x.Select(v => v + shift).ToArray(), default, default, default, new RowLayout(t.Rows, t.Cols), 0, true, ys, default, m, r);
            RowKernel.Forward<double>(x.Select(v => v * scale).ToArray(), default, default, default, new RowLayout(t.Rows, t.Cols), 0, true, yk, default, m, r);
            // Rounding x + shift in double moves each input by up to ulp(|offset| + |shift|) / 2, which
            // moves x_hat by about that over the row's std; the kernel's own error is a few ulps on top.
            // 1e-14 (about 90 double ulps) per unit of (|offset| + |shift|) / std bounds both with room;
            // a one-pass variance (E[x^2] - E[x]^2) is off by about 1e-16 * ((|offset| + |shift|) / std)^2
            // relative, far beyond it once the offset is large.
            Check.Close(y, ys, ShiftTolerance(t.Offset, shift, t.Scale), "shifted");
            Check.Close(y, yk, Tol.F64, "scaled");
        }, iter: 100);
    }

    [Fact]
    public void BatchNorm_channels_are_invariant_to_a_shift()
    {
        Gen.Select(Gen.Int[2, 6], Gen.Int[1, 20], Gen.Int[1, 40], Gen.Int, Gen.Double[-1e3, 1e3], Gen.Bool).Sample((n, c, s, seed, shift, cl) =>
        {
            var x = Data.Normal(seed, n * c * s, 0, 2);
            int[] shape = cl ? [n, s, c] : [n, c, s];
            var y = new double[x.Length]; var ys = new double[x.Length];
            Functional.BatchNorm<double>(x, shape, y, default, default, default, default, true, channelsLast: cl);
            Functional.BatchNorm<double>(x.Select(v => v + shift).ToArray(), shape, ys, default, default, default, default, true, channelsLast: cl);
            // The bound scales with the channel's own sqrt(var + eps), not the generator's 2: with
            // two values per channel the batch's spread can be far smaller (seen: 6e-4), and the
            // rounding of x + shift moves x_hat by ulp(shift) over that.
            for (int k = 0; k < c; k++)
            {
                int[] at = Enumerable.Range(0, x.Length).Where(i => (cl ? i % c : i / s % c) == k).ToArray();
                double mean = at.Average(i => x[i]), variance = at.Average(i => (x[i] - mean) * (x[i] - mean));
                Check.Close(at.Select(i => y[i]).ToArray(), at.Select(i => ys[i]).ToArray(), ShiftTolerance(0, shift, Math.Sqrt(variance + 1e-5)), $"shifted, channel {k}");
            }
        }, iter: 100);
    }

    // What double can deliver for a normalized segment of data with mean offset and standard
    // deviation std, shifted by shift (see the LayerNorm property above for the reasoning).
    private static Tol ShiftTolerance(double offset, double shift, double std) =>
        new(1e-12, 1e-14 * (1 + (Math.Abs(offset) + Math.Abs(shift)) / std));

    [Fact]
    public void LayerNorm_rows_do_not_depend_on_their_neighbours()
    {
        Gen.Select(Gen.Int[2, 40], Gen.Int[1, 300], Gen.Int, Gen.Int[0, 39]).Sample((rows, cols, seed, pick) =>
        {
            int r = pick % rows;
            var x = Data.F(Data.Normal(seed, rows * cols, 3, 2));
            var all = new float[x.Length];
            Functional.LayerNorm<float>(x, [rows, cols], [cols], all);
            var one = new float[cols];
            Functional.LayerNorm<float>(x.AsSpan(r * cols, cols), [1, cols], [cols], one);
            Check.BitEqual<float>(all.AsSpan(r * cols, cols), one, $"row {r}");
        }, iter: 100);
    }

    [Fact]
    public void Results_are_bitwise_identical_for_1_2_and_3_threads()
    {
        // Shapes large enough to span several chunks and gradient blocks: at least 40,000
        // elements, more than two chunks of 16K (smaller inputs run as one chunk).
        Gen.Select(Gen.Int[40, 400], Gen.Int[60, 700], Gen.Int).Sample((r, cols, seed) =>
        {
            int rows = Math.Max(r, (40_000 + cols - 1) / cols);
            var x = Data.F(Data.Normal(seed, rows * cols, 1, 2));
            var dy = Data.F(Data.Normal(seed + 1, rows * cols));
            float[][] Run(int threads)
            {
                float[][] r = null!;
                Paths.WithThreads(threads, () =>
                {
                    var ln = new LayerNorm<float>(cols);
                    var y = new float[x.Length]; var dx = new float[x.Length];
                    ln.Forward(x, [rows, cols], y);
                    ln.Backward(dy, x, [rows, cols], dx);
                    // The same data as BatchNorm, channels-first (N, C, S) and channels-last.
                    int c = 2 + Math.Abs(seed % 17), n = rows * cols / (c * 20), s = 20;
                    int len = n * c * s;
                    var bnF = new BatchNorm1d<float>(c);
                    var bnL = new BatchNorm1d<float>(c, channelsLast: true);
                    var yf = new float[len]; var dxf = new float[len]; var yl = new float[len]; var dxl = new float[len];
                    bnF.Forward(x.AsSpan(0, len), [n, c, s], yf);
                    bnF.Backward(dy.AsSpan(0, len), x.AsSpan(0, len), [n, c, s], dxf);
                    bnL.Forward(x.AsSpan(0, len), [n, s, c], yl);
                    bnL.Backward(dy.AsSpan(0, len), x.AsSpan(0, len), [n, s, c], dxl);
                    r = [y, dx, Guard.Span(ln.WeightGrad!).ToArray(), Guard.Span(ln.BiasGrad!).ToArray(),
                         yf, dxf, Guard.Span(bnF.RunningVar!).ToArray(), Guard.Span(bnF.WeightGrad!).ToArray(),
                         yl, dxl, Guard.Span(bnL.RunningVar!).ToArray(), Guard.Span(bnL.WeightGrad!).ToArray()];
                });
                return r;
            }
            var one = Run(1);
            foreach (int threads in new[] { 2, 3 })
            {
                long before = WorkerPool.ParallelRuns;
                var many = Run(threads);
                Assert.True(WorkerPool.ParallelRuns > before, "the multi-threaded run used helper threads");
                for (int k = 0; k < one.Length; k++) Check.BitEqual<float>(one[k], many[k], $"output {k} with {threads} threads");
            }
        }, iter: 12, threads: 1);
    }

    [Fact]
    public void Backward_run_twice_gives_the_same_bits()
    {
        Gen.Select(Gen.Int[1, 30], Gen.Int[1, 200], Gen.Int).Sample((rows, cols, seed) =>
        {
            var x = Data.Normal(seed, rows * cols, 2, 3);
            var dy = Data.Normal(seed + 1, rows * cols);
            var ln = new LayerNorm<double>(cols);
            ln.Forward(x, [rows, cols], new double[x.Length]);
            var a = new double[x.Length]; var b = new double[x.Length];
            ln.Backward(dy, x, [rows, cols], a);
            var dw1 = Guard.Span(ln.WeightGrad!).ToArray();
            ln.ZeroGrad();
            ln.Backward(dy, x, [rows, cols], b);
            Check.BitEqual<double>(a, b, "dx");
            Check.BitEqual<double>(dw1, Guard.Span(ln.WeightGrad!), "dWeight");
        }, iter: 100);
    }
}
