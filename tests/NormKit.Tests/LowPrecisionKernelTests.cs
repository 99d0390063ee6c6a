using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using NormKit.Kernels;
using NormKit.Layers;
using NormKit.Tests.Reference;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>
/// The direct Half/BFloat16 row path (16-bit rows through a per-thread float scratch row) gives
/// bitwise what the float kernel gives on the widened input, rounded once: the behaviour of the
/// earlier widen-compute-narrow path, kept here as the reference.
/// </summary>
[Collection("Threads")]
[Trait("Category", "Kernel")]
public class LowPrecisionKernelTests
{
    // ---------------- the reference: widen the whole input, run the float kernel, narrow ----------------

    private static float[] Widen<T>(T[] v) where T : unmanaged
    {
        var f = new float[v.Length];
        if (typeof(T) == typeof(Half)) TensorPrimitives.ConvertToSingle((Half[])(object)v, f);
        else for (int i = 0; i < v.Length; i++) f[i] = (float)((BFloat16[])(object)v)[i];
        return f;
    }

    private static T[] Narrow<T>(float[] f) where T : unmanaged
    {
        if (typeof(T) == typeof(Half)) { var h = new Half[f.Length]; TensorPrimitives.ConvertToHalf(f, h); return (T[])(object)h; }
        return (T[])(object)Array.ConvertAll(f, v => (BFloat16)v);
    }

    private static T[] Low<T>(double[] v) where T : unmanaged => Narrow<T>(Data.F(v));

    private static double[] D<T>(T[] v) where T : unmanaged => Array.ConvertAll(Widen(v), a => (double)a);

    private static Tol TolFor<T>() => typeof(T) == typeof(Half) ? Tol.F16 : Tol.BF16;

    public static TheoryData<int, bool> Shapes()
    {
        var d = new TheoryData<int, bool>();
        foreach (int cols in new[] { 1, 7, 64, 768, 4097 })
            foreach (bool many in new[] { false, true }) d.Add(cols, many);
        return d;
    }

    // Many rows: enough for several chunks in forward and several gradient blocks in backward.
    private static int RowsFor(int cols, bool many) => many ? Math.Max(9, 40_000 / cols) : 1;

    [Theory, MemberData(nameof(Shapes))]
    public void Half_row_norms_equal_the_widened_float_kernel_bitwise(int cols, bool many) => BitwiseAgainstWidening<Half>(cols, RowsFor(cols, many));

    [Theory, MemberData(nameof(Shapes))]
    public void BFloat16_row_norms_equal_the_widened_float_kernel_bitwise(int cols, bool many) => BitwiseAgainstWidening<BFloat16>(cols, RowsFor(cols, many));

