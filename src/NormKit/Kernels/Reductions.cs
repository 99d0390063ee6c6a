using System.Runtime.CompilerServices;

namespace NormKit.Kernels;

/// <summary>
/// The reductions every norm is built from, accumulated in double whatever the element type:
/// over one contiguous segment (a LayerNorm row, one (sample, channel) plane of BatchNorm)
/// or down the columns of a block of rows (BatchNorm in channels-last layout, where a channel
/// is a column). Each is called from a kernel body already specialised for one width W (see
/// <see cref="Width"/>): with simd it runs the generic vector loop and the scalar tail, without
/// it the scalar loop alone, which is the specification. Summation order depends only on the
/// length and the path, never on alignment or threads.
/// </summary>
internal static class Reductions
{
    // ---------------- contiguous segment: sum(x) ----------------

    public static double Sum<T, W, TV, TD>(ref T x, int n, bool simd) where T : unmanaged where W : IWidth<T, TV, TD> =>
        simd ? SumVector<T, W, TV, TD>(ref x, n) : SumScalar(ref x, 0, n, 0.0);

    private static double SumScalar<T>(ref T x, int from, int n, double acc) where T : unmanaged
    {
        for (int i = from; i < n; i++) acc += Num.D(Unsafe.Add(ref x, i));
        return acc;
    }

    private static double SumVector<T, W, TV, TD>(ref T x, int n) where T : unmanaged where W : IWidth<T, TV, TD>
    {
        TD a = W.ZeroD, b = W.ZeroD;
        int i = 0, step = W.WideCount;
        for (; i <= n - step; i += step)
        {
            W.LoadWide(ref x, (nuint)i, out TD lo, out TD hi);
            a = W.AddD(a, lo); b = W.AddD(b, hi);
        }
        return SumScalar(ref x, i, n, W.SumD(W.AddD(a, b)));
    }

    // ---------------- contiguous segment: sum((x - mean)^2) ----------------

    public static double SumSquaredDeviations<T, W, TV, TD>(ref T x, int n, double mean, bool simd) where T : unmanaged where W : IWidth<T, TV, TD> =>
        simd ? SumSq<T, W, TV, TD>(ref x, n, mean) : SumSqScalar(ref x, 0, n, mean, 0.0);

    private static double SumSqScalar<T>(ref T x, int from, int n, double mean, double acc) where T : unmanaged
    {
        for (int i = from; i < n; i++)
        {
            double d = Num.D(Unsafe.Add(ref x, i)) - mean;
            acc += d * d;
        }
        return acc;
    }

    private static double SumSq<T, W, TV, TD>(ref T x, int n, double mean) where T : unmanaged where W : IWidth<T, TV, TD>
    {
        TD a = W.ZeroD, b = W.ZeroD, m = W.SplatD(mean);
        int i = 0, step = W.WideCount;
        for (; i <= n - step; i += step)
        {
            W.LoadWide(ref x, (nuint)i, out TD lo, out TD hi);
            lo = W.SubD(lo, m); hi = W.SubD(hi, m);
            a = W.AddD(a, W.MulD(lo, lo)); b = W.AddD(b, W.MulD(hi, hi));
        }
        return SumSqScalar(ref x, i, n, mean, W.SumD(W.AddD(a, b)));
    }

    // ---------------- contiguous segment: sum(dy) and sum((x - m) * dy) ----------------

    public static void SumAndDot<T, W, TV, TD>(ref T dy, ref T x, int n, double m, bool simd, out double sum, out double dot)
        where T : unmanaged where W : IWidth<T, TV, TD>
    {
        if (simd) { SumDot<T, W, TV, TD>(ref dy, ref x, n, m, out sum, out dot); return; }
        sum = 0; dot = 0;
        SumDotScalar(ref dy, ref x, 0, n, m, ref sum, ref dot);
    }

    private static void SumDotScalar<T>(ref T dy, ref T x, int from, int n, double m, ref double sum, ref double dot) where T : unmanaged
    {
        for (int i = from; i < n; i++)
        {
            double g = Num.D(Unsafe.Add(ref dy, i));
            sum += g;
            dot += (Num.D(Unsafe.Add(ref x, i)) - m) * g;
        }
    }

