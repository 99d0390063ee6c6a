using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace NormKit.Kernels;

/// <summary>
/// The shape BatchNorm sees: N samples, C channels, S spatial elements per (sample, channel).
/// Channels-first stores x[n, c, s]; channels-last stores x[n, s, c], i.e. a (N*S) x C matrix
/// whose columns are the channels. Channels-first with S = 1 is the same memory as
/// channels-last, and is run as such.
/// </summary>
internal readonly record struct BatchLayout(int N, int C, int S, bool ChannelsLast)
{
    public long Count => (long)N * S;                      // elements per channel
    public bool AsColumns => ChannelsLast || S == 1;        // run as a (N*S) x C matrix
    public int Rows => N * S;
}

/// <summary>
/// BatchNorm's per-channel statistics, normalization and backward. Callers have validated
/// every length; this class trusts them.
/// </summary>
/// <remarks>
/// A segment is one channel: N*S elements, strided in memory. Statistics are computed as
/// partial (count, mean, M2) per block of memory (one (sample, channel) plane for
/// channels-first, one block of rows for channels-last; two passes over each block while it
/// is in cache) and merged with Chan's formula in block order, so the statistics read x once
/// from memory and are the same for any thread count. Everything accumulates in double.
/// </remarks>
internal static unsafe class BatchNormKernel
{
    private const int ChunkElements = 16 * 1024;

    private struct Job<T> where T : unmanaged
    {
        public T* X, Dy, Y, P0, P1, P2, P3, P4;  // P*: per-channel parameters of the element-wise pass
        public double* Part;                      // per block: two arrays of C doubles
        public double* Mean;                      // per-channel means (double) for the backward sums
        public BatchLayout L;
        public int PerChunk;                      // planes (channels-first) or rows (columns) per chunk
        public SimdPath Path;
    }

    private static int BlockRows(int c) => Math.Max(1, ChunkElements / c);

    /// <summary>
    /// Per-channel batch mean and M2 = sum((x - mean)^2), in double (biased variance = M2 / count).
    /// Reads x once from memory, twice from cache.
    /// </summary>
    public static void Statistics<T>(ReadOnlySpan<T> x, BatchLayout l, Span<double> mean, Span<double> m2) where T : unmanaged
    {
        mean.Clear(); m2.Clear();
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        int blocks = l.AsColumns ? (l.Rows + BlockRows(l.C) - 1) / BlockRows(l.C) : l.N * l.C;
        double[] part = ArrayPool<double>.Shared.Rent(2 * blocks * l.C);
        try
        {
            fixed (T* px = x)
            fixed (double* pp = part)
            {
                var job = new Job<T> { X = px, Part = pp, L = l, Path = path };
                if (l.AsColumns)
                {
                    Array.Clear(part, 0, 2 * blocks * l.C);
                    job.PerChunk = BlockRows(l.C);
                    WorkerPool.For(blocks, &job, &ColumnMomentsChunk<T>);
                    for (int c = 0; c < l.C; c++)
                    {
                        double cnt = 0, mu = 0, q = 0;
                        for (int b = 0; b < blocks; b++)
                        {
                            int rows = Math.Min(job.PerChunk, l.Rows - b * job.PerChunk);
                            Reductions.ChanMerge(ref cnt, ref mu, ref q, rows, pp[(2 * b) * l.C + c], pp[(2 * b + 1) * l.C + c]);
                        }
                        mean[c] = mu; m2[c] = q;
                    }
                }
                else
                {
                    // Plane (n, c) writes part[2*(n*C + c)] = mean, part[... + 1] = M2.
                    job.PerChunk = Math.Max(1, ChunkElements / l.S);
                    int chunks = (blocks + job.PerChunk - 1) / job.PerChunk;
                    WorkerPool.For(chunks, &job, &PlaneMomentsChunk<T>);
                    for (int c = 0; c < l.C; c++)
                    {
                        double cnt = 0, mu = 0, q = 0;
                        for (int n = 0; n < l.N; n++)
                        {
                            int p = n * l.C + c;
                            Reductions.ChanMerge(ref cnt, ref mu, ref q, l.S, pp[2 * p], pp[2 * p + 1]);
                        }
                        mean[c] = mu; m2[c] = q;
                    }
                }
            }
        }
        finally { ArrayPool<double>.Shared.Return(part); }
    }

