using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using NormKit.Kernels;

namespace NormKit.Lab.Engine;

/// <summary>
/// Matrix products for the lab's layers: C = op(A) op(B), or C += op(A) op(B), row-major with
/// leading dimensions, op(X) = X or its transpose. Float and double (the gradient checks run in
/// double).
/// </summary>
/// <remarks>
/// BLIS-style: k is cut into blocks of at most KC, each block of op(A) packed as MR-row slivers
/// and of op(B) as NR-column slivers; packing absorbs the transposes, so one register-blocked
/// microkernel (MR = 4 rows by NR = 3 vectors) serves all four cases. Threads take disjoint
/// chunks of C and never split the k reduction, and the k blocks depend on k alone, so every
/// element is the same sequence of operations for any thread count: results are bitwise
/// identical. Without AVX2 and FMA (other ISAs, or DOTNET_EnableAVX2=0) a scalar microkernel runs
/// over the same packing.
/// </remarks>
public static unsafe class Gemm
{
    /// <summary>
    /// C[m x n] (+)= op(A)[m x k] * op(B)[k x n]. A is m x k (lda &gt;= k), or k x m when
    /// <paramref name="transA"/> (lda &gt;= m); B is k x n (ldb &gt;= n), or n x k when
    /// <paramref name="transB"/> (ldb &gt;= k); C is m x n (ldc &gt;= n). Without
    /// <paramref name="accumulate"/> C is only written, never read.
    /// </summary>
    public static void Multiply<T>(bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<T> a, int lda, ReadOnlySpan<T> b, int ldb, Span<T> c, int ldc, bool accumulate)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Num.EnsureSupported<T>();
        CheckDim(m, nameof(m)); CheckDim(n, nameof(n)); CheckDim(k, nameof(k));
        long aSpan = CheckMatrix(a.Length, transA ? k : m, transA ? m : k, lda, nameof(a), nameof(lda), transA ? "A (k x m, transA)" : "A (m x k)");
        long bSpan = CheckMatrix(b.Length, transB ? n : k, transB ? k : n, ldb, nameof(b), nameof(ldb), transB ? "B (n x k, transB)" : "B (k x n)");
        long cSpan = CheckMatrix(c.Length, m, n, ldc, nameof(c), nameof(ldc), "C (m x n)");
        if (c[..(int)cSpan].Overlaps(a[..(int)aSpan]) || c[..(int)cSpan].Overlaps(b[..(int)bSpan]))
            throw new ArgumentException("c overlaps a or b: the product reads its inputs while it writes C.", nameof(c));
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            if (!accumulate)
                for (int i = 0; i < m; i++) c.Slice(i * ldc, n).Clear();
            return;
        }
        fixed (T* pa = a, pb = b, pc = c)
            Run(transA, transB, m, n, k, pa, lda, pb, ldb, pc, ldc, accumulate);
    }

    private static void CheckDim(int v, string name)
    {
        if (v < 0) throw new ArgumentOutOfRangeException(name, v, $"{name} must be >= 0 but was {v}.");
    }

    /// <summary>Checks a rows x cols matrix with leading dimension ld against its span; returns the elements it spans.</summary>
    private static long CheckMatrix(int length, int rows, int cols, int ld, string span, string ldName, string what)
    {
        if (ld < Math.Max(1, cols))
            throw new ArgumentOutOfRangeException(ldName, ld, $"{ldName} must be >= {Math.Max(1, cols)} (the width of {what}) but was {ld}.");
        long need = rows == 0 || cols == 0 ? 0 : (long)(rows - 1) * ld + cols;
        if (length < need)
            throw new ArgumentException($"{span} holds {length} elements but {what} with {rows} rows, {cols} columns and leading dimension {ld} needs {need}.", span);
        return need;
    }

    // ---- blocking ----

    /// <summary>Rows of the register tile.</summary>
    private const int MR = 4;
    /// <summary>Vectors across the register tile: NR = 3 x 8 floats or 3 x 4 doubles, 12 accumulators of the 16 AVX2 registers.</summary>
    private const int NV = 3;
    /// <summary>
    /// Largest k block: a packed B sliver (KC x NR, 30 KiB of float) stays about in L1 while every
    /// A sliver passes over it; 320 keeps k = 288 and 576 (the lab's 3 x 3 convolutions of 32 and
    /// 64 channels) in whole blocks of 288.
    /// </summary>
    private const int KcMax = 320;
    /// <summary>Bytes of packed A (MC x KC) kept in L2: MC grows as the k block shrinks.</summary>
    private const int ABlockBytes = 192 << 10;
    /// <summary>Columns of B packed at once: 4 slivers, each row of the block one sequential read.</summary>
    private const int NcMax = 96;
    /// <summary>Below this many multiply-adds (some 20 us on one core) the product stays on the calling thread: waking a helper costs microseconds.</summary>
    private const long ParallelWork = 1L << 20;
    /// <summary>Fewest rows or columns of C in a thread's chunk.</summary>
    private const int MinChunk = 192;

    /// <summary>The k block: k cut into equal blocks of at most KcMax, a function of k alone (bitwise reproducibility).</summary>
    private static int KBlock(int k) { int blocks = (k + KcMax - 1) / KcMax; return (k + blocks - 1) / blocks; }

    private static bool FastPath => Vector256.IsHardwareAccelerated && Fma.IsSupported;

    private struct Job<T> where T : unmanaged
    {
        public T* A, B, C;
        public nint Lda, Ldb, Ldc;
        public int M, N, K, Kc, ChunkSize;
        public bool TransA, TransB, Accumulate, SplitRows;
    }

    private static void Run<T>(bool transA, bool transB, int m, int n, int k,
        T* a, int lda, T* b, int ldb, T* c, int ldc, bool accumulate)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int nr = NV * Vector256<T>.Count;
        var job = new Job<T>
        {
            A = a, B = b, C = c, Lda = lda, Ldb = ldb, Ldc = ldc, M = m, N = n, K = k, Kc = KBlock(k),
            TransA = transA, TransB = transB, Accumulate = accumulate,
        };
        // Threads take C in row or column chunks: splitting columns repacks A in every chunk,
        // splitting rows repacks B, so split the side whose other operand is smaller. Up to 4
        // chunks per thread balance a thread slowed by other work, but each chunk keeps at least
        // MinChunk rows or columns so the repacking stays a few percent.
        int rowTiles = (m + MR - 1) / MR, colTiles = (n + nr - 1) / nr;
        job.SplitRows = m > n && rowTiles > 1 || colTiles == 1;
        int unit = job.SplitRows ? MR : nr, tiles = job.SplitRows ? rowTiles : colTiles;
        int threads = (long)m * n * k < ParallelWork ? 1 : Math.Min(NormKitThreading.MaxDegreeOfParallelism, tiles);
        int perThread = Math.Clamp(tiles / (threads * ((MinChunk + unit - 1) / unit)), 1, 4);
        int chunkTiles = (tiles + threads * perThread - 1) / (threads * perThread);
        job.ChunkSize = chunkTiles * unit;
        int chunks = (tiles + chunkTiles - 1) / chunkTiles;
        if (chunks == 1) RunChunk<T>(&job, 0);
        else WorkerPool.For(chunks, &job, &RunChunk<T>);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunChunk<T>(void* state, int chunk) where T : unmanaged, IFloatingPointIeee754<T>
    {
        ref Job<T> job = ref *(Job<T>*)state;
        int nr = NV * Vector256<T>.Count;
        int i0 = 0, i1 = job.M, j0 = 0, j1 = job.N;
        if (job.SplitRows) { i0 = chunk * job.ChunkSize; i1 = Math.Min(job.M, i0 + job.ChunkSize); }
        else { j0 = chunk * job.ChunkSize; j1 = Math.Min(job.N, j0 + job.ChunkSize); }

        int kc = job.Kc;
        int mc = Math.Min(ABlockBytes / (kc * sizeof(T)) / MR * MR, RoundUp(i1 - i0, MR));
        int nc = Math.Min(NcMax / nr * nr, RoundUp(j1 - j0, nr));
        T* pa = (T*)Buffers.A, pb = (T*)Buffers.B;
        bool fast = FastPath;
        T* tile = stackalloc T[MR * nr];

        // A block (mc x kc) packed once and kept in L2; B packed a block of slivers at a time,
        // each sliver used by every A sliver of the block while it sits in L1.
        for (int p0 = 0; p0 < job.K; p0 += kc)
        {
            int kcur = Math.Min(kc, job.K - p0);
            bool add = job.Accumulate || p0 > 0;
            for (int ic = i0; ic < i1; ic += mc)
            {
                int mcur = Math.Min(mc, i1 - ic);
                // Where k has more blocks, the packers prefetch the same rows and columns one k
                // block on, so the next block's operands arrive while this one computes.
                int nextK = fast && p0 + kc < job.K ? kc : 0;
                PackA(job.A, job.Lda, job.TransA, ic, mcur, p0, kcur, nextK, pa, fast);
                for (int jc = j0; jc < j1; jc += nc)
                {
                    int ncur = Math.Min(nc, j1 - jc);
                    int ahead = fast && p0 == 0 ? Math.Clamp(j1 - jc - nc, 0, nc) : 0;
                    PackB(job.B, job.Ldb, job.TransB, p0, kcur, jc, ncur, ahead, nextK, pb, fast);
                    for (int jr = 0; jr < ncur; jr += nr)
                    {
                        T* bs = pb + (nint)jr * kcur;
                        int nrCur = Math.Min(nr, ncur - jr);
                        for (int ir = 0; ir < mcur; ir += MR)
                        {
                            T* cs = job.C + (ic + ir) * job.Ldc + jc + jr;
                            int mrCur = Math.Min(MR, mcur - ir);
                            if (fast) Kernel(kcur, pa + (nint)ir * kcur, bs, cs, job.Ldc, add, mrCur, nrCur);
                            else ScalarKernel(kcur, pa + (nint)ir * kcur, bs, cs, job.Ldc, add, mrCur, nrCur, tile);
                        }
                    }
                }
            }
        }
    }

    private static int RoundUp(int v, int to) => (v + to - 1) / to * to;

    /// <summary>
    /// Per-thread packing buffers, sized for the largest blocks of either type on a thread's
    /// first product and kept: steady state allocates nothing. Pinned (the packers hold raw
    /// pointers) and 64-byte aligned, with room past the end for the aligning.
    /// </summary>
    private static class Buffers
    {
        [ThreadStatic] private static byte[]? t_a, t_b;

        public static byte* A => Get(ref t_a, ABlockBytes);
        public static byte* B => Get(ref t_b, NcMax * KcMax * sizeof(double));

        private static byte* Get(ref byte[]? buffer, int bytes)
        {
            buffer ??= GC.AllocateUninitializedArray<byte>(bytes + 64, pinned: true);
            nint p = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buffer));
            return (byte*)((p + 63) & ~(nint)63);
        }
    }

    // ---- packing ----

    /// <summary>
    /// Packs rows [i0, i0 + mc) x columns [p0, p0 + kc) of op(A) as MR-row slivers: sliver s
    /// holds op(A)[i0 + s MR + r, p0 + p] at s MR kc + p MR + r, rows past the edge zero.
    /// Prefetches the same rows nextK columns on (0: none).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackA<T>(T* a, nint lda, bool trans, int i0, int mc, int p0, int kc, int nextK, T* dst, bool fast)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int line = 64 / sizeof(T);
        for (int s = 0; s < mc; s += MR, dst += MR * kc)
        {
            int rows = Math.Min(MR, mc - s), p = 0;
            if (trans)
            {
                // op(A) rows are contiguous in A: one short copy per p.
                T* src = a + (nint)p0 * lda + i0 + s;
                if (fast && rows == MR)
                    for (; p < kc; p++)
                    {
                        if (nextK > 0) Sse.Prefetch0(src + (p + nextK) * lda);
                        if (sizeof(T) == 4) Vector128.Store(Vector128.Load(src + p * lda), dst + p * MR);
                        else Vector256.Store(Vector256.Load(src + p * lda), dst + p * MR);
                    }
                for (; p < kc; p++)
                    for (int r = 0; r < MR; r++) dst[p * MR + r] = r < rows ? src[p * lda + r] : T.Zero;
            }
            else
            {
                // op(A) rows are rows of A: gather MR of them, transposing in registers.
                T* src = a + (nint)(i0 + s) * lda + p0;
                if (fast && rows == MR)
                    for (int w = Vector256<T>.Count; p + w <= kc; p += w)
                    {
                        if (nextK > 0 && p % line == 0)
                            for (int r = 0; r < MR; r++) Sse.Prefetch0(src + r * lda + p + nextK);
                        Transpose4xW(src + p, lda, dst + p * MR);
                    }
                for (; p < kc; p++)
                    for (int r = 0; r < MR; r++) dst[p * MR + r] = r < rows ? src[r * lda + p] : T.Zero;
            }
        }
    }

    /// <summary>
    /// Packs rows [p0, p0 + kc) x columns [j0, j0 + nc) of op(B) as NR-column slivers: sliver s
    /// holds op(B)[p0 + p, j0 + s NR + j] at s NR kc + p NR + j, columns past the edge zero.
    /// Prefetches the source of the next <paramref name="ahead"/> columns (the next block), and of
    /// the same columns nextK rows on (the next k block), so that memory works while the kernels
    /// compute this block.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackB<T>(T* b, nint ldb, bool trans, int p0, int kc, int j0, int nc, int ahead, int nextK, T* dst, bool fast)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int w = Vector256<T>.Count, nr = NV * w, line = 64 / sizeof(T);
        int full = fast ? nc / nr : 0;
        if (!trans)
        {
            // Row by row: each row of the block is one sequential read.
            T* src = b + (nint)p0 * ldb + j0;
            for (int p = 0; p < kc; p++, src += ldb)
            {
                for (int q = 0; q < ahead; q += line) Sse.Prefetch0(src + nc + q);
                if (ahead > 0) Sse.Prefetch0(src + nc + ahead - 1);
                if (nextK > 0)
                {
                    for (int q = 0; q < nc; q += line) Sse.Prefetch0(src + nextK * ldb + q);
                    Sse.Prefetch0(src + nextK * ldb + nc - 1);
                }
                for (int f = 0; f < full; f++)
                    for (int v = 0; v < NV; v++) Vector256.Store(Vector256.Load(src + f * nr + v * w), dst + (nint)f * nr * kc + p * nr + v * w);
            }
        }
        else
        {
            // op(B) columns are rows of B: transpose W x W blocks of them in registers, W rows at
            // a time along their whole length (few streams for the hardware prefetcher).
            for (int f = 0; f < full; f++)
            {
                for (int v = 0; v < NV; v++)
                {
                    T* src = b + (nint)(j0 + f * nr + v * w) * ldb + p0, d = dst + (nint)f * nr * kc + v * w;
                    int nextRows = Math.Clamp(ahead - f * nr - v * w, 0, w), p = 0;
                    for (; p + w <= kc; p += w)
                    {
                        if (p % line == 0)
                        {
                            for (int r = 0; r < nextRows; r++) Sse.Prefetch0(src + (nc + r) * ldb + p);
                            if (nextK > 0)
                                for (int r = 0; r < w; r++) Sse.Prefetch0(src + r * ldb + p + nextK);
                        }
                        TransposeWxW(src + p, ldb, d + p * nr, nr);
                    }
                    for (; p < kc; p++)
                        for (int j = 0; j < w; j++) d[p * nr + j] = src[j * ldb + p];
                }
            }
        }
        // The edge sliver, and every sliver without vectors.
        for (int s = full * nr; s < nc; s += nr)
        {
            int cols = Math.Min(nr, nc - s);
            T* d = dst + (nint)s * kc;
            if (fast && !trans)
            {
                // Masked loads read only the columns B has and give zeros for the rest.
                var lane = Vector256<T>.Indices;
                var m0 = Vector256.LessThan(lane, Vector256.Create(T.CreateTruncating(cols)));
                var m1 = Vector256.LessThan(lane, Vector256.Create(T.CreateTruncating(cols - w)));
                var m2 = Vector256.LessThan(lane, Vector256.Create(T.CreateTruncating(cols - 2 * w)));
                T* src = b + (nint)p0 * ldb + j0 + s;
                for (int p = 0; p < kc; p++, src += ldb)
                {
                    Vector256.Store(MaskLoad(src, m0), d + p * nr);
                    Vector256.Store(MaskLoad(src + w, m1), d + p * nr + w);
                    Vector256.Store(MaskLoad(src + 2 * w, m2), d + p * nr + 2 * w);
                }
                continue;
            }
            int j0v = 0;
            if (fast)
            {
                // Zeros first, then whole groups of W rows by transposes, the rest one by one.
                for (int i = 0; i < kc * nr; i += w) Vector256.Store(Vector256<T>.Zero, d + i);
                T* src = b + (nint)(j0 + s) * ldb + p0;
                for (j0v = 0; j0v + w <= cols; j0v += w)
                    for (int p = 0; p + w <= kc; p += w) TransposeWxW(src + j0v * ldb + p, ldb, d + p * nr + j0v, nr);
                for (int j = 0; j < j0v; j++)
                    for (int p = kc / w * w; p < kc; p++) d[p * nr + j] = src[j * ldb + p];
            }
            for (int j = j0v; j < (fast ? cols : nr); j++)
            {
                T* src = trans ? b + (j0 + s + j) * ldb + p0 : b + p0 * ldb + j0 + s + j;
                nint step = trans ? 1 : ldb;
                if (j < cols)
                    for (int p = 0; p < kc; p++) d[p * nr + j] = src[p * step];
                else
                    for (int p = 0; p < kc; p++) d[p * nr + j] = T.Zero;
            }
        }
    }

    /// <summary>dst[q ldd + r] = src[r lds + q] for a W x W block (8 x 8 float, 4 x 4 double).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TransposeWxW<T>(T* src, nint lds, T* dst, nint ldd) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) Transpose8x8((float*)src, lds, (float*)dst, ldd);
        else Transpose4x4((double*)src, lds, (double*)dst, ldd);
    }

    /// <summary>Four rows of W elements (stride lds) to W groups of four, contiguous at dst: the MR = 4 gather of A.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose4xW<T>(T* src, nint lds, T* dst) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) Transpose4x8((float*)src, lds, (float*)dst);
        else Transpose4x4((double*)src, lds, (double*)dst, 4);
    }

    // One method per type: a generic body holding both is too large for the JIT to inline.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8(float* s, nint lds, float* d, nint ldd)
    {
        Vector256<float> r0 = Vector256.Load(s), r1 = Vector256.Load(s + lds), r2 = Vector256.Load(s + 2 * lds), r3 = Vector256.Load(s + 3 * lds);
        Vector256<float> r4 = Vector256.Load(s + 4 * lds), r5 = Vector256.Load(s + 5 * lds), r6 = Vector256.Load(s + 6 * lds), r7 = Vector256.Load(s + 7 * lds);
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1); var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5); var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        // u0 holds column 0 of rows 0-3 and column 4 of rows 0-3; u4 the same of rows 4-7; and so on.
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE); var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE); var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Vector256.Store(Avx.Permute2x128(u0, u4, 0x20), d); Vector256.Store(Avx.Permute2x128(u1, u5, 0x20), d + ldd);
        Vector256.Store(Avx.Permute2x128(u2, u6, 0x20), d + 2 * ldd); Vector256.Store(Avx.Permute2x128(u3, u7, 0x20), d + 3 * ldd);
        Vector256.Store(Avx.Permute2x128(u0, u4, 0x31), d + 4 * ldd); Vector256.Store(Avx.Permute2x128(u1, u5, 0x31), d + 5 * ldd);
        Vector256.Store(Avx.Permute2x128(u2, u6, 0x31), d + 6 * ldd); Vector256.Store(Avx.Permute2x128(u3, u7, 0x31), d + 7 * ldd);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose4x8(float* s, nint lds, float* d)
    {
        Vector256<float> r0 = Vector256.Load(s), r1 = Vector256.Load(s + lds), r2 = Vector256.Load(s + 2 * lds), r3 = Vector256.Load(s + 3 * lds);
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1); var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        // u0 holds columns 0 and 4, u1 1 and 5, u2 2 and 6, u3 3 and 7.
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE); var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        Vector256.Store(Avx.Permute2x128(u0, u1, 0x20), d); Vector256.Store(Avx.Permute2x128(u2, u3, 0x20), d + 8);
        Vector256.Store(Avx.Permute2x128(u0, u1, 0x31), d + 16); Vector256.Store(Avx.Permute2x128(u2, u3, 0x31), d + 24);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose4x4(double* s, nint lds, double* d, nint ldd)
    {
        Vector256<double> r0 = Vector256.Load(s), r1 = Vector256.Load(s + lds), r2 = Vector256.Load(s + 2 * lds), r3 = Vector256.Load(s + 3 * lds);
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1); var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        Vector256.Store(Avx.Permute2x128(t0, t2, 0x20), d); Vector256.Store(Avx.Permute2x128(t1, t3, 0x20), d + ldd);
        Vector256.Store(Avx.Permute2x128(t0, t2, 0x31), d + 2 * ldd); Vector256.Store(Avx.Permute2x128(t1, t3, 0x31), d + 3 * ldd);
    }

    // ---- microkernels ----

    /// <summary>
    /// C[mr x nr] (+)= A sliver (kc x MR) * B sliver (kc x NR) in 12 vector accumulators; add: C +=
    /// rather than C =. Edge tiles store through lane masks. Nothing after the loop may call out
    /// (a stackalloc's zeroing did): the JIT then spills every accumulator inside the loop.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel<T>(nint kc, T* a, T* b, T* c, nint ldc, bool add, int mr, int nr)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        nint w = Vector256<T>.Count;
        // The next row tile's C lines (first and last element of each row): where k is short, its
        // loads and read-for-ownership would otherwise stall the stores of the next call.
        T* q = c + MR * ldc;
        Sse.Prefetch0(q); Sse.Prefetch0(q + NV * w - 1); Sse.Prefetch0(q + ldc); Sse.Prefetch0(q + ldc + NV * w - 1);
        Sse.Prefetch0(q + 2 * ldc); Sse.Prefetch0(q + 2 * ldc + NV * w - 1); Sse.Prefetch0(q + 3 * ldc); Sse.Prefetch0(q + 3 * ldc + NV * w - 1);
        Vector256<T> c00 = default, c01 = default, c02 = default, c10 = default, c11 = default, c12 = default;
        Vector256<T> c20 = default, c21 = default, c22 = default, c30 = default, c31 = default, c32 = default;
        for (nint p = 0; p < kc; p++, a += MR, b += NV * w)
        {
            var b0 = Vector256.Load(b); var b1 = Vector256.Load(b + w); var b2 = Vector256.Load(b + 2 * w);
            var x = Vector256.Create(a[0]);
            c00 = MulAdd(x, b0, c00); c01 = MulAdd(x, b1, c01); c02 = MulAdd(x, b2, c02);
            x = Vector256.Create(a[1]);
            c10 = MulAdd(x, b0, c10); c11 = MulAdd(x, b1, c11); c12 = MulAdd(x, b2, c12);
            x = Vector256.Create(a[2]);
            c20 = MulAdd(x, b0, c20); c21 = MulAdd(x, b1, c21); c22 = MulAdd(x, b2, c22);
            x = Vector256.Create(a[3]);
            c30 = MulAdd(x, b0, c30); c31 = MulAdd(x, b1, c31); c32 = MulAdd(x, b2, c32);
        }
        if (nr == NV * w)
        {
            Put(c, c00, add); Put(c + w, c01, add); Put(c + 2 * w, c02, add);
            if (mr < 2) return;
            c += ldc; Put(c, c10, add); Put(c + w, c11, add); Put(c + 2 * w, c12, add);
            if (mr < 3) return;
            c += ldc; Put(c, c20, add); Put(c + w, c21, add); Put(c + 2 * w, c22, add);
            if (mr < 4) return;
            c += ldc; Put(c, c30, add); Put(c + w, c31, add); Put(c + 2 * w, c32, add);
            return;
        }
        // Lanes j < nr of each vector: the columns C has.
        var lane = Vector256<T>.Indices;
        var m0 = Vector256.LessThan(lane, Vector256.Create(T.CreateTruncating(nr)));
        var m1 = Vector256.LessThan(lane, Vector256.Create(T.CreateTruncating(nr - w)));
        var m2 = Vector256.LessThan(lane, Vector256.Create(T.CreateTruncating(nr - 2 * w)));
        PutMasked(c, c00, m0, add); PutMasked(c + w, c01, m1, add); PutMasked(c + 2 * w, c02, m2, add);
        if (mr < 2) return;
        c += ldc; PutMasked(c, c10, m0, add); PutMasked(c + w, c11, m1, add); PutMasked(c + 2 * w, c12, m2, add);
        if (mr < 3) return;
        c += ldc; PutMasked(c, c20, m0, add); PutMasked(c + w, c21, m1, add); PutMasked(c + 2 * w, c22, m2, add);
        if (mr < 4) return;
        c += ldc; PutMasked(c, c30, m0, add); PutMasked(c + w, c31, m1, add); PutMasked(c + 2 * w, c32, m2, add);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<T> MulAdd<T>(Vector256<T> x, Vector256<T> y, Vector256<T> acc) where T : unmanaged
    {
        if (typeof(T) == typeof(float))
            return Vector256.FusedMultiplyAdd(x.AsSingle(), y.AsSingle(), acc.AsSingle()).As<float, T>();
        return Vector256.FusedMultiplyAdd(x.AsDouble(), y.AsDouble(), acc.AsDouble()).As<double, T>();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put<T>(T* c, Vector256<T> v, bool add) where T : unmanaged
    {
        if (add) v += Vector256.Load(c);
        Vector256.Store(v, c);
    }

    /// <summary>Put for the lanes set in mask; the others are neither read nor written.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PutMasked<T>(T* c, Vector256<T> v, Vector256<T> mask, bool add) where T : unmanaged
    {
        if (add) v += MaskLoad(c, mask);
        if (typeof(T) == typeof(float)) Avx.MaskStore((float*)c, mask.AsSingle(), v.AsSingle());
        else Avx.MaskStore((double*)c, mask.AsDouble(), v.AsDouble());
    }

    /// <summary>The lanes set in mask from p, zero elsewhere; memory under clear lanes is not touched.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<T> MaskLoad<T>(T* p, Vector256<T> mask) where T : unmanaged =>
        typeof(T) == typeof(float) ? Avx.MaskLoad((float*)p, mask.AsSingle()).As<float, T>() : Avx.MaskLoad((double*)p, mask.AsDouble()).As<double, T>();

    /// <summary>The microkernel without AVX2 and FMA: plain multiply-adds over the same packing, through tile[MR x NR].</summary>
    private static void ScalarKernel<T>(nint kc, T* a, T* b, T* c, nint ldc, bool add, int mr, int nr, T* tile)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int nrFull = NV * Vector256<T>.Count;
        for (int i = 0; i < MR * nrFull; i++) tile[i] = T.Zero;
        for (nint p = 0; p < kc; p++, a += MR, b += nrFull)
            for (int r = 0; r < MR; r++)
            {
                T x = a[r];
                T* row = tile + r * nrFull;
                for (int j = 0; j < nrFull; j++) row[j] += x * b[j];
            }
        for (int r = 0; r < mr; r++, c += ldc)
            for (int j = 0; j < nr; j++)
                c[j] = add ? c[j] + tile[r * nrFull + j] : tile[r * nrFull + j];
    }
}