    private static void SumDot<T, W, TV, TD>(ref T dy, ref T x, int n, double m, out double sum, out double dot)
        where T : unmanaged where W : IWidth<T, TV, TD>
    {
        TD s0 = W.ZeroD, s1 = W.ZeroD, d0 = W.ZeroD, d1 = W.ZeroD, mv = W.SplatD(m);
        int i = 0, step = W.WideCount;
        for (; i <= n - step; i += step)
        {
            W.LoadWide(ref dy, (nuint)i, out TD g0, out TD g1);
            W.LoadWide(ref x, (nuint)i, out TD x0, out TD x1);
            s0 = W.AddD(s0, g0); s1 = W.AddD(s1, g1);
            d0 = W.AddD(d0, W.MulD(W.SubD(x0, mv), g0));
            d1 = W.AddD(d1, W.MulD(W.SubD(x1, mv), g1));
        }
        sum = W.SumD(W.AddD(s0, s1));
        dot = W.SumD(W.AddD(d0, d1));
        SumDotScalar(ref dy, ref x, i, n, m, ref sum, ref dot);
    }

    // ---------------- columns of a row block (channels-last) ----------------
    // x is rows x cols, row-major; acc[c] (double, length cols) is accumulated into.

    /// <summary>acc[c] += sum over rows of x[r, c].</summary>
    public static void ColumnSums<T, W, TV, TD>(ref T x, int rows, int cols, Span<double> acc, bool simd) where T : unmanaged where W : IWidth<T, TV, TD>
    {
        if (simd) ColSum<T, W, TV, TD>(ref x, rows, cols, acc);
        else for (int r = 0; r < rows; r++) ColSumTail(ref Unsafe.Add(ref x, (nint)r * cols), 0, cols, acc);
    }

    private static void ColSumTail<T>(ref T row, int from, int cols, Span<double> acc) where T : unmanaged
    {
        for (int c = from; c < cols; c++) acc[c] += Num.D(Unsafe.Add(ref row, c));
    }

    // Column groups outer, rows inner: each group's sums stay in registers while the rows
    // stream past (two accumulators per half, even and odd rows, for instruction-level
    // parallelism), and are added to acc once per group.
    private static void ColSum<T, W, TV, TD>(ref T x, int rows, int cols, Span<double> acc) where T : unmanaged where W : IWidth<T, TV, TD>
    {
        ref double a = ref acc[0];
        int step = W.WideCount, half = step / 2;
        int vecEnd = cols - cols % step;
        for (int c = 0; c < vecEnd; c += step)
        {
            TD e0 = W.ZeroD, e1 = W.ZeroD, o0 = W.ZeroD, o1 = W.ZeroD;
            int r = 0;
            for (; r + 1 < rows; r += 2)
            {
                W.LoadWide(ref Unsafe.Add(ref x, (nint)r * cols), (nuint)c, out TD lo, out TD hi);
                e0 = W.AddD(e0, lo); e1 = W.AddD(e1, hi);
                W.LoadWide(ref Unsafe.Add(ref x, (nint)(r + 1) * cols), (nuint)c, out lo, out hi);
                o0 = W.AddD(o0, lo); o1 = W.AddD(o1, hi);
            }
            if (r < rows)
            {
                W.LoadWide(ref Unsafe.Add(ref x, (nint)r * cols), (nuint)c, out TD lo, out TD hi);
                e0 = W.AddD(e0, lo); e1 = W.AddD(e1, hi);
            }
            W.StoreD(W.AddD(W.LoadD(ref a, (nuint)c), W.AddD(e0, o0)), ref a, (nuint)c);
            W.StoreD(W.AddD(W.LoadD(ref a, (nuint)(c + half)), W.AddD(e1, o1)), ref a, (nuint)(c + half));
        }
        if (vecEnd < cols)
            for (int r = 0; r < rows; r++) ColSumTail(ref Unsafe.Add(ref x, (nint)r * cols), vecEnd, cols, acc);
    }

