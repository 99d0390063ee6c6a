using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace NormKit.Kernels;

/// <summary>The rows the row norms see: the trailing dims flattened into <see cref="Cols"/>, everything before into <see cref="Rows"/>.</summary>
internal readonly record struct RowLayout(int Rows, int Cols);

/// <summary>
/// The row norms, LayerNorm and RMSNorm, over the last dimension of a rows x cols matrix (the
/// trailing dims flattened): one segment is one row. RMSNorm is the uncentred case (the mean
/// is taken as 0). Either can first add a residual: s = x + residual is written out and
/// normalized in the same pass over memory. Callers have validated every length; this class
/// trusts them. Each pass is one kernel body (<see cref="IKernelBody{T, TJob}"/>), specialised
/// once per chunk of rows for the width the call dispatched to.
/// </summary>
internal static unsafe class RowKernel
{
    // A chunk of rows is one unit of parallel work; ~16K elements amortises the hand-off.
    private const int ChunkElements = 16 * 1024;
    // Backward merges per-block partial dWeight/dBias in block order; at most this many blocks.
    private const int MaxGradBlocks = 64;
    // With dWeight/dBias wanted a block has at least this many rows: its partials (2 * cols
    // doubles, written and merged) then cost a fraction of its input (16 * cols bytes per float row).
    private const int MinGradBlockRows = 8;

    // ============================ forward ============================