    private static void BitwiseAgainstWidening<T>(int cols, int rows) where T : unmanaged
    {
        int n = rows * cols;
        // Activations around 300 +- 400: their squares overflow Half.
        var x = Low<T>(Data.Normal(cols, n, 300, 400));
        var dy = Low<T>(Data.Normal(cols + 1, n));
        var w = Data.F(Data.Normal(cols + 2, cols, 1, 0.3));
        var b = Data.F(Data.Normal(cols + 3, cols));
        float[] xf = Widen(x), dyf = Widen(dy);
        int[] shape = [rows, cols], norm = [cols];
        Paths.ForEach(p =>
        {
            // The reference, on this path, on one thread.
            var ly = new float[n]; var lm = new double[rows]; var lr = new double[rows];
            var ldx = new float[n]; var ldw = new float[cols]; var ldb = new float[cols];
            var ry = new float[n]; var rr = new double[rows]; var rdx = new float[n]; var rdw = new float[cols];
            Paths.WithThreads(1, () =>
            {
                Functional.LayerNorm<float>(xf, shape, norm, ly, w, b, 1e-5, lm, lr);
                Functional.LayerNormBackward<float>(dyf, xf, shape, norm, lm, lr, w, ldx, ldw, ldb);
                Functional.RmsNorm<float>(xf, shape, norm, ry, w, null, rr);
                Functional.RmsNormBackward<float>(dyf, xf, shape, norm, rr, w, rdx, rdw);
            });
            foreach (int threads in new[] { 1, 2 })
                Paths.WithThreads(threads, () =>
                {
                    string at = $"{typeof(T).Name} {rows}x{cols} {p} threads={threads}";
                    long parallelBefore = WorkerPool.ParallelRuns;
                    var y = new T[n]; var m = new double[rows]; var r = new double[rows];
                    Mixed.LayerNorm<T>(x, shape, norm, y, w, b, 1e-5, m, r);
                    Check.BitEqual<T>(Narrow<T>(ly), y, $"LayerNorm y {at}");
                    Check.BitEqual<double>(lm, m, $"LayerNorm mean {at}");
                    Check.BitEqual<double>(lr, r, $"LayerNorm rstd {at}");
                    var dx = new T[n]; var dw = new float[cols]; var db = new float[cols];
                    Mixed.LayerNormBackward<T>(dy, x, shape, norm, m, r, w, dx, dw, db);
                    Check.BitEqual<T>(Narrow<T>(ldx), dx, $"LayerNorm dx {at}");
                    Check.BitEqual<float>(ldw, dw, $"LayerNorm dWeight {at}");
                    Check.BitEqual<float>(ldb, db, $"LayerNorm dBias {at}");

                    var yr = new T[n]; var rs = new double[rows];
                    Mixed.RmsNorm<T>(x, shape, norm, yr, w, null, rs);
                    Check.BitEqual<T>(Narrow<T>(ry), yr, $"RMSNorm y {at}");
                    Check.BitEqual<double>(rr, rs, $"RMSNorm rstd {at}");
                    var dxr = new T[n]; var dwr = new float[cols];
                    Mixed.RmsNormBackward<T>(dy, x, shape, norm, rs, w, dxr, dwr);
                    Check.BitEqual<T>(Narrow<T>(rdx), dxr, $"RMSNorm dx {at}");
                    Check.BitEqual<float>(rdw, dwr, $"RMSNorm dWeight {at}");
                    // Many rows are several chunks: with two threads the helpers took part.
                    if (threads == 2 && rows > 1) Assert.True(WorkerPool.ParallelRuns > parallelBefore, $"no parallel run {at}");
                });
        });
    }

    // ---------------- BatchNorm eval ----------------

    public static TheoryData<int[], bool> BatchNormShapes() => new()
    {
        { [2, 3, 10], false },        // short planes
        { [2, 3, 9000], false },      // planes longer than a 16-bit block (4096)
        { [3, 5, 4, 7], false },
        { [4, 6, 5, 13], true },      // channels-last: rows of 13 channels
        { [2, 3, 3, 200], true },
        { [1, 1, 1], false },
    };

    [Theory, MemberData(nameof(BatchNormShapes))]
    public void BatchNorm_eval_in_Half_and_BFloat16_equals_the_widened_float_kernel_bitwise(int[] shape, bool channelsLast)
    {
        BatchNormEval<Half>(shape, channelsLast);
        BatchNormEval<BFloat16>(shape, channelsLast);
    }