    /// <summary>acc[c] += sum over rows of (x[r, c] - mean[c])^2.</summary>
    public static void ColumnSquaredDeviations<T, W, TV, TD>(ref T x, int rows, int cols, ReadOnlySpan<double> mean, Span<double> acc, bool simd)
        where T : unmanaged where W : IWidth<T, TV, TD>
    {
        if (simd) ColSq<T, W, TV, TD>(ref x, rows, cols, mean, acc);
        else for (int r = 0; r < rows; r++) ColSqTail(ref Unsafe.Add(ref x, (nint)r * cols), 0, cols, mean, acc);
    }

    private static void ColSqTail<T>(ref T row, int from, int cols, ReadOnlySpan<double> mean, Span<double> acc) where T : unmanaged
    {
        for (int c = from; c < cols; c++)
        {
            double d = Num.D(Unsafe.Add(ref row, c)) - mean[c];
            acc[c] += d * d;
        }
    }

    private static void ColSq<T, W, TV, TD>(ref T x, int rows, int cols, ReadOnlySpan<double> mean, Span<double> acc)
        where T : unmanaged where W : IWidth<T, TV, TD>
    {
        ref double a = ref acc[0];
        ref double mu = ref Unsafe.AsRef(in mean[0]);
        int step = W.WideCount, half = step / 2;
        int vecEnd = cols - cols % step;
        for (int c = 0; c < vecEnd; c += step)
        {
            TD m0 = W.LoadD(ref mu, (nuint)c), m1 = W.LoadD(ref mu, (nuint)(c + half));
            TD e0 = W.ZeroD, e1 = W.ZeroD, o0 = W.ZeroD, o1 = W.ZeroD;
            int r = 0;
            for (; r + 1 < rows; r += 2)
            {
                W.LoadWide(ref Unsafe.Add(ref x, (nint)r * cols), (nuint)c, out TD lo, out TD hi);
                lo = W.SubD(lo, m0); hi = W.SubD(hi, m1);
                e0 = W.AddD(e0, W.MulD(lo, lo)); e1 = W.AddD(e1, W.MulD(hi, hi));
                W.LoadWide(ref Unsafe.Add(ref x, (nint)(r + 1) * cols), (nuint)c, out lo, out hi);
                lo = W.SubD(lo, m0); hi = W.SubD(hi, m1);
                o0 = W.AddD(o0, W.MulD(lo, lo)); o1 = W.AddD(o1, W.MulD(hi, hi));
            }
            if (r < rows)
            {
                W.LoadWide(ref Unsafe.Add(ref x, (nint)r * cols), (nuint)c, out TD lo, out TD hi);
                lo = W.SubD(lo, m0); hi = W.SubD(hi, m1);
                e0 = W.AddD(e0, W.MulD(lo, lo)); e1 = W.AddD(e1, W.MulD(hi, hi));
            }
            W.StoreD(W.AddD(W.LoadD(ref a, (nuint)c), W.AddD(e0, o0)), ref a, (nuint)c);
            W.StoreD(W.AddD(W.LoadD(ref a, (nuint)(c + half)), W.AddD(e1, o1)), ref a, (nuint)(c + half));
        }
        if (vecEnd < cols)
            for (int r = 0; r < rows; r++) ColSqTail(ref Unsafe.Add(ref x, (nint)r * cols), vecEnd, cols, mean, acc);
    }

    /// <summary>sum[c] += sum over rows of dy[r, c]; dot[c] += sum over rows of (x[r, c] - m[c]) * dy[r, c].</summary>
    public static void ColumnSumAndDot<T, W, TV, TD>(ref T dy, ref T x, int rows, int cols, ReadOnlySpan<double> m, Span<double> sum, Span<double> dot, bool simd)
        where T : unmanaged where W : IWidth<T, TV, TD>
    {
        if (simd) ColSumDot<T, W, TV, TD>(ref dy, ref x, rows, cols, m, sum, dot);
        else
            for (int r = 0; r < rows; r++)
                ColSumDotTail(ref Unsafe.Add(ref dy, (nint)r * cols), ref Unsafe.Add(ref x, (nint)r * cols), 0, cols, m, sum, dot);
    }

