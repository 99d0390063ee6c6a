using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace NormKit.Kernels;

/// <summary>
/// Dynamic Tanh (DyT) over the rows of a rows x cols matrix: y = weight * tanh(alpha * x) + bias,
/// alpha one scalar, weight and bias per column. Element-wise only, no statistics; its one
/// reduction is backward's parameter gradients. Callers have validated every length.
/// </summary>
/// <remarks>
/// The vector paths take tanh from System.Numerics.Tensors.TensorPrimitives (NormKit's widths
/// have no tanh); the scalar path, the specification, calls T.Tanh per element. The two may
/// differ in the last bits of tanh. Chunks and blocks are fixed by the shape and every
/// cross-block sum is merged in block order, so any thread count gives the same bits.
/// </remarks>
internal static unsafe class TanhKernel
{
    private const int ChunkElements = 16 * 1024;

    // ============================ forward ============================

    /// <summary>y = tanh(alpha * x) * weight + bias per row; bias may be empty (absent).</summary>
    public static void Forward<T>(ReadOnlySpan<T> x, T alpha, ReadOnlySpan<T> weight, ReadOnlySpan<T> bias, RowLayout l, Span<T> y)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (l.Rows == 0 || l.Cols == 0) return;
        fixed (T* px = x, pw = weight, pb = bias, py = y)
        {
            var job = new Job<T>
            {
                X = px, Weight = pw, Bias = bias.IsEmpty ? null : pb, Out = py, Alpha = alpha, L = l,
                RowsPerChunk = Math.Max(1, ChunkElements / l.Cols), Path = Simd.Dispatch(),
            };
            Width.For<T, Job<T>, ForwardBody<T>>((l.Rows + job.RowsPerChunk - 1) / job.RowsPerChunk, ref job);
        }
    }

    private struct Job<T> : IKernelJob where T : unmanaged
    {
        public T* X, Dy, Weight, Bias, Out;   // Bias: null when absent (forward)
        public double* Partials;              // backward, per block: dWeight[cols], dBias[cols], then dAlpha
        public double* Zeros;                 // backward: cols zeros, the means the column sums are taken about
        public T Alpha;
        public RowLayout L;
        public int RowsPerChunk;              // forward: rows per chunk; backward: rows per block
        public SimdPath Path { get; set; }
    }

    private readonly struct ForwardBody<T> : IKernelBody<T, Job<T>> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Run<W, TV, TD>(ref Job<T> j, int chunk, bool simd) where W : IWidth<T, TV, TD>
        {
            int n = j.L.Cols;
            int r0 = chunk * j.RowsPerChunk, r1 = Math.Min(j.L.Rows, r0 + j.RowsPerChunk);
            nint o = (nint)r0 * n;
            int len = (r1 - r0) * n;
            Tanh(j.X + o, j.Alpha, j.Out + o, len, simd);
            for (int r = r0; r < r1; r++)
            {
                ref T y = ref j.Out[(nint)r * n];
                int i = 0;
                if (simd)
                    for (int step = W.Count; i <= n - step; i += step)
                    {
                        nuint k = (nuint)i;
                        TV v = W.Mul(W.Load(ref y, k), W.Load(ref *j.Weight, k));
                        if (j.Bias != null) v = W.Add(v, W.Load(ref *j.Bias, k));
                        W.Store(v, ref y, k);
                    }
                for (; i < n; i++)
                {
                    T v = Unsafe.Add(ref y, i) * j.Weight[i];
                    Unsafe.Add(ref y, i) = j.Bias != null ? v + j.Bias[i] : v;
                }
            }
        }
    }

    // t = tanh(alpha * x) over len contiguous elements: TensorPrimitives on the vector paths,
    // T.Tanh per element on the scalar path.
    private static void Tanh<T>(T* x, T alpha, T* t, int len, bool simd) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (simd)
        {
            var ts = new Span<T>(t, len);
            TensorPrimitives.Multiply(new ReadOnlySpan<T>(x, len), alpha, ts);
            TensorPrimitives.Tanh<T>(ts, ts);
            return;
        }
        for (int i = 0; i < len; i++) t[i] = T.Tanh(alpha * x[i]);
    }

    // ============================ backward ============================

    /// <summary>
    /// Backward of <see cref="Forward{T}"/>: with t = tanh(alpha * x),
    /// dx = dy * weight * alpha * (1 - t^2); dAlpha += Σ dy * weight * x * (1 - t^2);
    /// dWeight += Σ over rows of dy * t; dBias += Σ over rows of dy (dBias may be empty).
    /// </summary>
    /// <remarks>
    /// Rows are split into blocks fixed by the shape (<see cref="RowKernel.GradBlockRows"/>); a
    /// block runs in cache-sized pieces: t into dx, the column sums of dy and dy * t
    /// (<see cref="Reductions.ColumnSumAndDot"/>), u = dy * weight * (1 - t^2) into dx, Σ x * u
    /// (<see cref="Reductions.SumAndDot"/>), dx = alpha * u. The sums are in double, per block,
    /// and added in block order.
    /// </remarks>
    public static void Backward<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, T alpha, ReadOnlySpan<T> weight, RowLayout l,
        Span<T> dx, Span<T> dAlpha, Span<T> dWeight, Span<T> dBias) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int rows = l.Rows, cols = l.Cols;
        if (rows == 0 || cols == 0) return;
        int rowsPerBlock = RowKernel.GradBlockRows(l, wantGrads: true);
        int blocks = (rows + rowsPerBlock - 1) / rowsPerBlock;
        int stride = 2 * cols + 1;
        // Rented here, on the calling thread: helpers never rent from the pool.
        double[] partials = ArrayPool<double>.Shared.Rent(blocks * stride + cols);
        try
        {
            partials.AsSpan(blocks * stride, cols).Clear();
            fixed (T* pdy = dy, px = x, pw = weight, pdx = dx)
            fixed (double* pp = partials)
            {
                var job = new Job<T>
                {
                    Dy = pdy, X = px, Weight = pw, Out = pdx, Alpha = alpha, Partials = pp, Zeros = pp + blocks * stride, L = l,
                    RowsPerChunk = rowsPerBlock, Path = Simd.Dispatch(),
                };
                Width.For<T, Job<T>, BackwardBody<T>>(blocks, ref job);
            }
            // Block 0's partials receive the others', in block order.
            double da = partials[2 * cols];
            for (int blk = 1; blk < blocks; blk++)
            {
                var part = partials.AsSpan(blk * stride, stride);
                for (int c = 0; c < 2 * cols; c++) partials[c] += part[c];
                da += part[2 * cols];
            }
            for (int c = 0; c < cols; c++)
            {
                dWeight[c] = Num.From<T>(Num.D(dWeight[c]) + partials[cols + c]);
                if (!dBias.IsEmpty) dBias[c] = Num.From<T>(Num.D(dBias[c]) + partials[c]);
            }
            dAlpha[0] = Num.From<T>(Num.D(dAlpha[0]) + da);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(partials);
        }
    }

    private readonly struct BackwardBody<T> : IKernelBody<T, Job<T>> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Run<W, TV, TD>(ref Job<T> j, int block, bool simd) where W : IWidth<T, TV, TD>
        {
            int n = j.L.Cols;
            int r0 = block * j.RowsPerChunk, r1 = Math.Min(j.L.Rows, r0 + j.RowsPerChunk);
            var part = new Span<double>(j.Partials + (nint)block * (2 * n + 1), 2 * n + 1);
            part.Clear();
            Span<double> sumDy = part[..n], sumDyT = part.Slice(n, n);
            var zeros = new ReadOnlySpan<double>(j.Zeros, n);
            int piece = Math.Max(1, ChunkElements / n);
            double da = 0;
            for (int a = r0; a < r1; a += piece)
            {
                int rows = Math.Min(piece, r1 - a), len = rows * n;
                nint o = (nint)a * n;
                T* t = j.Out + o;
                Tanh(j.X + o, j.Alpha, t, len, simd);
                Reductions.ColumnSumAndDot<T, W, TV, TD>(ref j.Dy[o], ref *t, rows, n, zeros, sumDy, sumDyT, simd);
                for (int r = 0; r < rows; r++)
                    Slope<T, W, TV, TD>(ref j.Dy[o + (nint)r * n], ref *j.Weight, ref t[(nint)r * n], n, simd);
                Reductions.SumAndDot<T, W, TV, TD>(ref *t, ref j.X[o], len, 0, simd, out _, out double dot);
                da += dot;
                Scale<T, W, TV, TD>(ref *t, j.Alpha, len, simd);
            }
            part[2 * n] = da;
        }
    }

    // t <- dy * w * (1 - t * t), one row (the scalar loop is the specification and the SIMD tail).
    private static void Slope<T, W, TV, TD>(ref T dy, ref T w, ref T t, int n, bool simd) where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD>
    {
        int i = 0;
        if (simd)
        {
            TV one = W.Splat(T.One);
            for (int step = W.Count; i <= n - step; i += step)
            {
                nuint k = (nuint)i;
                TV tv = W.Load(ref t, k);
                W.Store(W.Mul(W.Mul(W.Load(ref dy, k), W.Load(ref w, k)), W.Sub(one, W.Mul(tv, tv))), ref t, k);
            }
        }
        for (; i < n; i++)
        {
            T tv = Unsafe.Add(ref t, i);
            Unsafe.Add(ref t, i) = Unsafe.Add(ref dy, i) * Unsafe.Add(ref w, i) * (T.One - tv * tv);
        }
    }

    // v <- v * s.
    private static void Scale<T, W, TV, TD>(ref T v, T s, int n, bool simd) where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD>
    {
        int i = 0;
        if (simd)
        {
            TV sv = W.Splat(s);
            for (int step = W.Count; i <= n - step; i += step)
                W.Store(W.Mul(W.Load(ref v, (nuint)i), sv), ref v, (nuint)i);
        }
        for (; i < n; i++) Unsafe.Add(ref v, i) *= s;
    }
}