    private static void BatchNormEval<T>(int[] shape, bool channelsLast) where T : unmanaged
    {
        int n = shape.Aggregate(1, (a, d) => a * d), c = channelsLast ? shape[^1] : shape[1];
        var x = Low<T>(Data.Normal(n, n, 300, 400));
        float[] xf = Widen(x);
        var w = Data.F(Data.Normal(c + 1, c, 1, 0.3)); var b = Data.F(Data.Normal(c + 2, c));
        var rm = Data.F(Data.Normal(c + 3, c, 250, 100)); var rv = Data.F(Data.Normal(c + 4, c, 1.6e5, 1e4));
        Paths.ForEach(p =>
        {
            var ey = new float[n]; var em = new double[c]; var er = new double[c];
            var rm0 = (float[])rm.Clone(); var rv0 = (float[])rv.Clone();
            Paths.WithThreads(1, () => Functional.BatchNorm<float>(xf, shape, ey, rm0, rv0, w, b, training: false, eps: 1e-5, channelsLast: channelsLast, saveMean: em, saveRstd: er));
            foreach (int threads in new[] { 1, 2 })
                Paths.WithThreads(threads, () =>
                {
                    string at = $"{typeof(T).Name} {Guard(shape)} last={channelsLast} {p} threads={threads}";
                    var y = new T[n]; var m = new double[c]; var r = new double[c];
                    var rm1 = (float[])rm.Clone(); var rv1 = (float[])rv.Clone();
                    var update = Mixed.BatchNorm<T>(x, shape, y, rm1, rv1, w, b, training: false, channelsLast: channelsLast, saveMean: m, saveRstd: r);
                    Assert.Equal(RunningStatsUpdate.None, update);
                    Check.BitEqual<T>(Narrow<T>(ey), y, $"BatchNorm eval y {at}");
                    Check.BitEqual<double>(em, m, $"BatchNorm eval saveMean {at}");
                    Check.BitEqual<double>(er, r, $"BatchNorm eval saveRstd {at}");
                    Check.BitEqual<float>(rm, rm1, $"running_mean untouched {at}");
                    Check.BitEqual<float>(rv, rv1, $"running_var untouched {at}");
                });
        });
        // Against the float64 reference: the running statistics normalize, squares never formed in Half.
        var y64 = new T[n];
        Mixed.BatchNorm<T>(x, shape, y64, rm, rv, w, b, training: false, channelsLast: channelsLast);
        var xd = D(x); var e = new double[n];
        int s = channelsLast ? 1 : shape[2..].Aggregate(1, (a, d) => a * d);
        for (int i = 0; i < n; i++)
        {
            int ch = channelsLast ? i % c : i / s % c;
            e[i] = (xd[i] - rm[ch]) / Math.Sqrt(rv[ch] + 1e-5) * w[ch] + b[ch];
        }
        Assert.All(D(y64), v => Assert.True(double.IsFinite(v)));
        Check.Close(e, D(y64), TolFor<T>(), $"BatchNorm eval y {typeof(T).Name} against float64");
    }

    private static string Guard(int[] shape) => "[" + string.Join(", ", shape) + "]";

    // ---------------- the layers ----------------

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Mixed_layers_equal_the_float_layers_on_widened_input_bitwise(int threads)
    {
        Layers<Half>(threads);
        Layers<BFloat16>(threads);
    }

    private static void Layers<T>(int threads) where T : unmanaged
    {
        const int rows = 24, cols = 768;
        int[] shape = [2, 12, cols];
        var x = Low<T>(Data.Normal(11, rows * cols, 300, 400)); var dy = Low<T>(Data.Normal(12, rows * cols));
        float[] xf = Widen(x), dyf = Widen(dy);
        var w = Data.F(Data.Normal(13, cols, 1, 0.3)); var b = Data.F(Data.Normal(14, cols));
        Paths.ForEach(p => Paths.WithThreads(threads, () =>
        {
            string at = $"{typeof(T).Name} {p} threads={threads}";
            var ln = new LayerNorm<float>(cols); var mln = new MixedLayerNorm<T>(cols);
            w.CopyTo(Span(ln.Weight!)); b.CopyTo(Span(ln.Bias!)); w.CopyTo(Span(mln.Weight!)); b.CopyTo(Span(mln.Bias!));
            var rms = new RMSNorm<float>(cols); var mrms = new MixedRMSNorm<T>(cols);
            w.CopyTo(Span(rms.Weight!)); w.CopyTo(Span(mrms.Weight!));
            foreach (var (f, m, name) in new (RowNorm<float>, MixedRowNorm<T>, string)[] { (ln, mln, "LayerNorm"), (rms, mrms, "RMSNorm") })
            {
                var yf = new float[xf.Length]; var y = new T[x.Length];
                f.Forward(xf, shape, yf); m.Forward(x, shape, y);
                Check.BitEqual<T>(Narrow<T>(yf), y, $"{name} y {at}");
                var dxf = new float[xf.Length]; var dx = new T[x.Length];
                for (int k = 0; k < 2; k++)   // twice: the parameter gradients accumulate
                {
                    f.Backward(dyf, xf, shape, dxf); m.Backward(dy, x, shape, dx);
                    Check.BitEqual<T>(Narrow<T>(dxf), dx, $"{name} dx {at}");
                }
                Check.BitEqual<float>(Span(f.WeightGrad!), Span(m.WeightGrad!), $"{name} dWeight {at}");
                if (f.BiasGrad is not null) Check.BitEqual<float>(Span(f.BiasGrad), Span(m.BiasGrad!), $"{name} dBias {at}");
                // The tensor overloads give the same.
                var ty = m.Forward(Tensor.Create(x, [2, 12, cols]));
                Check.BitEqual<T>(y, Span(ty), $"{name} tensor y {at}");
                var tdx = m.Backward(Tensor.Create(dy, [2, 12, cols]));
                Check.BitEqual<T>(dx, Span(tdx), $"{name} tensor dx {at}");
            }
        }));
    }