    private static void ColSumDotTail<T>(ref T dyRow, ref T xRow, int from, int cols, ReadOnlySpan<double> m, Span<double> sum, Span<double> dot)
        where T : unmanaged
    {
        for (int c = from; c < cols; c++)
        {
            double g = Num.D(Unsafe.Add(ref dyRow, c));
            sum[c] += g;
            dot[c] += (Num.D(Unsafe.Add(ref xRow, c)) - m[c]) * g;
        }
    }

    private static void ColSumDot<T, W, TV, TD>(ref T dy, ref T x, int rows, int cols, ReadOnlySpan<double> m, Span<double> sum, Span<double> dot)
        where T : unmanaged where W : IWidth<T, TV, TD>
    {
        ref double s = ref sum[0];
        ref double d = ref dot[0];
        ref double mu = ref Unsafe.AsRef(in m[0]);
        int step = W.WideCount, half = step / 2;
        int vecEnd = cols - cols % step;
        for (int c = 0; c < vecEnd; c += step)
        {
            nuint c0 = (nuint)c, c1 = (nuint)(c + half);
            TD m0 = W.LoadD(ref mu, c0), m1 = W.LoadD(ref mu, c1);
            TD s0 = W.ZeroD, s1 = W.ZeroD, d0 = W.ZeroD, d1 = W.ZeroD;
            for (int r = 0; r < rows; r++)
            {
                W.LoadWide(ref Unsafe.Add(ref dy, (nint)r * cols), c0, out TD g0, out TD g1);
                W.LoadWide(ref Unsafe.Add(ref x, (nint)r * cols), c0, out TD x0, out TD x1);
                s0 = W.AddD(s0, g0); s1 = W.AddD(s1, g1);
                d0 = W.AddD(d0, W.MulD(W.SubD(x0, m0), g0));
                d1 = W.AddD(d1, W.MulD(W.SubD(x1, m1), g1));
            }
            W.StoreD(W.AddD(W.LoadD(ref s, c0), s0), ref s, c0);
            W.StoreD(W.AddD(W.LoadD(ref s, c1), s1), ref s, c1);
            W.StoreD(W.AddD(W.LoadD(ref d, c0), d0), ref d, c0);
            W.StoreD(W.AddD(W.LoadD(ref d, c1), d1), ref d, c1);
        }
        if (vecEnd < cols)
            for (int r = 0; r < rows; r++)
                ColSumDotTail(ref Unsafe.Add(ref dy, (nint)r * cols), ref Unsafe.Add(ref x, (nint)r * cols), vecEnd, cols, m, sum, dot);
    }

    /// <summary>v[k] /= d: a vector division, the same bits per lane as the scalar one.</summary>
    public static void Divide<T, W, TV, TD>(Span<double> v, double d, bool simd) where T : unmanaged where W : IWidth<T, TV, TD>
    {
        ref double p = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(v);
        int k = 0;
        if (simd)
        {
            TD dv = W.SplatD(d);
            for (int step = W.WideCount / 2; k <= v.Length - step; k += step)
                W.StoreD(W.DivD(W.LoadD(ref p, (nuint)k), dv), ref p, (nuint)k);
        }
        for (; k < v.Length; k++) Unsafe.Add(ref p, k) /= d;
    }

    // ---------------- merging partial statistics ----------------

    /// <summary>
    /// Chan et al.'s pairwise update: folds (countB, meanB, m2B) into (count, mean, m2).
    /// Exact in the sense that matters: no cancellation between large sums.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ChanMerge(ref double count, ref double mean, ref double m2, double countB, double meanB, double m2B)
    {
        if (countB == 0) return;
        if (count == 0) { count = countB; mean = meanB; m2 = m2B; return; }
        double n = count + countB;
        double delta = meanB - mean;
        mean += delta * (countB / n);
        m2 += m2B + delta * delta * (count * countB / n);
        count = n;
    }
}