    private static void PlaneMomentsChunk<T>(void* state, int chunk) where T : unmanaged
    {
        ref Job<T> j = ref Unsafe.AsRef<Job<T>>(state);
        int planes = j.L.N * j.L.C, s = j.L.S;
        int p0 = chunk * j.PerChunk, p1 = Math.Min(planes, p0 + j.PerChunk);
        for (int p = p0; p < p1; p++)
        {
            ref T xp = ref j.X[(nint)p * s];
            double mu = Reductions.Sum(ref xp, s, j.Path) / s;
            j.Part[2 * p] = mu;
            j.Part[2 * p + 1] = Reductions.SumSquaredDeviations(ref xp, s, mu, j.Path);
        }
    }

    private static void ColumnMomentsChunk<T>(void* state, int block) where T : unmanaged
    {
        ref Job<T> j = ref Unsafe.AsRef<Job<T>>(state);
        int c = j.L.C;
        int r0 = block * j.PerChunk, rows = Math.Min(j.PerChunk, j.L.Rows - r0);
        var mean = new Span<double>(j.Part + (nint)2 * block * c, c);
        var m2 = new Span<double>(j.Part + ((nint)2 * block + 1) * c, c);
        ref T x = ref j.X[(nint)r0 * c];
        Reductions.ColumnSums(ref x, rows, c, mean, j.Path);
        for (int k = 0; k < c; k++) mean[k] /= rows;
        Reductions.ColumnSquaredDeviations(ref x, rows, c, mean, m2, j.Path);
    }