    private static Span<T> Span<T>(Tensor<T> t) => MemoryMarshal.CreateSpan(ref t.GetPinnableReference(), checked((int)t.FlattenedLength));

    [Fact]
    public void Mixed_layers_match_the_float64_reference_and_do_not_overflow_Half()
    {
        Reference<Half>();
        Reference<BFloat16>();
    }

    private static void Reference<T>() where T : unmanaged
    {
        const int rows = 5, cols = 768;
        // Mean 300, spread 400: values well above 256, whose squares exceed Half's 65504.
        var xl = Low<T>(Data.Normal(21, rows * cols, 300, 400)); var x = D(xl);
        var dyl = Low<T>(Data.Normal(22, rows * cols)); var dy = D(dyl);
        var w = Data.F(Data.Normal(23, cols, 1, 0.3)); var b = Data.F(Data.Normal(24, cols));
        var ln = new MixedLayerNorm<T>(cols, eps: 1e-5);
        w.CopyTo(Span(ln.Weight!)); b.CopyTo(Span(ln.Bias!));
        var y = new T[x.Length]; var dx = new T[x.Length];
        ln.Forward(xl, [rows, cols], y);
        ln.Backward(dyl, xl, [rows, cols], dx);
        Assert.All(D(y), v => Assert.True(double.IsFinite(v)));
        Check.Close(Oracle.LayerNorm(x, rows, cols, Data.D(w), Data.D(b), 1e-5).Y, D(y), TolFor<T>(), "LayerNorm y");
        var (edx, edw, edb) = Oracle.LayerNormBackward(dy, x, rows, cols, Data.D(w), 1e-5);
        Check.Close(edx, D(dx), TolFor<T>(), "LayerNorm dx");
        Check.Close(edw, Span(ln.WeightGrad!).ToArray(), Tol.F32, "LayerNorm dWeight (float)");
        Check.Close(edb, Span(ln.BiasGrad!).ToArray(), Tol.F32, "LayerNorm dBias (float)");

        var rms = new MixedRMSNorm<T>(cols, eps: 1e-6);
        w.CopyTo(Span(rms.Weight!));
        var yr = new T[x.Length]; var dxr = new T[x.Length];
        rms.Forward(xl, [rows, cols], yr);
        rms.Backward(dyl, xl, [rows, cols], dxr);
        Assert.All(D(yr), v => Assert.True(double.IsFinite(v)));
        Check.Close(Oracle.RmsNorm(x, rows, cols, Data.D(w), 1e-6).Y, D(yr), TolFor<T>(), "RMSNorm y");
        Check.Close(Oracle.RmsNormBackward(dy, x, rows, cols, Data.D(w), 1e-6), D(dxr), TolFor<T>(), "RMSNorm dx");
    }

    // ---------------- the conversions ----------------