    /// <summary>
    /// y = (x - mean) * rstd * weight + bias per row, with mean = sum(x) / cols (0 when not
    /// <paramref name="centered"/>: RMSNorm), var = sum((x - mean)^2) / cols (biased),
    /// rstd = 1 / sqrt(var + eps). With a residual, x is first replaced by
    /// s = x + residual, which is written to <paramref name="sum"/>.
    /// </summary>
    /// <remarks>
    /// Segment: one row of cols elements. Statistics are accumulated in double with two passes
    /// over the row (it sits in L1/L2 between them), so memory traffic is: reads x once from
    /// memory (twice from cache), writes y once. eps is added to the variance inside the square
    /// root. mean and rstd are saved in double; the element-wise pass subtracts the mean as two T
    /// values (hi + lo), so x - mean is accurate even when |mean| is far larger than the spread,
    /// and backward derives the same hi/lo from the saved mean and so recomputes exactly the same
    /// x_hat. weight and bias may each be empty (absent). A one-element row gives exactly bias.
    /// With a residual: reads x and residual once, writes s and y once (s is re-read from cache).
    /// </remarks>
    public static void Forward<T>(ReadOnlySpan<T> x, ReadOnlySpan<T> residual, ReadOnlySpan<T> weight, ReadOnlySpan<T> bias, RowLayout l,
        double eps, bool centered, Span<T> y, Span<T> sum, Span<double> mean, Span<double> rstd) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (l.Rows == 0 || l.Cols == 0) return;
        fixed (T* px = x, pres = residual, pw = weight, pb = bias, py = y, ps = sum)
        fixed (double* pm = mean, pr = rstd)
        {
            var job = new ForwardJob<T>
            {
                X = px, Residual = residual.IsEmpty ? null : pres, Sum = ps, Weight = weight.IsEmpty ? null : pw, Bias = bias.IsEmpty ? null : pb, Y = py,
                Mean = pm, Rstd = pr, L = l, Eps = eps, Centered = centered, RowsPerChunk = Math.Max(1, ChunkElements / l.Cols), Path = Simd.Dispatch(),
            };
            Width.For<T, ForwardJob<T>, ForwardBody<T>>((l.Rows + job.RowsPerChunk - 1) / job.RowsPerChunk, ref job);
        }
    }

    /// <summary>
    /// <see cref="Forward{T}"/> on Half or BFloat16 rows with float parameters: each row is
    /// widened into the worker's float scratch row (<see cref="LowPrecision.Slot"/>), the
    /// float body's row math runs on it unchanged, and y is written back rounded once. The
    /// results are bitwise those of the float kernel on the widened input, rounded to TLow;
    /// memory sees 2 bytes per element in (x) and out (y).
    /// </summary>
    public static void ForwardLow<TLow>(ReadOnlySpan<TLow> x, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, RowLayout l,
        double eps, bool centered, Span<TLow> y, Span<double> mean, Span<double> rstd) where TLow : unmanaged
    {
        LowType low = LowPrecision.Of<TLow>();
        if (l.Rows == 0 || l.Cols == 0) return;
        int rowsPerChunk = Math.Max(1, ChunkElements / l.Cols), chunks = (l.Rows + rowsPerChunk - 1) / rowsPerChunk;
        float[] scratch = LowPrecision.RentScratch(l.Cols, chunks, out int slots);   // one row per worker
        try
        {
            fixed (TLow* px = x, py = y)
            fixed (float* pw = weight, pb = bias, ps = scratch)
            fixed (double* pm = mean, pr = rstd)
            {
                var job = new ForwardJob<float>
                {
                    LowX = (ushort*)px, LowY = (ushort*)py, Low = low, Scratch = ps, ScratchSlots = slots, Weight = weight.IsEmpty ? null : pw, Bias = bias.IsEmpty ? null : pb,
                    Mean = pm, Rstd = pr, L = l, Eps = eps, Centered = centered, RowsPerChunk = rowsPerChunk, Path = Simd.Dispatch(),
                };
                Width.For<float, ForwardJob<float>, ForwardBody<float>>(chunks, ref job);
            }
        }
        finally { ArrayPool<float>.Shared.Return(scratch); }
    }

    private struct ForwardJob<T> : IKernelJob where T : unmanaged
    {
        public T* X, Residual, Sum, Weight, Bias, Y;   // Residual and Sum: the fused residual add (else null); Weight, Bias: null when absent
        public ushort* LowX, LowY;                     // with Low set (T is float): the 16-bit rows in and out, instead of X and Y
        public LowType Low;
        public float* Scratch;                         // with Low set: one row of Cols floats per worker slot
        public int ScratchSlots;
        public double* Mean, Rstd;                     // per row; Mean null for RMSNorm
        public RowLayout L;
        public int RowsPerChunk;
        public double Eps;
        public bool Centered;
        public SimdPath Path { get; set; }
    }

    // Per row: [s = x + residual], mean and var in two passes, then y = ((s - hi) - lo) * rstd * w + b.
    // A 16-bit row is widened into the scratch first and y is computed there in place (each
    // element is read before it is written), then narrowed: the row math below is the same
    // code, on the same float values, for both.
    private readonly struct ForwardBody<T> : IKernelBody<T, ForwardJob<T>> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Run<W, TV, TD>(ref ForwardJob<T> j, int chunk, bool simd) where W : IWidth<T, TV, TD>
        {
            int n = j.L.Cols;
            int r0 = chunk * j.RowsPerChunk, r1 = Math.Min(j.L.Rows, r0 + j.RowsPerChunk);
            T* scratch = typeof(T) == typeof(float) && j.Low != LowType.None ? (T*)LowPrecision.Slot(j.Scratch, n, j.ScratchSlots) : null;
            for (int r = r0; r < r1; r++)
            {
                nint o = (nint)r * n;
                if (scratch != null)
                {
                    LowPrecision.Widen(j.Low, j.LowX + o, (float*)scratch, n, j.Path);
                    ForwardRow<T, W, TV, TD>(ref j, r, ref *scratch, ref *scratch, simd);
                    LowPrecision.Narrow(j.Low, (float*)scratch, j.LowY + o, n, j.Path);
                    continue;
                }
                ref T xr = ref j.X[o];
                if (j.Residual != null)
                {
                    AddRow<T, W, TV, TD>(ref xr, ref j.Residual[o], ref j.Sum[o], n, simd);
                    xr = ref j.Sum[o];
                }
                ForwardRow<T, W, TV, TD>(ref j, r, ref xr, ref j.Y[o], simd);
            }
        }
    }

    // One row's statistics (saved in double) and element-wise pass: x and y may be the same row.
    private static void ForwardRow<T, W, TV, TD>(ref ForwardJob<T> j, int r, ref T xr, ref T yr, bool simd)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD>
    {
        int n = j.L.Cols;
        double mu = j.Centered ? Reductions.Sum<T, W, TV, TD>(ref xr, n, simd) / n : 0;
        double var = Reductions.SumSquaredDeviations<T, W, TV, TD>(ref xr, n, mu, simd) / n;
        double rstd = 1.0 / Math.Sqrt(var + j.Eps);
        if (j.Mean != null) j.Mean[r] = mu;
        j.Rstd[r] = rstd;
        Num.Split(mu, out T hi, out T lo);
        NormalizeRow<T, W, TV, TD>(ref xr, ref yr, j.Weight, j.Bias, n, hi, lo, Num.From<T>(rstd), simd);
    }

    // s = x + r, element-wise (the scalar loop is the specification and the SIMD tail).
    private static void AddRow<T, W, TV, TD>(ref T x, ref T r, ref T s, int n, bool simd) where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD>
    {
        int i = 0;
        if (simd)
            for (int step = W.Count; i <= n - step; i += step)
                W.Store(W.Add(W.Load(ref x, (nuint)i), W.Load(ref r, (nuint)i)), ref s, (nuint)i);
        for (; i < n; i++) Unsafe.Add(ref s, i) = Unsafe.Add(ref x, i) + Unsafe.Add(ref r, i);
    }

    // y = ((x - hi) - lo) * rs * w + b (the scalar loop is the specification and the SIMD tail).
    private static void NormalizeRow<T, W, TV, TD>(ref T x, ref T y, T* w, T* b, int n, T hi, T lo, T rs, bool simd)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD>
    {
        int i = 0;
        if (simd)
        {
            TV hv = W.Splat(hi), lv = W.Splat(lo), rv = W.Splat(rs);
            for (int step = W.Count; i <= n - step; i += step)
            {
                TV v = W.Mul(W.Sub(W.Sub(W.Load(ref x, (nuint)i), hv), lv), rv);
                if (w != null) v = W.Mul(v, W.Load(ref *w, (nuint)i));
                if (b != null) v = W.Add(v, W.Load(ref *b, (nuint)i));
                W.Store(v, ref y, (nuint)i);
            }
        }
        for (; i < n; i++)
        {
            T v = (Unsafe.Add(ref x, i) - hi - lo) * rs;
            if (w != null) v *= w[i];
            if (b != null) v += b[i];
            Unsafe.Add(ref y, i) = v;
        }
    }

    /// <summary>One row's element-wise pass on the given path, for the tests that compare paths bit for bit.</summary>
    internal static void NormalizeRow<T>(ref T x, ref T y, T* w, T* b, int n, T hi, T lo, T rs, SimdPath path) where T : unmanaged, IFloatingPointIeee754<T>
    {
        fixed (T* px = &x, py = &y)
        {
            var job = new NormalizeRowJob<T> { X = px, Y = py, W = w, B = b, N = n, Hi = hi, Lo = lo, Rs = rs, Path = path };
            Width.Inline<T, NormalizeRowJob<T>, NormalizeRowBody<T>>(ref job, 0);
        }
    }

    private struct NormalizeRowJob<T> : IKernelJob where T : unmanaged
    {
        public T* X, Y, W, B;
        public int N;
        public T Hi, Lo, Rs;
        public SimdPath Path { get; set; }
    }

    private readonly struct NormalizeRowBody<T> : IKernelBody<T, NormalizeRowJob<T>> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Run<W, TV, TD>(ref NormalizeRowJob<T> j, int chunk, bool simd) where W : IWidth<T, TV, TD> =>
            NormalizeRow<T, W, TV, TD>(ref *j.X, ref *j.Y, j.W, j.B, j.N, j.Hi, j.Lo, j.Rs, simd);
    }

    // ============================ backward ============================

    /// <summary>
    /// Backward of <see cref="Forward{T}"/> (x is the normalized input: s when a residual was added).
    /// Per row, with g = dy * weight and x_hat = ((x - hi) - lo) * rstd recomputed from the saved
    /// mean and rstd as in forward:
    /// dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)) (without the mean(g) term when not
    /// centred) plus <paramref name="gradSum"/> when given (the gradient that reaches s from
    /// elsewhere); dWeight += sum over rows of dy * x_hat; dBias += sum over rows of dy.
    /// </summary>
    /// <remarks>
    /// Reads x and dy twice per row (the second time from cache), writes dx once. dx is
    /// overwritten; dWeight and dBias accumulate (+=), each optional (empty = not wanted).
    /// Rows are split into blocks fixed by the shape (<see cref="GradBlockRows"/>); each block
    /// sums its dWeight/dBias partials (in T over groups of 16 rows, then in double) and the
    /// partials are added in block order, so the result does not depend on the thread count.
    /// </remarks>
    public static void Backward<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, ReadOnlySpan<double> mean, ReadOnlySpan<double> rstd, ReadOnlySpan<T> weight,
        RowLayout l, bool centered, ReadOnlySpan<T> gradSum, Span<T> dx, Span<T> dWeight, Span<T> dBias) where T : unmanaged, IFloatingPointIeee754<T> =>
        BackwardCore(dy, x, mean, rstd, weight, l, centered, gradSum, dx, dWeight, dBias, LowType.None, null, null, null);

    // Backward for T rows, or (low set, T float) for the 16-bit rows lowDy, lowX, lowDx.
    private static void BackwardCore<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, ReadOnlySpan<double> mean, ReadOnlySpan<double> rstd, ReadOnlySpan<T> weight,
        RowLayout l, bool centered, ReadOnlySpan<T> gradSum, Span<T> dx, Span<T> dWeight, Span<T> dBias, LowType low, ushort* lowDy, ushort* lowX, ushort* lowDx)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int rows = l.Rows, cols = l.Cols;
        if (rows == 0 || cols == 0) return;
        bool wantGrads = !dWeight.IsEmpty || !dBias.IsEmpty;
        int rowsPerBlock = GradBlockRows(l, wantGrads);
        int blocks = (rows + rowsPerBlock - 1) / rowsPerBlock;
        double[]? partials = null;
        T[]? groups = null;   // rented here, on the calling thread: helpers never rent from the pool
        float[]? scratch = null;
        int slots = 0;
        if (wantGrads)
        {
            partials = ArrayPool<double>.Shared.Rent(blocks * cols * 2);   // each block writes all of its own
            groups = ArrayPool<T>.Shared.Rent(blocks * cols * 2);
        }
        if (low != LowType.None) scratch = LowPrecision.RentScratch(2 * cols, blocks, out slots);   // dy's and x's rows per worker
        try
        {
            fixed (T* pdy = dy, px = x, pw = weight, pdx = dx, pa = gradSum, pg = groups)
            fixed (double* pp = partials, pm = mean, pr = rstd)
            fixed (float* ps = scratch)
            {
                var job = new BackwardJob<T>
                {
                    Dy = pdy, X = px, Mean = pm, Rstd = pr, Weight = weight.IsEmpty ? null : pw, Dx = pdx, GradSum = gradSum.IsEmpty ? null : pa,
                    LowDy = lowDy, LowX = lowX, LowDx = lowDx, Low = low, Scratch = ps, ScratchSlots = slots,
                    Partials = wantGrads ? pp : null, Groups = wantGrads ? pg : null, Centered = centered, L = l, RowsPerBlock = rowsPerBlock,
                    Path = Simd.Dispatch(),
                };
                Width.For<T, BackwardJob<T>, BackwardBody<T>>(blocks, ref job);
            }
            if (wantGrads)
            {
                fixed (double* pp = partials)
                fixed (T* pw = dWeight, pb = dBias)
                {
                    // Chunks of columns; each column's partials are added in block order, so the
                    // bits depend on neither the chunks nor the thread count.
                    var merge = new MergeJob<T>
                    {
                        Partials = pp, DWeight = dWeight.IsEmpty ? null : pw, DBias = dBias.IsEmpty ? null : pb, Blocks = blocks, Cols = cols,
                        ColsPerChunk = Math.Max(MergeMinCols, ChunkElements / (2 * blocks)), Path = Simd.Dispatch(),
                    };
                    Width.For<T, MergeJob<T>, MergeBody<T>>((cols + merge.ColsPerChunk - 1) / merge.ColsPerChunk, ref merge);
                }
            }
        }
        finally
        {
            if (partials != null) ArrayPool<double>.Shared.Return(partials);
            if (groups != null) ArrayPool<T>.Shared.Return(groups);
            if (scratch != null) ArrayPool<float>.Shared.Return(scratch);
        }
    }

    /// <summary>
    /// <see cref="Backward{T}"/> on Half or BFloat16 rows with float parameters and float
    /// dWeight/dBias: per row, dy and x are widened into the worker's scratch rows, the float row math
    /// runs on them unchanged (dx is computed in place over dy's scratch row) and dx is written back
    /// rounded once. The blocks, the float group sums, the double partials and their merge are the
    /// float kernel's, so dx, dWeight and dBias are bitwise those of the float kernel on the widened
    /// inputs (dx then rounded to TLow), for any thread count.
    /// </summary>
    public static void BackwardLow<TLow>(ReadOnlySpan<TLow> dy, ReadOnlySpan<TLow> x, ReadOnlySpan<double> mean, ReadOnlySpan<double> rstd,
        ReadOnlySpan<float> weight, RowLayout l, bool centered, Span<TLow> dx, Span<float> dWeight, Span<float> dBias) where TLow : unmanaged
    {
        LowType low = LowPrecision.Of<TLow>();
        fixed (TLow* pdy = dy, px = x, pdx = dx)
            BackwardCore(default, default, mean, rstd, weight, l, centered, default, default, dWeight, dBias, low, (ushort*)pdy, (ushort*)px, (ushort*)pdx);
    }

    private struct BackwardJob<T> : IKernelJob where T : unmanaged
    {
        public T* Dy, X, Weight, Dx, GradSum;   // GradSum: gradient reaching s from elsewhere (fused residual), else null
        public ushort* LowDy, LowX, LowDx;      // with Low set (T is float): the 16-bit rows, instead of Dy, X and Dx
        public LowType Low;
        public float* Scratch;                  // with Low set: two rows (dy's, x's) of Cols floats per worker slot
        public int ScratchSlots;
        public double* Mean, Rstd;              // Mean null for RMSNorm
        public double* Partials;                // per block: dWeight[cols] then dBias[cols]; null when not wanted
        public T* Groups;                       // per block: the T-precision dWeight and dBias sums of up to GradGroupRows rows
        public RowLayout L;
        public int RowsPerBlock;
        public bool Centered;
        public SimdPath Path { get; set; }
    }

    // dWeight/dBias partials are summed in T over groups of this many rows, then added to the
    // block's double partials: a T vector add per element instead of a widening double one,
    // with at most 16 terms summed at T's precision.
    private const int GradGroupRows = 16;

    // One block of rows: per row, the sums s1 = Σ g and s2 = Σ g * x_hat (in double), then
    // dx = (g - s1/n - x_hat * s2/n) * rstd [+ gradSum], and the block's dWeight/dBias partials.
    private readonly struct BackwardBody<T> : IKernelBody<T, BackwardJob<T>> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Run<W, TV, TD>(ref BackwardJob<T> j, int block, bool simd) where W : IWidth<T, TV, TD>
        {
            int n = j.L.Cols;
            int r0 = block * j.RowsPerBlock, r1 = Math.Min(j.L.Rows, r0 + j.RowsPerBlock);
            double* pw = j.Partials == null ? null : j.Partials + (nint)block * 2 * n;
            T* gw = j.Groups == null ? null : j.Groups + (nint)block * 2 * n;
            T* gb = gw == null ? null : gw + n;
            // A 16-bit row: dy and x widened into the scratch (dy's row, then x's), dx computed
            // in place over dy's (each element is read before it is written), then narrowed.
            T* scratch = typeof(T) == typeof(float) && j.Low != LowType.None ? (T*)LowPrecision.Slot(j.Scratch, 2 * n, j.ScratchSlots) : null;
            for (int r = r0; r < r1; r++)
            {
                // The first row of a group writes the group's sums, the first group the block's
                // partials: nothing is cleared beforehand.
                int inBlock = r - r0;
                nint o = (nint)r * n;
                bool first = inBlock % GradGroupRows == 0;
                if (scratch != null)
                {
                    LowPrecision.Widen(j.Low, j.LowDy + o, (float*)scratch, n, j.Path);
                    LowPrecision.Widen(j.Low, j.LowX + o, (float*)scratch + n, n, j.Path);
                    BackwardRow<T, W, TV, TD>(ref j, r, scratch, scratch + n, scratch, null, gw, gb, first, simd);
                    LowPrecision.Narrow(j.Low, (float*)scratch, j.LowDx + o, n, j.Path);
                }
                else
                    BackwardRow<T, W, TV, TD>(ref j, r, j.Dy + o, j.X + o, j.Dx + o, j.GradSum == null ? null : j.GradSum + o, gw, gb, first, simd);
                if (gw != null && (inBlock % GradGroupRows == GradGroupRows - 1 || r == r1 - 1))
                    FlushGroup<T, W, TV, TD>(gw, pw, 2 * n, inBlock < GradGroupRows, simd);   // dWeight and dBias: gb = gw + n, pb = pw + n
            }
        }
    }

    // p[i] = (double)g[i] for the block's first group, else p[i] += (double)g[i]: a group's T
    // sums into the block's double partials.
    private static void FlushGroup<T, W, TV, TD>(T* g, double* p, int n, bool first, bool simd) where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD>
    {
        int i = 0;
        if (simd)
        {
            int step = W.WideCount, half = step / 2;
            for (; i <= n - step; i += step)
            {
                W.LoadWide(ref g[i], 0, out TD lo, out TD hi);
                if (!first)
                {
                    lo = W.AddD(W.LoadD(ref p[i], 0), lo);
                    hi = W.AddD(W.LoadD(ref p[i + half], 0), hi);
                }
                W.StoreD(lo, ref p[i], 0);
                W.StoreD(hi, ref p[i + half], 0);
            }
        }
        for (; i < n; i++) p[i] = first ? Num.D(g[i]) : p[i] + Num.D(g[i]);
    }

    // The parameter gradients' merge: dWeight[c] += sum over blocks of the partials, per chunk of columns.
    private const int MergeMinCols = 256;

    private struct MergeJob<T> : IKernelJob where T : unmanaged
    {
        public double* Partials;     // as BackwardJob's; block 0's row receives the others
        public T* DWeight, DBias;    // null when not wanted
        public int Blocks, Cols, ColsPerChunk;
        public SimdPath Path { get; set; }
    }

    private readonly struct MergeBody<T> : IKernelBody<T, MergeJob<T>> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Run<W, TV, TD>(ref MergeJob<T> j, int chunk, bool simd) where W : IWidth<T, TV, TD>
        {
            int c0 = chunk * j.ColsPerChunk, n = Math.Min(j.Cols, c0 + j.ColsPerChunk) - c0;
            if (j.DWeight != null) MergeColumns<T, W, TV, TD>(ref j, 0, j.DWeight + c0, c0, n, simd);
            if (j.DBias != null) MergeColumns<T, W, TV, TD>(ref j, j.Cols, j.DBias + c0, c0, n, simd);
        }
    }

    // acc = partials of block 0, += those of blocks 1, 2, ... in order; then target = T(double(target) + acc).
    private static void MergeColumns<T, W, TV, TD>(ref MergeJob<T> j, int offset, T* target, int c0, int n, bool simd)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD>
    {
        double* acc = j.Partials + offset + c0;
        int half = W.WideCount / 2;
        for (int blk = 1; blk < j.Blocks; blk++)
        {
            double* p = j.Partials + (nint)blk * 2 * j.Cols + offset + c0;
            int i = 0;
            if (simd)
                for (; i <= n - half; i += half)
                    W.StoreD(W.AddD(W.LoadD(ref acc[i], 0), W.LoadD(ref p[i], 0)), ref acc[i], 0);
            for (; i < n; i++) acc[i] += p[i];
        }
        int k = 0;
        if (simd)
            for (int step = W.WideCount; k <= n - step; k += step)
            {
                W.LoadWide(ref target[k], 0, out TD lo, out TD hi);
                W.StoreWide(W.AddD(lo, W.LoadD(ref acc[k], 0)), W.AddD(hi, W.LoadD(ref acc[k + half], 0)), ref target[k], 0);
            }
        for (; k < n; k++) target[k] = Num.From<T>(Num.D(target[k]) + acc[k]);
    }

    /// <summary>
    /// Rows per block of <see cref="Backward{T}"/>, from the shape alone: at most
    /// <see cref="MaxGradBlocks"/> blocks, at least a chunk's worth of elements per block, and
    /// with parameter gradients at least <see cref="MinGradBlockRows"/> rows, so that a few long
    /// rows do not each write and merge partials larger than themselves.
    /// </summary>
    internal static int GradBlockRows(RowLayout l, bool wantGrads)
    {
        int rows = (l.Rows + MaxGradBlocks - 1) / MaxGradBlocks;
        rows = Math.Max(rows, (ChunkElements + l.Cols - 1) / l.Cols);
        if (wantGrads) rows = Math.Max(rows, MinGradBlockRows);
        return Math.Max(1, Math.Min(rows, l.Rows));
    }

    // Row r of dy, x and dx (and add, the fused residual's gradSum, or null): dx may be dy's row.
    private static void BackwardRow<T, W, TV, TD>(ref BackwardJob<T> j, int r, T* dy, T* x, T* dx, T* add, T* gw, T* gb, bool firstOfGroup, bool simd)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD>
    {
        int n = j.L.Cols;
        Num.Split(j.Centered ? j.Mean[r] : 0, out T hi, out T lo);
        T rs = Num.From<T>(j.Rstd[r]);
        var (s1, s2) = simd
            ? RowSums<T, W, TV, TD>(ref *dy, ref *x, j.Weight, n, hi, lo, rs)
            : RowSumsTail(ref *dy, ref *x, j.Weight, 0, n, hi, lo, rs, 0, 0);
        T c1 = j.Centered ? Num.From<T>(s1 / n) : T.Zero, c2 = Num.From<T>(s2 / n);
        int i = simd ? RowGrad<T, W, TV, TD>(ref *dy, ref *x, j.Weight, ref *dx, add, gw, gb, firstOfGroup, n, hi, lo, rs, c1, c2) : 0;
        // Scalar specification (and the SIMD tail). d is read before dx[i] is written.
        for (; i < n; i++)
        {
            T d = dy[i];
            T xh = (x[i] - hi - lo) * rs;
            T g = j.Weight != null ? d * j.Weight[i] : d;
            T d_x = (g - c1 - xh * c2) * rs;
            dx[i] = add != null ? d_x + add[i] : d_x;
            if (gw != null)
            {
                gw[i] = firstOfGroup ? d * xh : gw[i] + d * xh;
                gb[i] = firstOfGroup ? d : gb[i] + d;
            }
        }
    }

    // sum(g) and sum(g * x_hat) over one row, in double.
    private static (double, double) RowSumsTail<T>(ref T dy, ref T x, T* w, int from, int n, T hi, T lo, T rs, double s1, double s2)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int i = from; i < n; i++)
        {
            T g = w != null ? Unsafe.Add(ref dy, i) * w[i] : Unsafe.Add(ref dy, i);
            T xh = (Unsafe.Add(ref x, i) - hi - lo) * rs;
            s1 += Num.D(g);
            s2 += Num.D(g) * Num.D(xh);
        }
        return (s1, s2);
    }

    private static (double, double) RowSums<T, W, TV, TD>(ref T dy, ref T x, T* w, int n, T hi, T lo, T rs)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD>
    {
        TV hv = W.Splat(hi), lv = W.Splat(lo), rv = W.Splat(rs);
        TD s1 = W.ZeroD, s2 = W.ZeroD;
        int i = 0, step = W.Count;
        for (; i <= n - step; i += step)
        {
            TV g = W.Load(ref dy, (nuint)i);
            if (w != null) g = W.Mul(g, W.Load(ref *w, (nuint)i));
            TV xh = W.Mul(W.Sub(W.Sub(W.Load(ref x, (nuint)i), hv), lv), rv);
            W.Widen(g, out TD g0, out TD g1);
            W.Widen(xh, out TD h0, out TD h1);
            s1 = W.AddD(s1, W.AddD(g0, g1));
            s2 = W.AddD(s2, W.AddD(W.MulD(g0, h0), W.MulD(g1, h1)));
        }
        return RowSumsTail(ref dy, ref x, w, i, n, hi, lo, rs, W.SumD(s1), W.SumD(s2));
    }

    private static int RowGrad<T, W, TV, TD>(ref T dy, ref T x, T* w, ref T dx, T* add, T* gw, T* gb, bool firstOfGroup, int n, T hi, T lo, T rs, T c1, T c2)
        where T : unmanaged where W : IWidth<T, TV, TD>
    {
        TV hv = W.Splat(hi), lv = W.Splat(lo), rv = W.Splat(rs), c1v = W.Splat(c1), c2v = W.Splat(c2);
        int i = 0, step = W.Count;
        for (; i <= n - step; i += step)
        {
            nuint u = (nuint)i;
            TV d = W.Load(ref dy, u);
            TV g = w != null ? W.Mul(d, W.Load(ref *w, u)) : d;
            TV xh = W.Mul(W.Sub(W.Sub(W.Load(ref x, u), hv), lv), rv);
            TV d_x = W.Mul(W.Sub(W.Sub(g, c1v), W.Mul(xh, c2v)), rv);
            W.Store(add != null ? W.Add(d_x, W.Load(ref *add, u)) : d_x, ref dx, u);
            if (gw != null)
            {
                TV dw = W.Mul(d, xh);
                W.Store(firstOfGroup ? dw : W.Add(W.Load(ref *gw, u), dw), ref *gw, u);
                W.Store(firstOfGroup ? d : W.Add(W.Load(ref *gb, u), d), ref *gb, u);
            }
        }
        return i;
    }
}