    /// <summary>
    /// y = ((x - hi[c]) - lo[c]) * a[c] + b[c]: the element-wise pass of training (hi + lo =
    /// batch mean, a = rstd * weight) and of eval (running mean, a = weight / sqrt(running_var + eps)).
    /// The mean is split into hi + lo in T so that x - mean stays accurate when |mean| is
    /// far larger than the spread; subtracting it before scaling makes a constant channel
    /// give exactly b. Reads x once, writes y once.
    /// </summary>
    public static void Normalize<T>(ReadOnlySpan<T> x, BatchLayout l, ReadOnlySpan<T> hi, ReadOnlySpan<T> lo, ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> y)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        fixed (T* px = x, py = y, ph = hi, pl = lo, pa = a, pb = b)
        {
            var job = new Job<T> { X = px, Y = py, P0 = ph, P1 = pl, P2 = pa, P3 = pb, L = l, Path = path };
            RunElementwise(ref job, &NormalizeChunk<T>);
        }
    }

    /// <summary>
    /// dx for training (batch statistics): dx = (dy - k1[c] - ((x - hi[c]) - lo[c]) * k2[c]) * k3[c]
    /// with k1 = sum(dy)/n, k2 = sum((x - mean) * dy) * rstd^2 / n, k3 = rstd * weight.
    /// Reads x and dy once, writes dx once (overwritten).
    /// </summary>
    public static void InputGradTrain<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, BatchLayout l,
        ReadOnlySpan<T> hi, ReadOnlySpan<T> lo, ReadOnlySpan<T> k1, ReadOnlySpan<T> k2, ReadOnlySpan<T> k3, Span<T> dx)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        fixed (T* pdy = dy, px = x, pdx = dx, ph = hi, pl = lo, p1 = k1, p2 = k2, p3 = k3)
        {
            var job = new Job<T> { Dy = pdy, X = px, Y = pdx, P0 = ph, P1 = pl, P2 = p1, P3 = p2, P4 = p3, L = l, Path = path };
            RunElementwise(ref job, &GradTrainChunk<T>);
        }
    }

    /// <summary>dx for eval (running statistics are constants): dx = dy * k3[c]. Reads dy once, writes dx once.</summary>
    public static void InputGradEval<T>(ReadOnlySpan<T> dy, BatchLayout l, ReadOnlySpan<T> k3, Span<T> dx)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        fixed (T* pdy = dy, pdx = dx, p3 = k3)
        {
            var job = new Job<T> { Dy = pdy, Y = pdx, P4 = p3, L = l, Path = path };
            RunElementwise(ref job, &GradEvalChunk<T>);
        }
    }

    /// <summary>
    /// Per-channel sum(dy) and sum((x - m[c]) * dy), in double, merged in block order.
    /// Reads x and dy once.
    /// </summary>
    public static void GradSums<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, BatchLayout l, ReadOnlySpan<double> m, Span<double> sum, Span<double> dot)
        where T : unmanaged
    {
        sum.Clear(); dot.Clear();
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        int blocks = l.AsColumns ? (l.Rows + BlockRows(l.C) - 1) / BlockRows(l.C) : l.N * l.C;
        double[] part = ArrayPool<double>.Shared.Rent(2 * blocks * l.C);
        try
        {
            fixed (T* pdy = dy, px = x)
            fixed (double* pp = part, pm = m)
            {
                var job = new Job<T> { Dy = pdy, X = px, Part = pp, Mean = pm, L = l, Path = path };
                if (l.AsColumns)
                {
                    Array.Clear(part, 0, 2 * blocks * l.C);
                    job.PerChunk = BlockRows(l.C);
                    WorkerPool.For(blocks, &job, &ColumnGradSumsChunk<T>);
                    for (int b = 0; b < blocks; b++)
                        for (int c = 0; c < l.C; c++)
                        {
                            sum[c] += pp[(2 * b) * l.C + c];
                            dot[c] += pp[(2 * b + 1) * l.C + c];
                        }
                }
                else
                {
                    job.PerChunk = Math.Max(1, ChunkElements / l.S);
                    int chunks = (blocks + job.PerChunk - 1) / job.PerChunk;
                    WorkerPool.For(chunks, &job, &PlaneGradSumsChunk<T>);
                    for (int n = 0; n < l.N; n++)
                        for (int c = 0; c < l.C; c++)
                        {
                            int p = n * l.C + c;
                            sum[c] += pp[2 * p];
                            dot[c] += pp[2 * p + 1];
                        }
                }
            }
        }
        finally { ArrayPool<double>.Shared.Return(part); }
    }

    private static void PlaneGradSumsChunk<T>(void* state, int chunk) where T : unmanaged
    {
        ref Job<T> j = ref Unsafe.AsRef<Job<T>>(state);
        int planes = j.L.N * j.L.C, s = j.L.S;
        int p0 = chunk * j.PerChunk, p1 = Math.Min(planes, p0 + j.PerChunk);
        for (int p = p0; p < p1; p++)
        {
            Reductions.SumAndDot(ref j.Dy[(nint)p * s], ref j.X[(nint)p * s], s, j.Mean[p % j.L.C], j.Path, out double sum, out double dot);
            j.Part[2 * p] = sum;
            j.Part[2 * p + 1] = dot;
        }
    }

    private static void ColumnGradSumsChunk<T>(void* state, int block) where T : unmanaged
    {
        ref Job<T> j = ref Unsafe.AsRef<Job<T>>(state);
        int c = j.L.C;
        int r0 = block * j.PerChunk, rows = Math.Min(j.PerChunk, j.L.Rows - r0);
        Reductions.ColumnSumAndDot(ref j.Dy[(nint)r0 * c], ref j.X[(nint)r0 * c], rows, c, new ReadOnlySpan<double>(j.Mean, c),
            new Span<double>(j.Part + (nint)2 * block * c, c), new Span<double>(j.Part + ((nint)2 * block + 1) * c, c), j.Path);
    }

    // ---------------- element-wise passes ----------------
    // Channels-first: one (sample, channel) plane at a time with the channel's parameters
    // broadcast. Channels-last: one row at a time with the parameters loaded per column.
    // Both are the same generic body over a parameter source.

    private static void RunElementwise<T>(ref Job<T> job, delegate*<void*, int, void> body) where T : unmanaged
    {
        var l = job.L;
        int units = l.AsColumns ? l.Rows : l.N * l.C;
        int unitLength = l.AsColumns ? l.C : l.S;
        job.PerChunk = Math.Max(1, ChunkElements / unitLength);
        int chunks = (units + job.PerChunk - 1) / job.PerChunk;
        fixed (Job<T>* pj = &job) WorkerPool.For(chunks, pj, body);
    }

    private interface IParam<T, TV> where T : unmanaged
    {
        TV V(nuint i);
        T S(int i);
    }

    private readonly struct Broadcast<T, TV>(TV v, T s) : IParam<T, TV> where T : unmanaged
    {
        public TV V(nuint i) => v;
        public T S(int i) => s;
    }

    private readonly struct PerColumn<T, W, TV, TD>(T* p) : IParam<T, TV> where T : unmanaged where W : IWidth<T, TV, TD>
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public TV V(nuint i) => W.Load(ref *p, i);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public T S(int i) => p[i];
    }

    // Each op is one generic body; the switch picks the width, and the scalar path runs the
    // same body's scalar loop from the start (simd = false).
    private static void NormalizeChunk<T>(void* state, int chunk) where T : unmanaged, IFloatingPointIeee754<T>
    {
        ref Job<T> j = ref Unsafe.AsRef<Job<T>>(state);
        switch (j.Path)
        {
            case SimdPath.Vector512: NormalizeChunk<T, W512<T>, Vector512<T>, Vector512<double>>(ref j, chunk, true); break;
            case SimdPath.Vector256: NormalizeChunk<T, W256<T>, Vector256<T>, Vector256<double>>(ref j, chunk, true); break;
            case SimdPath.Vector128: NormalizeChunk<T, W128<T>, Vector128<T>, Vector128<double>>(ref j, chunk, true); break;
            default: NormalizeChunk<T, W128<T>, Vector128<T>, Vector128<double>>(ref j, chunk, false); break;
        }
    }

    private static void NormalizeChunk<T, W, TV, TD>(ref Job<T> j, int chunk, bool simd)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD>
    {
        var l = j.L;
        if (l.AsColumns)
        {
            var hi = new PerColumn<T, W, TV, TD>(j.P0); var lo = new PerColumn<T, W, TV, TD>(j.P1);
            var a = new PerColumn<T, W, TV, TD>(j.P2); var b = new PerColumn<T, W, TV, TD>(j.P3);
            int r0 = chunk * j.PerChunk, r1 = Math.Min(l.Rows, r0 + j.PerChunk);
            for (int r = r0; r < r1; r++)
                NormalizeSpan<T, W, TV, TD, PerColumn<T, W, TV, TD>>(ref j.X[(nint)r * l.C], ref j.Y[(nint)r * l.C], l.C, hi, lo, a, b, simd);
        }
        else
        {
            int p0 = chunk * j.PerChunk, p1 = Math.Min(l.N * l.C, p0 + j.PerChunk);
            for (int p = p0; p < p1; p++)
            {
                int c = p % l.C;
                T hc = j.P0[c], lc = j.P1[c], ac = j.P2[c], bc = j.P3[c];
                NormalizeSpan<T, W, TV, TD, Broadcast<T, TV>>(ref j.X[(nint)p * l.S], ref j.Y[(nint)p * l.S], l.S,
                    new(W.Splat(hc), hc), new(W.Splat(lc), lc), new(W.Splat(ac), ac), new(W.Splat(bc), bc), simd);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void NormalizeSpan<T, W, TV, TD, P>(ref T x, ref T y, int n, P hi, P lo, P a, P b, bool simd)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD> where P : IParam<T, TV>
    {
        int i = 0;
        if (simd)
            for (int step = W.Count; i <= n - step; i += step)
            {
                nuint u = (nuint)i;
                W.Store(W.Add(W.Mul(W.Sub(W.Sub(W.Load(ref x, u), hi.V(u)), lo.V(u)), a.V(u)), b.V(u)), ref y, u);
            }
        for (; i < n; i++)
            Unsafe.Add(ref y, i) = (Unsafe.Add(ref x, i) - hi.S(i) - lo.S(i)) * a.S(i) + b.S(i);
    }

    private static void GradTrainChunk<T>(void* state, int chunk) where T : unmanaged, IFloatingPointIeee754<T>
    {
        ref Job<T> j = ref Unsafe.AsRef<Job<T>>(state);
        switch (j.Path)
        {
            case SimdPath.Vector512: GradTrainChunk<T, W512<T>, Vector512<T>, Vector512<double>>(ref j, chunk, true); break;
            case SimdPath.Vector256: GradTrainChunk<T, W256<T>, Vector256<T>, Vector256<double>>(ref j, chunk, true); break;
            case SimdPath.Vector128: GradTrainChunk<T, W128<T>, Vector128<T>, Vector128<double>>(ref j, chunk, true); break;
            default: GradTrainChunk<T, W128<T>, Vector128<T>, Vector128<double>>(ref j, chunk, false); break;
        }
    }

    private static void GradTrainChunk<T, W, TV, TD>(ref Job<T> j, int chunk, bool simd)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD>
    {
        var l = j.L;
        if (l.AsColumns)
        {
            var hi = new PerColumn<T, W, TV, TD>(j.P0); var lo = new PerColumn<T, W, TV, TD>(j.P1);
            var k1 = new PerColumn<T, W, TV, TD>(j.P2); var k2 = new PerColumn<T, W, TV, TD>(j.P3); var k3 = new PerColumn<T, W, TV, TD>(j.P4);
            int r0 = chunk * j.PerChunk, r1 = Math.Min(l.Rows, r0 + j.PerChunk);
            for (int r = r0; r < r1; r++)
            {
                nint o = (nint)r * l.C;
                GradTrainSpan<T, W, TV, TD, PerColumn<T, W, TV, TD>>(ref j.Dy[o], ref j.X[o], ref j.Y[o], l.C, hi, lo, k1, k2, k3, simd);
            }
        }
        else
        {
            int p0 = chunk * j.PerChunk, p1 = Math.Min(l.N * l.C, p0 + j.PerChunk);
            for (int p = p0; p < p1; p++)
            {
                int c = p % l.C;
                T hc = j.P0[c], lc = j.P1[c], c1 = j.P2[c], c2 = j.P3[c], c3 = j.P4[c];
                nint o = (nint)p * l.S;
                GradTrainSpan<T, W, TV, TD, Broadcast<T, TV>>(ref j.Dy[o], ref j.X[o], ref j.Y[o], l.S,
                    new(W.Splat(hc), hc), new(W.Splat(lc), lc), new(W.Splat(c1), c1), new(W.Splat(c2), c2), new(W.Splat(c3), c3), simd);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GradTrainSpan<T, W, TV, TD, P>(ref T dy, ref T x, ref T dx, int n, P hi, P lo, P k1, P k2, P k3, bool simd)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD> where P : IParam<T, TV>
    {
        int i = 0;
        if (simd)
            for (int step = W.Count; i <= n - step; i += step)
            {
                nuint u = (nuint)i;
                TV t = W.Sub(W.Sub(W.Load(ref dy, u), k1.V(u)), W.Mul(W.Sub(W.Sub(W.Load(ref x, u), hi.V(u)), lo.V(u)), k2.V(u)));
                W.Store(W.Mul(t, k3.V(u)), ref dx, u);
            }
        for (; i < n; i++)
            Unsafe.Add(ref dx, i) = (Unsafe.Add(ref dy, i) - k1.S(i) - (Unsafe.Add(ref x, i) - hi.S(i) - lo.S(i)) * k2.S(i)) * k3.S(i);
    }

    private static void GradEvalChunk<T>(void* state, int chunk) where T : unmanaged, IFloatingPointIeee754<T>
    {
        ref Job<T> j = ref Unsafe.AsRef<Job<T>>(state);
        switch (j.Path)
        {
            case SimdPath.Vector512: GradEvalChunk<T, W512<T>, Vector512<T>, Vector512<double>>(ref j, chunk, true); break;
            case SimdPath.Vector256: GradEvalChunk<T, W256<T>, Vector256<T>, Vector256<double>>(ref j, chunk, true); break;
            case SimdPath.Vector128: GradEvalChunk<T, W128<T>, Vector128<T>, Vector128<double>>(ref j, chunk, true); break;
            default: GradEvalChunk<T, W128<T>, Vector128<T>, Vector128<double>>(ref j, chunk, false); break;
        }
    }

    private static void GradEvalChunk<T, W, TV, TD>(ref Job<T> j, int chunk, bool simd)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD>
    {
        var l = j.L;
        if (l.AsColumns)
        {
            var k3 = new PerColumn<T, W, TV, TD>(j.P4);
            int r0 = chunk * j.PerChunk, r1 = Math.Min(l.Rows, r0 + j.PerChunk);
            for (int r = r0; r < r1; r++)
                ScaleSpan<T, W, TV, TD, PerColumn<T, W, TV, TD>>(ref j.Dy[(nint)r * l.C], ref j.Y[(nint)r * l.C], l.C, k3, simd);
        }
        else
        {
            int p0 = chunk * j.PerChunk, p1 = Math.Min(l.N * l.C, p0 + j.PerChunk);
            for (int p = p0; p < p1; p++)
            {
                T c3 = j.P4[p % l.C];
                ScaleSpan<T, W, TV, TD, Broadcast<T, TV>>(ref j.Dy[(nint)p * l.S], ref j.Y[(nint)p * l.S], l.S, new(W.Splat(c3), c3), simd);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleSpan<T, W, TV, TD, P>(ref T dy, ref T dx, int n, P k3, bool simd)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD> where P : IParam<T, TV>
    {
        int i = 0;
        if (simd)
            for (int step = W.Count; i <= n - step; i += step)
            {
                nuint u = (nuint)i;
                W.Store(W.Mul(W.Load(ref dy, u), k3.V(u)), ref dx, u);
            }
        for (; i < n; i++)
            Unsafe.Add(ref dx, i) = Unsafe.Add(ref dy, i) * k3.S(i);
    }
}