    [Fact]
    public unsafe void Row_conversions_equal_the_scalar_casts_on_every_path()
    {
        // Every bfloat16 and Half bit pattern widens exactly; floats (random, ties, specials,
        // subnormals, overflow) narrow as the scalar casts. Lengths cover the vector loops and tails.
        var all = new ushort[65536 + 13];
        for (int i = 0; i < all.Length; i++) all[i] = (ushort)i;
        var rng = new Random(5);
        var floats = new List<float> { 0f, -0f, float.NaN, -float.NaN, float.PositiveInfinity, float.NegativeInfinity, float.Epsilon, -float.Epsilon,
            65504f, 65520f, 65519.99f, 1e-8f, 6e-8f, 3e38f, float.MaxValue, float.MinValue, 1f + MathF.Pow(2, -8), 1f + 3 * MathF.Pow(2, -8) };
        for (int i = 0; i < 5000; i++) floats.Add(BitConverter.Int32BitsToSingle(rng.Next() ^ (rng.Next(2) << 31)));
        for (int i = 0; i < 2000; i++) floats.Add((float)(rng.NextDouble() * 4 - 2));
        floats.Add(BitConverter.UInt32BitsToSingle(0x7F81_2345));   // a signalling NaN with a payload
        var src = floats.ToArray();
        foreach (var p in Paths.Available())
            foreach (var type in new[] { LowType.Half, LowType.BFloat16 })
            {
                var wide = new float[all.Length];
                fixed (ushort* s = all) fixed (float* d = wide) LowPrecision.Widen(type, s, d, all.Length, p);
                for (int i = 0; i < all.Length; i++)
                {
                    float e = type == LowType.Half ? (float)BitConverter.UInt16BitsToHalf(all[i]) : (float)BFloat16.FromRaw(all[i]);
                    if (BitConverter.SingleToUInt32Bits(e) != BitConverter.SingleToUInt32Bits(wide[i]) && !(float.IsNaN(e) && float.IsNaN(wide[i])))
                        Assert.Fail($"{type} widen {p}: 0x{all[i]:X4} gave {wide[i]:R}, expected {e:R}");
                }
                var narrow = new ushort[src.Length];
                fixed (float* s = src) fixed (ushort* d = narrow) LowPrecision.Narrow(type, s, d, src.Length, p);
                for (int i = 0; i < src.Length; i++)
                {
                    ushort e = type == LowType.Half ? BitConverter.HalfToUInt16Bits((Half)src[i]) : ((BFloat16)src[i]).RawValue;
                    Assert.True(e == narrow[i], $"{type} narrow {p}: {src[i]:R} (0x{BitConverter.SingleToUInt32Bits(src[i]):X8}) gave 0x{narrow[i]:X4}, expected 0x{e:X4}");
                }
            }
    }

