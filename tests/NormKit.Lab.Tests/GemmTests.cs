using System.Numerics;
using System.Reflection;
using NormKit.Kernels;
using NormKit.Lab.Engine;

namespace NormKit.Lab.Tests;

/// <summary>
/// Gemm.Multiply against a reference written here: every transpose case, accumulate on and off,
/// edge sizes around the register tile (4 x 24 floats, 4 x 12 doubles) and the k block (320),
/// leading dimensions wider than the matrices, bitwise identity across thread counts, no
/// allocation in steady state, and argument checks that leave C untouched.
/// </summary>
[Collection("Lab threading")]   // sets the global thread count
public class GemmTests
{
    /// <summary>
    /// (m, n, k): 1 and odd sizes, just below / at / above the tile (m 3-5; n 23-25 and 47-49 for
    /// float, 11-13 for double), k across one and two k blocks (319-321, 641), and a product with
    /// several row blocks of packed A (400 rows at k 520: k blocks of 260, A blocks of 188 float or 92 double rows).
    /// </summary>
    public static TheoryData<int, int, int> Shapes() => new()
    {
        { 1, 1, 1 }, { 3, 5, 17 }, { 5, 3, 33 }, { 17, 33, 5 }, { 33, 100, 3 }, { 100, 17, 33 },
        { 4, 24, 8 }, { 3, 23, 9 }, { 5, 25, 7 }, { 8, 48, 16 }, { 7, 47, 15 }, { 9, 49, 17 },
        { 4, 12, 4 }, { 5, 11, 13 }, { 3, 13, 1 },
        { 6, 30, 319 }, { 6, 30, 320 }, { 6, 30, 321 }, { 13, 29, 641 },
        { 400, 60, 520 },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Float_products_match_the_reference_in_every_transpose_case(int m, int n, int k) => AllCases<float>(m, n, k);

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Double_products_match_the_reference_in_every_transpose_case(int m, int n, int k) => AllCases<double>(m, n, k);

    private static void AllCases<T>(int m, int n, int k) where T : unmanaged, IFloatingPointIeee754<T>
    {
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                foreach (bool acc in new[] { false, true })
                    Check<T>(ta, tb, m, n, k, acc, pad: 3 + (m + n + k) % 5, seed: m * 1000 + n * 10 + k);
    }

    /// <summary>
    /// Runs one product with leading dimensions pad wider than the matrices and compares it with
    /// <see cref="Reference"/>. Tolerance per element: (k + 2) eps (sum_p |a_ip b_pj| + |c_ij|),
    /// eps the type's machine epsilon. Each FMA, the add of each k block's sum into C and the
    /// add of the old C round once (relative error at most eps/2 each), so the computed value is
    /// within (k + 2)(eps/2)(sum |a b| + |c|) of the exact one to first order (the standard dot
    /// product bound); the factor 2 covers the second-order terms. The reference is accurate to
    /// a few ulps, far inside this. For float this is about 1e-5 relative at k = 100; for
    /// double about 2e-14.
    /// </summary>
    private static void Check<T>(bool ta, bool tb, int m, int n, int k, bool accumulate, int pad, int seed)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var rng = new Random(seed);
        int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
        var a = Random<T>(rng, Math.Max(1, (ta ? k : m) * lda));
        var b = Random<T>(rng, Math.Max(1, (tb ? n : k) * ldb));
        var c = Random<T>(rng, m * ldc);
        var c0 = (T[])c.Clone();
        Gemm.Multiply<T>(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
        double eps = double.CreateChecked(MachineEpsilon<T>());
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                var (exact, magnitude) = Reference(ta, tb, i, j, k, a, lda, b, ldb);
                double old = double.CreateChecked(c0[i * ldc + j]);
                if (accumulate) { exact += old; magnitude += Math.Abs(old); }
                double got = double.CreateChecked(c[i * ldc + j]);
                double tol = (k + 2) * eps * magnitude;
                Assert.True(Math.Abs(got - exact) <= tol,
                    $"{typeof(T).Name} transA={ta} transB={tb} acc={accumulate} {m}x{n}x{k}: C[{i},{j}] = {got}, reference {exact}, tolerance {tol}");
            }
            // The padding past column n is not C's: untouched.
            for (int j = n; j < ldc && i * ldc + j < c.Length; j++)
                Assert.Equal(c0[i * ldc + j], c[i * ldc + j]);
        }
    }

    private static T MachineEpsilon<T>() where T : IFloatingPointIeee754<T> => T.BitIncrement(T.One) - T.One;

    /// <summary>
    /// op(A)[i, :] . op(B)[:, j] in double with compensated summation (TwoSum, exact products
    /// by FMA), plus sum |a b| for the tolerance. Written out from the definition, independent
    /// of the code under test.
    /// </summary>
    private static (double Value, double Magnitude) Reference<T>(bool ta, bool tb, int i, int j, int k, T[] a, int lda, T[] b, int ldb)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        double s = 0, comp = 0, mag = 0;
        for (int p = 0; p < k; p++)
        {
            double x = double.CreateChecked(ta ? a[p * lda + i] : a[i * lda + p]);
            double y = double.CreateChecked(tb ? b[j * ldb + p] : b[p * ldb + j]);
            double prod = x * y, prodErr = Math.FusedMultiplyAdd(x, y, -prod);
            double t = s + prod, z = t - s;
            comp += (s - (t - z)) + (prod - z) + prodErr;
            s = t;
            mag += Math.Abs(prod);
        }
        return (s + comp, mag);
    }

    private static T[] Random<T>(Random rng, int length) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var x = new T[length];
        for (int i = 0; i < length; i++) x[i] = T.CreateChecked(rng.NextDouble() * 2 - 1);
        return x;
    }

    [Fact]
    public void Without_accumulate_C_is_overwritten_never_read()
    {
        // NaN in C must not leak into a product that does not accumulate.
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
            {
                const int m = 9, n = 30, k = 300;
                var rng = new Random(3);
                var a = Random<float>(rng, m * k);
                var b = Random<float>(rng, k * n);
                var c = Enumerable.Repeat(float.NaN, m * n).ToArray();
                Gemm.Multiply<float>(ta, tb, m, n, k, a, ta ? m : k, b, tb ? k : n, c, n, false);
                Assert.All(c, v => Assert.True(float.IsFinite(v)));
            }
    }

    [Fact]
    public void Empty_dimensions_work()
    {
        var a = new float[12];
        var b = new float[12];
        var c = Enumerable.Range(0, 12).Select(i => (float)i).ToArray();
        var c0 = (float[])c.Clone();
        // m or n zero: nothing to write.
        Gemm.Multiply<float>(false, false, 0, 3, 2, a, 2, b, 3, c, 3, false);
        Gemm.Multiply<float>(false, false, 3, 0, 2, a, 2, b, 1, c, 1, false);
        Assert.Equal(c0, c);
        // k zero: C = 0, or C unchanged when accumulating; the columns past n (ldc 4 > n 3) stay.
        Gemm.Multiply<float>(false, false, 3, 3, 0, a, 1, b, 3, c, 4, true);
        Assert.Equal(c0, c);
        Gemm.Multiply<float>(true, true, 3, 3, 0, ReadOnlySpan<float>.Empty, 3, ReadOnlySpan<float>.Empty, 1, c, 4, false);
        Assert.Equal(new float[] { 0, 0, 0, 3, 0, 0, 0, 7, 0, 0, 0, 11 }, c);
    }

    public static TheoryData<string, Action<float[]>, Type, string> BadArguments()
    {
        // A valid call is 4 x 5 x 6: A 4 x 6, B 6 x 5, C 4 x 5.
        var a = new float[24];
        var b = new float[30];
        return new()
        {
            { "m < 0", c => Gemm.Multiply<float>(false, false, -1, 5, 6, a, 6, b, 5, c, 5, false), typeof(ArgumentOutOfRangeException), "m" },
            { "n < 0", c => Gemm.Multiply<float>(false, false, 4, -5, 6, a, 6, b, 5, c, 5, false), typeof(ArgumentOutOfRangeException), "n" },
            { "k < 0", c => Gemm.Multiply<float>(false, false, 4, 5, -6, a, 6, b, 5, c, 5, false), typeof(ArgumentOutOfRangeException), "k" },
            { "lda < k", c => Gemm.Multiply<float>(false, false, 4, 5, 6, a, 5, b, 5, c, 5, false), typeof(ArgumentOutOfRangeException), "lda" },
            { "lda < m (transA)", c => Gemm.Multiply<float>(true, false, 4, 5, 6, a, 3, b, 5, c, 5, false), typeof(ArgumentOutOfRangeException), "lda" },
            { "ldb < n", c => Gemm.Multiply<float>(false, false, 4, 5, 6, a, 6, b, 4, c, 5, false), typeof(ArgumentOutOfRangeException), "ldb" },
            { "ldb < k (transB)", c => Gemm.Multiply<float>(false, true, 4, 5, 6, a, 6, b, 5, c, 5, false), typeof(ArgumentOutOfRangeException), "ldb" },
            { "ldc < n", c => Gemm.Multiply<float>(false, false, 4, 5, 6, a, 6, b, 5, c, 4, false), typeof(ArgumentOutOfRangeException), "ldc" },
            { "a too short", c => Gemm.Multiply<float>(false, false, 4, 5, 6, a.AsSpan(0, 23), 6, b, 5, c, 5, false), typeof(ArgumentException), "a" },
            { "a too short for lda", c => Gemm.Multiply<float>(false, false, 4, 5, 6, a, 7, b, 5, c, 5, false), typeof(ArgumentException), "a" },
            { "b too short", c => Gemm.Multiply<float>(false, false, 4, 5, 6, a, 6, b.AsSpan(0, 29), 5, c, 5, false), typeof(ArgumentException), "b" },
            { "c too short", c => Gemm.Multiply<float>(false, false, 4, 5, 6, a, 6, b, 5, c.AsSpan(0, 19), 5, false), typeof(ArgumentException), "c" },
            { "c overlaps a", c => Gemm.Multiply<float>(false, false, 2, 2, 2, c.AsSpan(0, 4), 2, b, 2, c.AsSpan(2, 4), 2, false), typeof(ArgumentException), "c" },
        };
    }

    [Theory]
    [MemberData(nameof(BadArguments))]
    public void Bad_arguments_throw_naming_the_argument_and_leave_C_untouched(string what, Action<float[]> call, Type expected, string param)
    {
        var c = Enumerable.Range(0, 20).Select(i => (float)i).ToArray();
        var c0 = (float[])c.Clone();
        var e = Assert.Throws(expected, () => call(c));
        Assert.Equal(param, ((ArgumentException)e).ParamName);
        Assert.Contains(param, e.Message);
        Assert.Equal(c0, c);
        _ = what;
    }

    [Fact]
    public void The_messages_give_the_expected_and_the_actual_value()
    {
        var e = Assert.Throws<ArgumentException>(() => Gemm.Multiply<float>(false, false, 4, 5, 6, new float[23], 6, new float[30], 5, new float[20], 5, false));
        Assert.Contains("23", e.Message);
        Assert.Contains("24", e.Message);
        var r = Assert.Throws<ArgumentOutOfRangeException>(() => Gemm.Multiply<float>(false, false, 4, 5, 6, new float[24], 5, new float[30], 5, new float[20], 5, false));
        Assert.Contains(">= 6", r.Message);
        Assert.Equal(5, r.ActualValue);
    }

    // ---- threads and allocation ----

    // WorkerPool lives in NormKit and is internal; this project cannot see it, so its two
    // counters are read by reflection (exact, unlike the process-wide allocation counter, which
    // also counts the test host's threads). A rename fails these tests loudly, not silently.
    // The getters become delegates, so reading them allocates nothing.
    private static readonly Func<long> s_parallelRuns = PoolCounter("ParallelRuns"), s_helperBytes = PoolCounter("HelperAllocatedBytes");

    private static Func<long> PoolCounter(string name)
    {
        var pool = typeof(NormKitThreading).Assembly.GetType("NormKit.Kernels.WorkerPool", throwOnError: true)!;
        var getter = pool.GetProperty(name, BindingFlags.Static | BindingFlags.NonPublic)?.GetMethod
            ?? throw new MissingMemberException("WorkerPool", name);
        return getter.CreateDelegate<Func<long>>();
    }

    /// <summary>Shapes large enough for two threads: split by columns (m &lt; n) and by rows (m &gt; n).</summary>
    public static TheoryData<bool, bool, int, int, int> ThreadedShapes() => new()
    {
        { false, false, 16, 2000, 144 }, { false, true, 32, 300, 700 }, { true, false, 300, 500, 40 }, { true, true, 500, 70, 300 },
        { false, false, 61, 61, 300 },
    };

    [Theory]
    [MemberData(nameof(ThreadedShapes))]
    public void One_and_two_threads_give_bitwise_identical_results(bool ta, bool tb, int m, int n, int k)
    {
        var rng = new Random(m + n + k);
        var a = Random<float>(rng, m * k);
        var b = Random<float>(rng, k * n);
        var c0 = Random<float>(rng, m * n);
        var ad = a.Select(x => (double)x).ToArray();
        var bd = b.Select(x => (double)x).ToArray();
        int saved = NormKitThreading.MaxDegreeOfParallelism;
        try
        {
            foreach (bool acc in new[] { false, true })
            {
                NormKitThreading.MaxDegreeOfParallelism = 1;
                var one = (float[])c0.Clone();
                Gemm.Multiply<float>(ta, tb, m, n, k, a, ta ? m : k, b, tb ? k : n, one, n, acc);
                var oneD = c0.Select(x => (double)x).ToArray();
                Gemm.Multiply<double>(ta, tb, m, n, k, ad, ta ? m : k, bd, tb ? k : n, oneD, n, acc);

                NormKitThreading.MaxDegreeOfParallelism = 2;
                long runs = s_parallelRuns();
                var two = (float[])c0.Clone();
                Gemm.Multiply<float>(ta, tb, m, n, k, a, ta ? m : k, b, tb ? k : n, two, n, acc);
                var twoD = c0.Select(x => (double)x).ToArray();
                Gemm.Multiply<double>(ta, tb, m, n, k, ad, ta ? m : k, bd, tb ? k : n, twoD, n, acc);
                Assert.True(s_parallelRuns() >= runs + 2, "the two-thread products used a helper thread");

                Assert.Equal(one.Select(BitConverter.SingleToInt32Bits), two.Select(BitConverter.SingleToInt32Bits));
                Assert.Equal(oneD.Select(BitConverter.DoubleToInt64Bits), twoD.Select(BitConverter.DoubleToInt64Bits));
            }
        }
        finally { NormKitThreading.MaxDegreeOfParallelism = saved; }
    }

    [Fact]
    public void Steady_state_allocates_nothing_on_one_or_two_threads()
    {
        var shapes = new (bool TA, bool TB, int M, int N, int K)[]
        {
            (false, false, 16, 2000, 144), (false, true, 16, 144, 3000), (true, false, 144, 2000, 16), (false, true, 60, 100, 784), (false, false, 7, 5, 3),
        };
        var rng = new Random(5);
        var a = Random<float>(rng, 450_000);
        var b = Random<float>(rng, 450_000);
        var c = new float[300_000];
        var ad = new double[450_000];
        var bd = new double[450_000];
        var cd = new double[300_000];
        int saved = NormKitThreading.MaxDegreeOfParallelism;
        try
        {
            foreach (int threads in new[] { 1, 2 })
            {
                NormKitThreading.MaxDegreeOfParallelism = threads;
                void All()
                {
                    foreach (var s in shapes)
                    {
                        Gemm.Multiply<float>(s.TA, s.TB, s.M, s.N, s.K, a, s.TA ? s.M : s.K, b, s.TB ? s.K : s.N, c, s.N, false);
                        Gemm.Multiply<double>(s.TA, s.TB, s.M, s.N, s.K, ad, s.TA ? s.M : s.K, bd, s.TB ? s.K : s.N, cd, s.N, true);
                    }
                }
                // Warm-up: grows the per-thread buffers of whichever threads take part. A helper that
                // first takes part later grows its buffers once, in one window; steady state is the
                // fewest bytes of three windows (an allocation per call shows in every one).
                for (int i = 0; i < 3; i++) All();
                long allocated = long.MaxValue;
                for (int window = 0; window < 3 && allocated > 0; window++)
                {
                    long helpers = s_helperBytes(), mine = GC.GetAllocatedBytesForCurrentThread();
                    for (int i = 0; i < 5; i++) All();
                    allocated = Math.Min(allocated, GC.GetAllocatedBytesForCurrentThread() - mine + (s_helperBytes() - helpers));
                }
                Assert.True(allocated == 0, $"{allocated} bytes allocated at {threads} thread(s)");
            }
        }
        finally { NormKitThreading.MaxDegreeOfParallelism = saved; }
    }
}