    // ---------------- allocation ----------------

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Span_calls_on_16_bit_rows_allocate_nothing(int threads)
    {
        int[] shape = [64, 768];
        var xh = Low<Half>(Data.Normal(31, 64 * 768)); var dyh = Low<Half>(Data.Normal(32, xh.Length));
        var xb = Low<BFloat16>(Data.Normal(31, 64 * 768)); var dyb = Low<BFloat16>(Data.Normal(32, xb.Length));
        var yh = new Half[xh.Length]; var dxh = new Half[xh.Length];
        var yb = new BFloat16[xb.Length]; var dxb = new BFloat16[xb.Length];
        var w = new float[768]; var b = new float[768]; var dw = new float[768]; var db = new float[768];
        var mean = new double[64]; var rstd = new double[64];
        var ln = new MixedLayerNorm<Half>(768);
        var rms = new MixedRMSNorm<BFloat16>(768);
        Paths.WithThreads(threads, () =>
        {
            Assert.Equal(0, AllocationTests.Allocated(() => ln.Forward(xh, shape, yh)));
            Assert.Equal(0, AllocationTests.Allocated(() => ln.Backward(dyh, xh, shape, dxh)));
            Assert.Equal(0, AllocationTests.Allocated(() => rms.Forward(xb, shape, yb)));
            Assert.Equal(0, AllocationTests.Allocated(() => rms.Backward(dyb, xb, shape, dxb)));
            Assert.Equal(0, AllocationTests.Allocated(() => Mixed.LayerNorm<BFloat16>(xb, shape, [768], yb, w, b, 1e-5, mean, rstd)));
            Assert.Equal(0, AllocationTests.Allocated(() => Mixed.LayerNormBackward<BFloat16>(dyb, xb, shape, [768], mean, rstd, w, dxb, dw, db)));
            Assert.Equal(0, AllocationTests.Allocated(() => Mixed.RmsNorm<Half>(xh, shape, [768], yh, w)));
            var rm = new float[768]; var rv = Enumerable.Repeat(1f, 768).ToArray();
            Assert.Equal(0, AllocationTests.Allocated(() => Mixed.BatchNorm<Half>(xh, [64, 768, 1], yh, rm, rv, w, b, training: false)));
            Assert.Equal(0, AllocationTests.Allocated(() => Mixed.BatchNorm<BFloat16>(xb, [4, 16, 768], yb, rm.AsSpan(0, 16), rv.AsSpan(0, 16), w.AsSpan(0, 16), b.AsSpan(0, 16), training: false)));
            Assert.Equal(0, AllocationTests.Allocated(() => Mixed.BatchNorm<BFloat16>(xb, [64, 768], yb, rm, rv, w, b, training: false, channelsLast: true)));
        });
    }

    [Fact]
    public void Helper_threads_allocate_nothing_on_the_16_bit_path_even_for_a_longer_row()
    {
        // The calling thread rents every worker's scratch: a helper that meets a row longer than
        // any before allocates nothing, so the exact allocation count of a call cannot depend on
        // when a helper first takes part. Each round has longer rows than the last, until a
        // helper has run chunks of each kind of call (on a busy machine the caller may take them
        // all before a helper wakes).
        Paths.WithThreads(2, () =>
        {
            bool rows = false, backward = false, planes = false;
            for (int round = 0; round < 40 && !(rows && backward && planes); round++)
            {
                int cols = 20_000 + 1000 * round, n = 16;
                var x = Low<BFloat16>(Data.Normal(51, n * cols)); var dy = Low<BFloat16>(Data.Normal(52, n * cols));
                var y = new BFloat16[x.Length]; var dx = new BFloat16[x.Length];
                var w = new float[cols]; var mean = new double[n]; var rstd = new double[n];
                var bx = Low<Half>(Data.Normal(53, n * cols)); var by = new Half[bx.Length];
                long before = WorkerPool.HelperAllocatedBytes, chunks = WorkerPool.HelperChunks;
                Mixed.LayerNorm<BFloat16>(x, [n, cols], [cols], y, w, default, 1e-5, mean, rstd);
                rows |= WorkerPool.HelperChunks > chunks; chunks = WorkerPool.HelperChunks;
                Mixed.LayerNormBackward<BFloat16>(dy, x, [n, cols], [cols], mean, rstd, w, dx);   // without dWeight: a block per row
                backward |= WorkerPool.HelperChunks > chunks; chunks = WorkerPool.HelperChunks;
                Mixed.BatchNorm<Half>(bx, [n, 1, cols], by, new float[1], [1f], default, default, training: false);
                planes |= WorkerPool.HelperChunks > chunks;
                Assert.Equal(0, WorkerPool.HelperAllocatedBytes - before);
            }
            Assert.True(rows && backward && planes, $"helpers ran no chunk of: {(rows ? "" : "forward ")}{(backward ? "" : "backward ")}{(planes ? "" : "BatchNorm")}");
        });
    }

    // ---------------- validation ----------------

    [Fact]
    public void Functional_calls_name_the_argument_the_expected_and_the_actual_value()
    {
        var x = new Half[12]; var y = new Half[12];
        var e = Assert.Throws<ArgumentException>(() => Mixed.LayerNorm<Half>(x, [3, 4], [4], new Half[11]));
        Assert.Equal("output", e.ParamName);
        Assert.Contains("11", e.Message); Assert.Contains("12", e.Message);
        e = Assert.Throws<ArgumentException>(() => Mixed.LayerNorm<Half>(x, [3, 4], [4], y, new float[5]));
        Assert.Equal("weight", e.ParamName);
        Assert.Contains("5", e.Message); Assert.Contains("[4]", e.Message);
        e = Assert.Throws<ArgumentException>(() => Mixed.RmsNorm<BFloat16>(new BFloat16[12], [3, 4], [3], new BFloat16[12]));
        Assert.Equal("inputShape", e.ParamName);
        e = Assert.Throws<ArgumentException>(() => Mixed.LayerNormBackward<Half>(x, x, [3, 4], [4], new double[2], new double[3], default, y));
        Assert.Equal("mean", e.ParamName);
        Assert.Contains("2", e.Message); Assert.Contains("3", e.Message);
        e = Assert.Throws<ArgumentException>(() => Mixed.RmsNormBackward<Half>(x, x, [3, 4], [4], new double[3], default, y, new float[3]));
        Assert.Equal("gradWeight", e.ParamName);
        e = Assert.Throws<ArgumentException>(() => Mixed.LayerNorm<Half>(x, [3, 4], [4], x));
        Assert.Equal("output", e.ParamName);
        Assert.Contains("overlaps input", e.Message);
        var eps = Assert.Throws<ArgumentOutOfRangeException>(() => Mixed.LayerNorm<Half>(x, [3, 4], [4], y, eps: 0));
        Assert.Equal("eps", eps.ParamName);
        Assert.Throws<NotSupportedException>(() => Mixed.RmsNorm<float>(new float[4], [1, 4], [4], new float[4]));
        // BatchNorm eval on the direct path: the same checks as the float call.
        var bx = new Half[24]; var by = new Half[24];
        e = Assert.Throws<ArgumentException>(() => Mixed.BatchNorm<Half>(bx, [2, 3, 4], by, new float[3], new float[2], default, default, training: false));
        Assert.Equal("runningVar", e.ParamName); Assert.Contains("2", e.Message); Assert.Contains("3", e.Message);
        e = Assert.Throws<ArgumentException>(() => Mixed.BatchNorm<Half>(bx, [2, 3, 4], new Half[23], new float[3], new float[3], default, default, training: false));
        Assert.Equal("output", e.ParamName); Assert.Contains("23", e.Message); Assert.Contains("24", e.Message);
        e = Assert.Throws<ArgumentException>(() => Mixed.BatchNorm<Half>(bx, [2, 3, 4], by, new float[3], new float[3], new float[4], default, training: false));
        Assert.Equal("weight", e.ParamName);
        e = Assert.Throws<ArgumentException>(() => Mixed.BatchNorm<Half>(bx, [2, 3, 4], by, new float[3], default, default, default, training: false));
        Assert.Equal("runningVar", e.ParamName);
        var neg = Assert.ThrowsAny<ArgumentException>(() => Mixed.BatchNorm<Half>(bx, [2, 3, 4], by, new float[3], [1, -1, 1], default, default, training: false));
        Assert.Contains("-1", neg.Message);
        Assert.All(by, v => Assert.Equal((Half)0, v));
    }

    [Fact]
    public void Layer_validation_names_the_argument_and_a_throwing_call_changes_nothing()
    {
        Assert.Throws<NotSupportedException>(() => new MixedLayerNorm<float>(4));
        Assert.Equal("eps", Assert.Throws<ArgumentOutOfRangeException>(() => new MixedRMSNorm<Half>(4, eps: -1)).ParamName);
        Assert.Equal("normalizedShape", Assert.Throws<ArgumentException>(() => new MixedLayerNorm<Half>([4, 0])).ParamName);

        var ln = new MixedLayerNorm<BFloat16>(8);
        var x = Low<BFloat16>(Data.Normal(41, 24, 2, 3)); var dy = Low<BFloat16>(Data.Normal(42, 24));
        var y = new BFloat16[24]; var dx = new BFloat16[24];
        var io = Assert.Throws<InvalidOperationException>(() => ln.Backward(dy, x, [3, 8], dx));
        Assert.Contains("Forward first", io.Message);
        Span(ln.Weight!).Fill(1.5f);
        ln.Forward(x, [3, 8], y);
        ln.Backward(dy, x, [3, 8], dx);
        var dx0 = (BFloat16[])dx.Clone();
        var dw0 = Span(ln.WeightGrad!).ToArray(); var db0 = Span(ln.BiasGrad!).ToArray();

        // Failing forwards: the saved statistics and shape stay those of the last good forward.
        var other = Low<BFloat16>(Data.Normal(43, 32, -5, 9));
        // The last of them has a shape ([4, 8]) that the backward below must not see.
        var e = Assert.Throws<ArgumentException>(() => ln.Forward(other.AsSpan(0, 23), [3, 8], new BFloat16[24]));
        Assert.Equal("input", e.ParamName); Assert.Contains("23", e.Message); Assert.Contains("24", e.Message); Assert.Contains("[3, 8]", e.Message);
        e = Assert.Throws<ArgumentException>(() => ln.Forward(other, [4, 7], new BFloat16[28]));
        Assert.Equal("inputShape", e.ParamName); Assert.Contains("[4, 7]", e.Message); Assert.Contains("8", e.Message);
        e = Assert.Throws<ArgumentException>(() => ln.Forward(other, [4, 8], new BFloat16[31]));
        Assert.Equal("output", e.ParamName); Assert.Contains("31", e.Message); Assert.Contains("32", e.Message);
        // Failing backwards: nothing written, nothing accumulated.
        var dxBad = new BFloat16[24];
        e = Assert.Throws<ArgumentException>(() => ln.Backward(dy, x, [4, 8], dxBad));
        Assert.Equal("shape", e.ParamName); Assert.Contains("[4, 8]", e.Message); Assert.Contains("[3, 8]", e.Message);
        e = Assert.Throws<ArgumentException>(() => ln.Backward(dy.AsSpan(0, 16), x, [3, 8], dxBad));
        Assert.Equal("gradOutput", e.ParamName); Assert.Contains("16", e.Message); Assert.Contains("24", e.Message);
        e = Assert.Throws<ArgumentException>(() => ln.Backward(dy, dxBad, [3, 8], dxBad));
        Assert.Equal("gradInput", e.ParamName); Assert.Contains("overlaps input", e.Message);
        Assert.All(dxBad, v => Assert.Equal(0, v.RawValue));
        Assert.Equal(dw0, Span(ln.WeightGrad!).ToArray());
        Assert.Equal(db0, Span(ln.BiasGrad!).ToArray());
        var tio = Assert.Throws<InvalidOperationException>(() => ln.Backward(Tensor.Create(dy, [3, 8])));
        Assert.Contains("span overload", tio.Message);

        // The next backward is that of the last good forward.
        ln.ZeroGrad();
        Assert.All(Span(ln.WeightGrad!).ToArray(), v => Assert.Equal(0f, v));
        ln.Backward(dy, x, [3, 8], dx);
        Check.BitEqual<BFloat16>(dx0, dx, "dx after failing calls");
        Check.BitEqual<float>(dw0, Span(ln.WeightGrad!), "dWeight after failing calls");
        Check.BitEqual<float>(db0, Span(ln.BiasGrad!), "dBias after failing calls");
        Assert.Equal(["weight", "bias"], ln.Tensors.Select(t => t.Name));
        ln.ResetParameters();
        Assert.All(Span(ln.Weight!).ToArray(), v => Assert.Equal(1f, v));
        Assert.Null(new MixedRMSNorm<Half>(8).Bias);
        Assert.Null(new MixedLayerNorm<Half>(8, elementwiseAffine: false).Weight);
    }
}
