using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace NormKit.Kernels;

/// <summary>
/// The shape the channel norms see: N samples, C channels, S spatial elements per
/// (sample, channel). Channels-first stores x[n, c, s] (each (n, c) is a contiguous plane of S);
/// channels-last stores x[n, s, c], an (N*S) x C matrix whose columns are the channels.
/// Channels-first with S = 1 is the same memory as channels-last, and is run as such.
/// </summary>
internal readonly record struct ChannelLayout(int N, int C, int S, bool ChannelsLast)
{
    public long Count => (long)N * S;                       // elements per channel
    public bool AsColumns => ChannelsLast || S == 1;         // run as a (N*S) x C matrix
    public int Rows => N * S;
    public int Planes => N * C;

    /// <summary>The layout of a validated shape: (N, C, *spatial), or (N, *spatial, C) when channels-last.</summary>
    public static ChannelLayout Of(ReadOnlySpan<int> shape, bool channelsLast)
    {
        int c = channelsLast ? shape[^1] : shape[1], s = 1;
        for (int i = 1; i < shape.Length; i++)
            if (i != (channelsLast ? shape.Length - 1 : 1)) s *= shape[i];
        return new ChannelLayout(shape[0], c, s, channelsLast);
    }
}

/// <summary>
/// The kernels shared by BatchNorm, GroupNorm and InstanceNorm: every one of them normalizes
/// with statistics per (sample, channel) plane merged over some set of planes (BatchNorm: all
/// samples of a channel; GroupNorm: the channels of a group; InstanceNorm: none), then applies
/// a per-channel affine. Callers have validated every length; this class trusts them.
/// </summary>
/// <remarks>
/// Everything accumulates in double. Statistics are two-pass per block of memory while it is
/// in cache, merged with Chan's formula in block order, so they read x once from memory and
/// do not depend on the thread count. An optional mask (one bool per (n, s) position, false =
/// padding) excludes positions from every statistic and sum; masked outputs and input
/// gradients are written as 0.
/// Per-channel parameters of the element-wise passes are either one value per channel
/// (<c>perPlane</c> false: BatchNorm) or one per (n, c) plane (<c>perPlane</c> true: GroupNorm,
/// InstanceNorm), indexed n * C + c.
/// </remarks>
internal static unsafe class ChannelKernel
{
    /// <summary>A job the chunk runners can size: its layout and the units per chunk.</summary>
    private interface IChannelJob : IKernelJob
    {
        ChannelLayout L { get; }
        int PerChunk { get; set; }
    }

    private const int ChunkElements = 16 * 1024;

    // One named job type per kind of pass. L, PerChunk and Path are what the runners need.

    // Per-plane moments; channels-last runs one sample per task.
    private struct MomentsJob<T> : IChannelJob where T : unmanaged
    {
        public T* X;
        public bool* Mask;
        public double* Count, Mean, M2;   // per (n, c) plane
        public double* Scratch;           // channels-last: 2 * C doubles per sample, rented by the calling thread
        public ChannelLayout L { get; set; }
        public int PerChunk { get; set; }
        public SimdPath Path { get; set; }
    }

    // Column moments or gradient sums of blocks of rows that may span samples (channels-last, no mask).
    private struct ColumnBlocksJob<T> : IChannelJob where T : unmanaged
    {
        public T* X, Dy;
        public double* Mean;       // the means the gradient sums are taken about
        public double* Partials;   // per block: two rows of C (mean and M2, or sum and dot)
        public ChannelLayout L { get; set; }
        public int PerChunk { get; set; }
        public SimdPath Path { get; set; }
    }

    // The merge of ColumnBlocksJob's partials, in block order for every column: chunks of columns.
    private struct ColumnMergeJob : IKernelJob
    {
        public double* Partials;          // per block: two rows of C
        public double* Count;             // moments: Chan's merge into (Count, First, Second); null: sums added into (First, Second)
        public double* First, Second;     // mean and M2, or sum and dot; per channel
        public ChannelLayout L;
        public int BlockRows, Columns;    // rows per block, columns per chunk
        public SimdPath Path { get; set; }
    }

    // Per-plane gradient sums; channels-last runs one sample per task.
    private struct GradSumsJob<T> : IChannelJob where T : unmanaged
    {
        public T* Dy, X;
        public bool* Mask;
        public double* Mean;       // per channel, or per plane when PerPlane
        public double* Sum, Dot;   // per (n, c) plane
        public bool PerPlane;
        public ChannelLayout L { get; set; }
        public int PerChunk { get; set; }
        public SimdPath Path { get; set; }
    }

    // BatchNorm's fused training forward: one channel per task.
    private struct FusedForwardJob<T> : IKernelJob where T : unmanaged
    {
        public T* X, Y, Weight, Bias;     // Weight, Bias: null when absent
        public double* Count, Mean, M2;   // per channel, written
        public double Eps;
        public ChannelLayout L;
        public SimdPath Path { get; set; }
    }

    // GroupNorm's fused forward: chunks of whole (sample, group) segments.
    private struct FusedGroupJob<T> : IKernelJob where T : unmanaged
    {
        public T* X, Y, Weight, Bias;          // Weight, Bias: null when absent
        public double* Count, Mean, M2;        // per (n, c) plane, written
        public double* SaveMean, SaveRstd;     // per (n, g), written unless null
        public double Eps;
        public ChannelLayout L;
        public int Groups, PerChunk;           // segments per chunk
        public SimdPath Path { get; set; }
    }

    // BatchNorm's fused training backward: one channel per task.
    private struct FusedBackwardJob<T> : IKernelJob where T : unmanaged
    {
        public T* Dy, X, Dx, Weight;      // Weight: null when absent
        public double* Mean, Rstd;        // per channel, read
        public double* Sum, Dot;          // per channel, written
        public ChannelLayout L;
        public SimdPath Path { get; set; }
    }

    // The element-wise passes: Normalize (Hi, Lo, A, B), InputGrad (Hi, Lo, P, Q, R), Scale (P),
    // Threshold and Gate (A, B, U); one value per channel, or per (n, c) plane when PerPlane.
    private struct ElementwiseJob<T> : IChannelJob where T : unmanaged
    {
        public T* X, Dy, Out;
        public T* Hi, Lo, A, B, P, Q, R, U;
        public ushort* LowX, LowOut;   // with Low set (T float, NormalizeOp only, no mask): the 16-bit x and y, instead of X and Out
        public LowType Low;
        public float* Scratch;         // with Low set: one block (LowBlockOf) per worker slot
        public int ScratchSlots;
        public bool* Mask;
        public bool PerPlane;
        public ChannelLayout L { get; set; }
        public int PerChunk { get; set; }
        public SimdPath Path { get; set; }
    }

    /// <summary>Rows per block of the channels-last column passes: about <see cref="ChunkElements"/> elements.</summary>
    internal static int BlockRows(int c) => Math.Max(1, ChunkElements / c);

    // ============================ statistics ============================

    /// <summary>
    /// Per-plane moments: for each (n, c), the count of unmasked positions, their mean and
    /// M2 = sum((x - mean)^2). Reads x once from memory.
    /// </summary>
    public static void PlaneMoments<T>(ReadOnlySpan<T> x, ChannelLayout l, ReadOnlySpan<bool> mask, Span<double> count, Span<double> mean, Span<double> m2)
        where T : unmanaged
    {
        count.Clear(); mean.Clear(); m2.Clear();
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        // Channels-last samples need 2 * C doubles of block moments each. Rented here, on the
        // calling thread, so a helper thread never rents from the pool (a helper's pool cache
        // can be trimmed, and its next rent would allocate).
        double[]? scratch = l.AsColumns ? System.Buffers.ArrayPool<double>.Shared.Rent(2 * l.C * l.N) : null;
        try
        {
            fixed (T* px = x)
            fixed (bool* pk = mask)
            fixed (double* pc = count, pm = mean, pq = m2, ps = scratch)
            {
                var job = new MomentsJob<T> { X = px, Mask = mask.IsEmpty ? null : pk, Mean = pm, M2 = pq, Count = pc, Scratch = ps, L = l, Path = path };
                RunPerSampleOrPlanes<T, MomentsJob<T>, SampleColumnMomentsOp<T>, PlaneMomentsOp<T>>(ref job);
            }
        }
        finally
        {
            if (scratch != null) System.Buffers.ArrayPool<double>.Shared.Return(scratch);
        }
    }

    private readonly struct PlaneMomentsOp<T> : IKernelBody<T, MomentsJob<T>> where T : unmanaged
    {
        public static void Run<W, TV, TD>(ref MomentsJob<T> j, int chunk, bool simd) where W : IWidth<T, TV, TD>
        {
            int s = j.L.S;
            int p0 = chunk * j.PerChunk, p1 = Math.Min(j.L.Planes, p0 + j.PerChunk);
            for (int p = p0; p < p1; p++)
            {
                ref T xp = ref j.X[(nint)p * s];
                double cnt = 0, mu = 0, q = 0;
                if (j.Mask == null) SegmentMoments<T, W, TV, TD>(ref xp, s, simd, out cnt, out mu, out q);
                else
                {
                    // Runs of unmasked positions, each two-pass, merged in order.
                    foreach (var (a, b) in new RowRuns(j.Mask + (nint)(p / j.L.C) * s, 0, s, int.MaxValue))
                    {
                        SegmentMoments<T, W, TV, TD>(ref Unsafe.Add(ref xp, a), b - a, simd, out double rc, out double rm, out double rq);
                        Reductions.ChanMerge(ref cnt, ref mu, ref q, rc, rm, rq);
                    }
                }
                j.Count[p] = cnt; j.Mean[p] = mu; j.M2[p] = q;
            }
        }
    }

    private static void SegmentMoments<T, W, TV, TD>(ref T x, int n, bool simd, out double count, out double mean, out double m2)
        where T : unmanaged where W : IWidth<T, TV, TD>
    {
        count = n;
        mean = Reductions.Sum<T, W, TV, TD>(ref x, n, simd) / n;
        m2 = Reductions.SumSquaredDeviations<T, W, TV, TD>(ref x, n, mean, simd);
    }

    // One sample of a channels-last input: its S rows in blocks of BlockRows(C), each block's
    // column moments merged into the sample's planes in block order. Masked rows are skipped
    // by splitting the block into runs of unmasked rows.
    private readonly struct SampleColumnMomentsOp<T> : IKernelBody<T, MomentsJob<T>> where T : unmanaged
    {
        public static void Run<W, TV, TD>(ref MomentsJob<T> j, int n, bool simd) where W : IWidth<T, TV, TD>
        {
            int c = j.L.C, s = j.L.S;
            double* cnt = j.Count + (nint)n * c, mean = j.Mean + (nint)n * c, m2 = j.M2 + (nint)n * c;
            var bm = new Span<double>(j.Scratch + (nint)n * 2 * c, c);
            var bq = new Span<double>(j.Scratch + (nint)n * 2 * c + c, c);
            int r0 = n * s, r1 = r0 + s;
            foreach (var (a, b) in new RowRuns(j.Mask, r0, r1, j.PerChunk))
            {
                ref T xb = ref j.X[(nint)a * c];
                int rows = b - a;
                bm.Clear(); bq.Clear();
                Reductions.ColumnSums<T, W, TV, TD>(ref xb, rows, c, bm, simd);
                Reductions.Divide<T, W, TV, TD>(bm, rows, simd);
                Reductions.ColumnSquaredDeviations<T, W, TV, TD>(ref xb, rows, c, bm, bq, simd);
                for (int k = 0; k < c; k++) Reductions.ChanMerge(ref cnt[k], ref mean[k], ref m2[k], rows, bm[k], bq[k]);
            }
        }
    }

    /// <summary>
    /// Runs of consecutive unmasked rows in [from, to), each at most <c>max</c> long. Without a
    /// mask: consecutive blocks of <c>max</c> rows.
    /// </summary>
    // The runs of unmasked positions in [from, to), each at most max long (no mask: runs of max).
    // The one walk over a mask that every masked pass uses.
    private ref struct RowRuns(bool* mask, int from, int to, int max)
    {
        private int _next = from;
        public (int, int) Current { get; private set; }
        public readonly RowRuns GetEnumerator() => this;
        public bool MoveNext()
        {
            int a = _next;
            if (mask != null) while (a < to && !mask[a]) a++;
            if (a >= to) return false;
            int b;
            if (mask == null) b = to - a <= max ? to : a + max;   // no mask: straight to the run's end
            else
            {
                b = a;
                while (b < to && b - a < max && mask[b]) b++;
            }
            Current = (a, b);
            _next = b;
            return true;
        }
    }

    /// <summary>
    /// Per-channel batch statistics (BatchNorm): count, mean and M2 of channel c over all samples.
    /// Channels-first: plane moments merged over n in order. Channels-last without a mask:
    /// blocks of rows (which may span samples) merged in block order. With a mask: plane
    /// moments of the unmasked positions, merged over n.
    /// </summary>
    public static void ChannelMoments<T>(ReadOnlySpan<T> x, ChannelLayout l, ReadOnlySpan<bool> mask,
        Span<double> count, Span<double> mean, Span<double> m2, Span<double> scratch) where T : unmanaged
    {
        count.Clear(); mean.Clear(); m2.Clear();
        if (l.Count == 0) return;
        if (l.AsColumns && mask.IsEmpty)
        {
            var path = Simd.Dispatch();
            int per = BlockRows(l.C), blocks = (l.Rows + per - 1) / per;
            Span<double> part = scratch[..(2 * blocks * l.C)];   // each block clears its own rows
            fixed (T* px = x)
            fixed (double* pp = part, pcount = count, pmean = mean, pm2 = m2)
            {
                var job = new ColumnBlocksJob<T> { X = px, Partials = pp, L = l, Path = path, PerChunk = per };
                Width.For<T, ColumnBlocksJob<T>, ColumnBlockMomentsOp<T>>(blocks, ref job);
                MergeColumnBlocks<T>(pp, l, pcount, pmean, pm2, path);
            }
            return;
        }
        Span<double> pc = scratch[..l.Planes], pm = scratch.Slice(l.Planes, l.Planes), pq = scratch.Slice(2 * l.Planes, l.Planes);
        PlaneMoments(x, l, mask, pc, pm, pq);
        for (int n = 0; n < l.N; n++)
            for (int c = 0; c < l.C; c++)
            {
                int p = n * l.C + c;
                Reductions.ChanMerge(ref count[c], ref mean[c], ref m2[c], pc[p], pm[p], pq[p]);
            }
    }

    /// <summary>
    /// Merges per-block column partials in block order, in parallel over chunks of columns:
    /// with <paramref name="count"/>, Chan's merge of (mean, M2) rows into count, first, second;
    /// without, the sum and dot rows added into first, second. Either way each column sees its
    /// blocks in the order of the serial merge, so the bits are the same for any thread count.
    /// </summary>
    private static void MergeColumnBlocks<T>(double* partials, ChannelLayout l, double* count, double* first, double* second, SimdPath path)
        where T : unmanaged
    {
        int per = BlockRows(l.C), blocks = (l.Rows + per - 1) / per;
        // About MergesPerChunk column updates per chunk, columns a multiple of the widest vector.
        int columns = Math.Max(16, MergesPerChunk / blocks / 16 * 16);
        var job = new ColumnMergeJob { Partials = partials, Count = count, First = first, Second = second, L = l, BlockRows = per, Columns = columns, Path = path };
        Width.For<T, ColumnMergeJob, ColumnMergeOp<T>>((l.C + columns - 1) / columns, ref job);
    }

    private const int MergesPerChunk = 4096;

    // Blocks outer, columns inner: Chan's two divisions depend only on the counts, which are
    // the same for every column of a block, so they are taken once per block (the values
    // Reductions.ChanMerge computes per column: rows / n and count * rows / n), and the column
    // update is the rest of ChanMerge, lane by lane in the same order.
    private readonly struct ColumnMergeOp<T> : IKernelBody<T, ColumnMergeJob> where T : unmanaged
    {
        public static void Run<W, TV, TD>(ref ColumnMergeJob j, int chunk, bool simd) where W : IWidth<T, TV, TD>
        {
            int cols = j.L.C, per = j.BlockRows, total = j.L.Rows, blocks = (total + per - 1) / per;
            int c0 = chunk * j.Columns, c1 = Math.Min(cols, c0 + j.Columns), step = W.WideCount / 2;
            ref double m = ref j.First[0], q = ref j.Second[0];
            bool moments = j.Count != null;
            if (moments)   // the first block merges into a zero count: a copy
                for (int c = c0; c < c1; c++) { j.First[c] = j.Partials[c]; j.Second[c] = j.Partials[cols + c]; }
            for (int b = moments ? 1 : 0; b < blocks; b++)
            {
                ref double pm = ref j.Partials[(nint)2 * b * cols], pq = ref j.Partials[((nint)2 * b + 1) * cols];
                int c = c0;
                if (moments)
                {
                    double count = (double)b * per, rows = Math.Min(per, total - b * per), n = count + rows;
                    double fb = rows / n, fab = count * rows / n;
                    if (simd)
                    {
                        TD vb = W.SplatD(fb), vab = W.SplatD(fab);
                        for (; c <= c1 - step; c += step)
                        {
                            nuint u = (nuint)c;
                            TD mean = W.LoadD(ref m, u), delta = W.SubD(W.LoadD(ref pm, u), mean);
                            W.StoreD(W.AddD(mean, W.MulD(delta, vb)), ref m, u);
                            W.StoreD(W.AddD(W.LoadD(ref q, u), W.AddD(W.LoadD(ref pq, u), W.MulD(W.MulD(delta, delta), vab))), ref q, u);
                        }
                    }
                    for (; c < c1; c++)
                    {
                        double delta = Unsafe.Add(ref pm, c) - Unsafe.Add(ref m, c);
                        Unsafe.Add(ref m, c) += delta * fb;
                        Unsafe.Add(ref q, c) += Unsafe.Add(ref pq, c) + delta * delta * fab;
                    }
                }
                else
                {
                    if (simd)
                        for (; c <= c1 - step; c += step)
                        {
                            nuint u = (nuint)c;
                            W.StoreD(W.AddD(W.LoadD(ref m, u), W.LoadD(ref pm, u)), ref m, u);
                            W.StoreD(W.AddD(W.LoadD(ref q, u), W.LoadD(ref pq, u)), ref q, u);
                        }
                    for (; c < c1; c++)
                    {
                        Unsafe.Add(ref m, c) += Unsafe.Add(ref pm, c);
                        Unsafe.Add(ref q, c) += Unsafe.Add(ref pq, c);
                    }
                }
            }
            if (moments) for (int c = c0; c < c1; c++) j.Count[c] = total;
        }
    }

    /// <summary>Doubles of scratch <see cref="ChannelMoments{T}"/> needs: the path's own, not the larger of both.</summary>
    public static int ChannelMomentsScratch(ChannelLayout l, bool masked) => l.AsColumns && !masked ? ColumnPartials(l) : 3 * l.Planes;

    /// <summary>Doubles of scratch <see cref="ChannelGradSums{T}"/> needs.</summary>
    public static int ChannelGradSumsScratch(ChannelLayout l, bool masked) => l.AsColumns && !masked ? ColumnPartials(l) : 2 * l.Planes;

    // Two rows of C per block of the column path.
    private static int ColumnPartials(ChannelLayout l) => 2 * ((l.Rows + BlockRows(l.C) - 1) / BlockRows(l.C)) * l.C;

    private readonly struct ColumnBlockMomentsOp<T> : IKernelBody<T, ColumnBlocksJob<T>> where T : unmanaged
    {
        public static void Run<W, TV, TD>(ref ColumnBlocksJob<T> j, int block, bool simd) where W : IWidth<T, TV, TD>
        {
            int c = j.L.C;
            int r0 = block * j.PerChunk, rows = Math.Min(j.PerChunk, j.L.Rows - r0);
            var mean = new Span<double>(j.Partials + (nint)2 * block * c, c);
            var m2 = new Span<double>(j.Partials + ((nint)2 * block + 1) * c, c);
            mean.Clear(); m2.Clear();   // the sums below accumulate into them
            ref T x = ref j.X[(nint)r0 * c];
            Reductions.ColumnSums<T, W, TV, TD>(ref x, rows, c, mean, simd);
            Reductions.Divide<T, W, TV, TD>(mean, rows, simd);
            Reductions.ColumnSquaredDeviations<T, W, TV, TD>(ref x, rows, c, mean, m2, simd);
        }
    }

    // ============================ fused per-channel passes (channels-first) ============================
    // When one channel (its N planes) fits in cache, BatchNorm's training passes run channel by
    // channel: statistics, then the element-wise pass over the same planes while they are still
    // in cache. x is then read once from memory instead of twice. Each channel is one task and
    // its planes are merged in sample order, so the results are the bits of the unfused path.

    /// <summary>The most bytes one channel's fused pass may touch (x, and dy in backward): about an L2 cache.</summary>
    internal static long FuseLimitBytes = 512 * 1024;

    /// <summary>Planes shorter than this (bytes) are not fused: hopping between many small strided
    /// planes defeats the prefetchers, and the two-pass path streams memory in order (measured:
    /// 2x slower fused at [64,256,14,14], 1.3x faster at [32,64,56,56] forward).</summary>
    private const int FuseMinPlaneBytes = 4096;

    /// <summary>
    /// Whether the fused per-channel passes apply: channels-first, no mask, planes of at least
    /// 4 KiB, and a channel's bytes (x, plus dy for backward) within <see cref="FuseLimitBytes"/>.
    /// </summary>
    public static bool FusesPerChannel(ChannelLayout l, int elementSize, bool masked, bool backward) =>
        !masked && !l.AsColumns && (long)l.S * elementSize >= FuseMinPlaneBytes
        && l.Count * elementSize * (backward ? 2 : 1) <= FuseLimitBytes;

    /// <summary>
    /// BatchNorm training forward, fused per channel: count, mean and M2 of each channel (as
    /// <see cref="ChannelMoments{T}"/>), then y = ((x - hi) - lo) * a + b with
    /// a = weight / sqrt(M2 / count + eps) as <see cref="Normalize{T}"/>. Reads x once from memory.
    /// </summary>
    public static void TrainForwardPerChannel<T>(ReadOnlySpan<T> x, ChannelLayout l, ReadOnlySpan<T> weight, ReadOnlySpan<T> bias, double eps,
        Span<T> y, Span<double> count, Span<double> mean, Span<double> m2)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        count.Clear(); mean.Clear(); m2.Clear();
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        fixed (T* px = x, py = y, pw = weight, pb = bias)
        fixed (double* pc = count, pm = mean, pq = m2)
        {
            var job = new FusedForwardJob<T> { X = px, Y = py, Weight = weight.IsEmpty ? null : pw, Bias = bias.IsEmpty ? null : pb,
                Mean = pm, M2 = pq, Count = pc, Eps = eps, L = l, Path = path };
            Width.For<T, FusedForwardJob<T>, TrainForwardOp<T>>(l.C, ref job);
        }
    }

    private readonly struct TrainForwardOp<T> : IKernelBody<T, FusedForwardJob<T>> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Run<W, TV, TD>(ref FusedForwardJob<T> j, int c, bool simd) where W : IWidth<T, TV, TD>
        {
            var l = j.L;
            double cnt = 0, mu = 0, q = 0;
            for (int n = 0; n < l.N; n++)
            {
                SegmentMoments<T, W, TV, TD>(ref j.X[(nint)(n * l.C + c) * l.S], l.S, simd, out double pc, out double pm, out double pq);
                Reductions.ChanMerge(ref cnt, ref mu, ref q, pc, pm, pq);
            }
            j.Count[c] = cnt; j.Mean[c] = mu; j.M2[c] = q;
            double rs = ChannelCoefficients.Rstd(q / cnt, j.Eps);
            Num.Split(mu, out T hi, out T lo);
            T a = ChannelCoefficients.Scale<T>(rs, j.Weight == null ? 1 : Num.D(j.Weight[c]));
            T b = j.Bias == null ? T.Zero : j.Bias[c];
            for (int n = 0; n < l.N; n++)
            {
                nint at = (nint)(n * l.C + c) * l.S;
                NormalizeSpan<T, W, TV, TD, Broadcast<T, TV>, Broadcast<T, TV>>(ref j.X[at], ref j.Y[at], l.S,
                    new(W.Splat(hi), hi), new(W.Splat(lo), lo), new(W.Splat(a), a), new(W.Splat(b), b), simd);
            }
        }
    }

    // GroupNorm (and InstanceNorm, one channel per group) channels-first: a (sample, group) is
    // contiguous, so its plane moments, its merge and the normalization of its planes run as
    // one task while the group is in cache, and x is read once from memory. The same plane
    // reductions, merge order and coefficients as the two-pass path, so the same bits.

    /// <summary>The most bytes of x one (sample, group) may have for the fused GroupNorm forward: with y, within an L2 cache.</summary>
    internal static long GroupFuseLimitBytes = 256 * 1024;

    /// <summary>Whether GroupNorm's forward fuses per group: channels-first, a group's x within <see cref="GroupFuseLimitBytes"/>.</summary>
    public static bool FusesPerGroup(ChannelLayout l, int groups, int elementSize) =>
        !l.AsColumns && (long)(l.C / groups) * l.S * elementSize <= GroupFuseLimitBytes;

    /// <summary>
    /// GroupNorm forward, fused per (sample, group): per-plane count, mean and M2 (as
    /// <see cref="PlaneMoments{T}"/>), the group's mean and rstd (<see cref="ChannelCoefficients.Group"/>),
    /// then y = ((x - hi) - lo) * a + b over its planes as <see cref="Normalize{T}"/> with
    /// a = weight[c] * rstd. saveMean and saveRstd (N * G, optional) receive the group's statistics.
    /// </summary>
    public static void GroupForwardPerGroup<T>(ReadOnlySpan<T> x, ChannelLayout l, int groups, ReadOnlySpan<T> weight, ReadOnlySpan<T> bias, double eps,
        Span<T> y, Span<double> count, Span<double> mean, Span<double> m2, Span<double> saveMean, Span<double> saveRstd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        int segments = l.N * groups, per = Math.Max(1, ChunkElements / (l.C / groups * l.S));
        fixed (T* px = x, py = y, pw = weight, pb = bias)
        fixed (double* pc = count, pm = mean, pq = m2, psm = saveMean, psr = saveRstd)
        {
            var job = new FusedGroupJob<T> { X = px, Y = py, Weight = weight.IsEmpty ? null : pw, Bias = bias.IsEmpty ? null : pb,
                Count = pc, Mean = pm, M2 = pq, SaveMean = saveMean.IsEmpty ? null : psm, SaveRstd = saveRstd.IsEmpty ? null : psr,
                Eps = eps, L = l, Groups = groups, PerChunk = per, Path = path };
            Width.For<T, FusedGroupJob<T>, GroupForwardOp<T>>((segments + per - 1) / per, ref job);
        }
    }

    private readonly struct GroupForwardOp<T> : IKernelBody<T, FusedGroupJob<T>> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Run<W, TV, TD>(ref FusedGroupJob<T> j, int chunk, bool simd) where W : IWidth<T, TV, TD>
        {
            var l = j.L;
            int cg = l.C / j.Groups, s = l.S;
            int g0 = chunk * j.PerChunk, g1 = Math.Min(l.N * j.Groups, g0 + j.PerChunk);
            for (int seg = g0; seg < g1; seg++)
            {
                int c0 = seg % j.Groups * cg, p0 = seg / j.Groups * l.C + c0;
                for (int p = p0; p < p0 + cg; p++)
                {
                    SegmentMoments<T, W, TV, TD>(ref j.X[(nint)p * s], s, simd, out double pc, out double pm, out double pq);
                    j.Count[p] = pc; j.Mean[p] = pm; j.M2[p] = pq;
                }
                ChannelCoefficients.Group(new ReadOnlySpan<double>(j.Count + p0, cg), new ReadOnlySpan<double>(j.Mean + p0, cg),
                    new ReadOnlySpan<double>(j.M2 + p0, cg), j.Eps, out double mu, out double rs);
                if (j.SaveMean != null) j.SaveMean[seg] = mu;
                if (j.SaveRstd != null) j.SaveRstd[seg] = rs;
                Num.Split(mu, out T hi, out T lo);
                for (int k = 0; k < cg; k++)
                {
                    T a = ChannelCoefficients.Scale<T>(rs, j.Weight == null ? 1 : Num.D(j.Weight[c0 + k]));
                    T b = j.Bias == null ? T.Zero : j.Bias[c0 + k];
                    nint at = (nint)(p0 + k) * s;
                    NormalizeSpan<T, W, TV, TD, Broadcast<T, TV>, Broadcast<T, TV>>(ref j.X[at], ref j.Y[at], s,
                        new(W.Splat(hi), hi), new(W.Splat(lo), lo), new(W.Splat(a), a), new(W.Splat(b), b), simd);
                }
            }
        }
    }

    /// <summary>
    /// BatchNorm training backward, fused per channel: the channel's sum(dy) and
    /// sum((x - mean) * dy), then dx = dy * p + ((x - hi) - lo) * q + r over the same planes, with
    /// p, q, r as <see cref="InputGrad{T}"/>. Reads x and dy once from memory, writes dx once.
    /// sum and dot receive the channel sums (for the parameter gradients).
    /// </summary>
    public static void TrainBackwardPerChannel<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, ChannelLayout l, ReadOnlySpan<T> weight,
        ReadOnlySpan<double> mean, ReadOnlySpan<double> rstd, Span<T> dx, Span<double> sum, Span<double> dot)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        sum.Clear(); dot.Clear();
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        fixed (T* pdy = dy, px = x, pdx = dx, pw = weight)
        fixed (double* pm = mean, pr = rstd, ps = sum, pd = dot)
        {
            var job = new FusedBackwardJob<T> { Dy = pdy, X = px, Dx = pdx, Weight = weight.IsEmpty ? null : pw, Mean = pm, Rstd = pr, Sum = ps, Dot = pd, L = l, Path = path };
            Width.For<T, FusedBackwardJob<T>, TrainBackwardOp<T>>(l.C, ref job);
        }
    }

    private readonly struct TrainBackwardOp<T> : IKernelBody<T, FusedBackwardJob<T>> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Run<W, TV, TD>(ref FusedBackwardJob<T> j, int c, bool simd) where W : IWidth<T, TV, TD>
        {
            var l = j.L;
            double m = j.Mean[c], sum = 0, dot = 0;
            for (int n = 0; n < l.N; n++)
            {
                nint at = (nint)(n * l.C + c) * l.S;
                Reductions.SumAndDot<T, W, TV, TD>(ref j.Dy[at], ref j.X[at], l.S, m, simd, out double s, out double d);
                sum += s; dot += d;
            }
            j.Sum[c] = sum; j.Dot[c] = dot;
            Num.Split(m, out T hi, out T lo);
            ChannelCoefficients.BatchBackward(j.Rstd[c], j.Weight == null ? 1 : Num.D(j.Weight[c]), sum, dot, l.Count, out T p, out T q, out T r);
            for (int n = 0; n < l.N; n++)
            {
                nint at = (nint)(n * l.C + c) * l.S;
                InputGradSpan<T, W, TV, TD, Broadcast<T, TV>>(ref j.Dy[at], ref j.X[at], ref j.Dx[at], l.S, new(W.Splat(hi), hi), new(W.Splat(lo), lo),
                    new(W.Splat(p), p), new(W.Splat(q), q), new(W.Splat(r), r), simd);
            }
        }
    }

    // ============================ backward sums ============================

    /// <summary>
    /// Per-plane gradient sums over unmasked positions: sum[p] = sum(dy), dot[p] = sum((x - m) * dy)
    /// with m = mean[c] (perPlane false) or mean[p] (perPlane true). Reads x and dy once.
    /// </summary>
    public static void PlaneGradSums<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, ChannelLayout l, ReadOnlySpan<bool> mask,
        ReadOnlySpan<double> mean, bool perPlane, Span<double> sum, Span<double> dot) where T : unmanaged
    {
        sum.Clear(); dot.Clear();
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        fixed (T* pdy = dy, px = x)
        fixed (bool* pk = mask)
        fixed (double* pm = mean, ps = sum, pd = dot)
        {
            var job = new GradSumsJob<T> { Dy = pdy, X = px, Mask = mask.IsEmpty ? null : pk, Mean = pm, Sum = ps, Dot = pd, L = l, Path = path, PerPlane = perPlane };
            RunPerSampleOrPlanes<T, GradSumsJob<T>, SampleColumnGradSumsOp<T>, PlaneGradSumsOp<T>>(ref job);
        }
    }

    private readonly struct PlaneGradSumsOp<T> : IKernelBody<T, GradSumsJob<T>> where T : unmanaged
    {
        public static void Run<W, TV, TD>(ref GradSumsJob<T> j, int chunk, bool simd) where W : IWidth<T, TV, TD>
        {
            int s = j.L.S;
            int p0 = chunk * j.PerChunk, p1 = Math.Min(j.L.Planes, p0 + j.PerChunk);
            for (int p = p0; p < p1; p++)
            {
                double m = j.Mean[j.PerPlane ? p : p % j.L.C];
                ref T dyp = ref j.Dy[(nint)p * s];
                ref T xp = ref j.X[(nint)p * s];
                double sum = 0, dot = 0;
                foreach (var (a, b) in new RowRuns(j.Mask == null ? null : j.Mask + (nint)(p / j.L.C) * s, 0, s, int.MaxValue))
                {
                    Reductions.SumAndDot<T, W, TV, TD>(ref Unsafe.Add(ref dyp, a), ref Unsafe.Add(ref xp, a), b - a, m, simd, out double rs, out double rd);
                    sum += rs; dot += rd;
                }
                j.Sum[p] = sum; j.Dot[p] = dot;
            }
        }
    }

    private readonly struct SampleColumnGradSumsOp<T> : IKernelBody<T, GradSumsJob<T>> where T : unmanaged
    {
        public static void Run<W, TV, TD>(ref GradSumsJob<T> j, int n, bool simd) where W : IWidth<T, TV, TD>
        {
            int c = j.L.C, s = j.L.S;
            var m = new ReadOnlySpan<double>(j.Mean + (j.PerPlane ? (nint)n * c : 0), c);
            var sum = new Span<double>(j.Sum + (nint)n * c, c);
            var dot = new Span<double>(j.Dot + (nint)n * c, c);
            foreach (var (a, b) in new RowRuns(j.Mask, n * s, n * s + s, j.PerChunk))
                Reductions.ColumnSumAndDot<T, W, TV, TD>(ref j.Dy[(nint)a * c], ref j.X[(nint)a * c], b - a, c, m, sum, dot, simd);
        }
    }

    /// <summary>
    /// Per-channel sums over every sample: sum[c] = Σ dy, dot[c] = Σ (x - mean[c]) * dy over the
    /// unmasked positions of channel c. Channels-last without a mask: blocks of rows
    /// (<see cref="ColumnGradSums{T}"/>); otherwise per-plane sums added over n in order. Either
    /// way the order is fixed by the shape, so the bits do not depend on the thread count.
    /// With dy = x and mean = 0, dot is Σ x² (PowerNorm's quadratic mean).
    /// </summary>
    public static void ChannelGradSums<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, ChannelLayout l, ReadOnlySpan<bool> mask,
        ReadOnlySpan<double> mean, Span<double> sum, Span<double> dot, Span<double> scratch) where T : unmanaged
    {
        if (l.AsColumns && mask.IsEmpty) { ColumnGradSums(dy, x, l, mean, sum, dot, scratch); return; }
        sum.Clear(); dot.Clear();
        Span<double> ps = scratch[..l.Planes], pd = scratch.Slice(l.Planes, l.Planes);
        PlaneGradSums(dy, x, l, mask, mean, perPlane: false, ps, pd);
        for (int n = 0; n < l.N; n++)
            for (int c = 0; c < l.C; c++) { sum[c] += ps[n * l.C + c]; dot[c] += pd[n * l.C + c]; }
    }

    /// <summary>
    /// Per-channel gradient sums for BatchNorm without a mask in channels-last layout: blocks
    /// of rows spanning samples, added in block order (fewer, longer blocks than per sample).
    /// </summary>
    public static void ColumnGradSums<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, ChannelLayout l, ReadOnlySpan<double> mean,
        Span<double> sum, Span<double> dot, Span<double> scratch) where T : unmanaged
    {
        sum.Clear(); dot.Clear();
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        int per = BlockRows(l.C), blocks = (l.Rows + per - 1) / per;
        Span<double> part = scratch[..(2 * blocks * l.C)];   // each block clears its own rows
        fixed (T* pdy = dy, px = x)
        fixed (double* pp = part, pm = mean)
        {
            var job = new ColumnBlocksJob<T> { Dy = pdy, X = px, Partials = pp, Mean = pm, L = l, Path = path, PerChunk = per };
            Width.For<T, ColumnBlocksJob<T>, ColumnBlockGradSumsOp<T>>(blocks, ref job);
            fixed (double* ps = sum, pd = dot) MergeColumnBlocks<T>(pp, l, null, ps, pd, path);
        }
    }

    private readonly struct ColumnBlockGradSumsOp<T> : IKernelBody<T, ColumnBlocksJob<T>> where T : unmanaged
    {
        public static void Run<W, TV, TD>(ref ColumnBlocksJob<T> j, int block, bool simd) where W : IWidth<T, TV, TD>
        {
            int c = j.L.C;
            int r0 = block * j.PerChunk, rows = Math.Min(j.PerChunk, j.L.Rows - r0);
            var sum = new Span<double>(j.Partials + (nint)2 * block * c, c);
            var dot = new Span<double>(j.Partials + ((nint)2 * block + 1) * c, c);
            sum.Clear(); dot.Clear();   // the sums below accumulate into them
            Reductions.ColumnSumAndDot<T, W, TV, TD>(ref j.Dy[(nint)r0 * c], ref j.X[(nint)r0 * c], rows, c, new ReadOnlySpan<double>(j.Mean, c), sum, dot, simd);
        }
    }

    // ============================ element-wise passes ============================
    // Channels-first: one plane at a time with its parameters broadcast. Channels-last: one
    // row at a time with the parameters loaded per column (from the row's sample when
    // perPlane). Each op is one generic body over a parameter source; the scalar path runs the
    // same body's scalar loop from the start (simd = false), so every path computes the same
    // operations in the same order.

    /// <summary>y = ((x - hi) - lo) * a + b. Reads x once, writes y once.</summary>
    public static void Normalize<T>(ReadOnlySpan<T> x, ChannelLayout l, ReadOnlySpan<bool> mask, bool perPlane,
        ReadOnlySpan<T> hi, ReadOnlySpan<T> lo, ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> y)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        fixed (T* px = x, py = y, ph = hi, pl = lo, pa = a, pb = b)
        fixed (bool* pk = mask)
        {
            // Lo null: every lo is +0 (eval), and its subtraction is skipped.
            var job = new ElementwiseJob<T> { X = px, Out = py, Hi = ph, Lo = AllPositiveZero(lo) ? null : pl, A = pa, B = pb, Mask = mask.IsEmpty ? null : pk, L = l, Path = path, PerPlane = perPlane };
            RunElementwise<T, Elementwise<T, NormalizeOp<T>>>(ref job);
        }
    }

    /// <summary>
    /// <see cref="Normalize{T}"/> (no mask) on Half or BFloat16 x and y with float coefficients:
    /// each unit (a plane, or a channels-last row) goes through the worker's float scratch slot in
    /// blocks (<see cref="LowPrecision"/>), the float pass runs on it unchanged and y is written
    /// back rounded once: 2 bytes per element in and out, bitwise the float pass on the widened
    /// x, rounded.
    /// </summary>
    public static void NormalizeLow(LowIO io, ChannelLayout l, ReadOnlySpan<float> hi, ReadOnlySpan<float> lo, ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        ElementwiseChunks(l, out int chunks);
        float[] scratch = LowPrecision.RentScratch(LowBlockOf(l), chunks, out int slots);
        try
        {
            fixed (float* ph = hi, pl = lo, pa = a, pb = b, ps = scratch)
            {
                var job = new ElementwiseJob<float>
                {
                    LowX = io.X, LowOut = io.Y, Low = io.Type, Scratch = ps, ScratchSlots = slots, Hi = ph, Lo = AllPositiveZero(lo) ? null : pl, A = pa, B = pb, L = l, Path = path,
                };
                RunElementwise<float, Elementwise<float, NormalizeOp<float>>>(ref job);
            }
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(scratch); }
    }

    // Planes are cut into blocks of this many elements on the 16-bit path (the parameters are
    // broadcast over a plane, so a block is a plane's span): the scratch stays in L1.
    private const int LowBlock = 4096;

    // The 16-bit path's block: a channels-last row whole, a plane in blocks of at most LowBlock.
    private static int LowBlockOf(ChannelLayout l) => l.AsColumns ? l.C : Math.Min(l.S, LowBlock);

    /// <summary>
    /// dx = dy * p + ((x - hi) - lo) * q + r: the input gradient whenever the statistics came from
    /// x itself. Reads x and dy once, writes dx once (overwritten).
    /// </summary>
    public static void InputGrad<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, ChannelLayout l, ReadOnlySpan<bool> mask, bool perPlane,
        ReadOnlySpan<T> hi, ReadOnlySpan<T> lo, ReadOnlySpan<T> p, ReadOnlySpan<T> q, ReadOnlySpan<T> r, Span<T> dx)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        fixed (T* pdy = dy, px = x, pdx = dx, ph = hi, pl = lo, pp = p, pq = q, pr = r)
        fixed (bool* pk = mask)
        {
            var job = new ElementwiseJob<T> { Dy = pdy, X = px, Out = pdx, Hi = ph, Lo = pl, P = pp, Q = pq, R = pr, Mask = mask.IsEmpty ? null : pk, L = l, Path = path, PerPlane = perPlane };
            RunElementwise<T, Elementwise<T, InputGradOp<T>>>(ref job);
        }
    }

    /// <summary>dx = dy * p: the input gradient when the statistics are constants (eval). Reads dy once, writes dx once.</summary>
    public static void Scale<T>(ReadOnlySpan<T> dy, ChannelLayout l, ReadOnlySpan<bool> mask, bool perPlane, ReadOnlySpan<T> p, Span<T> dx)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        fixed (T* pdy = dy, pdx = dx, pp = p)
        fixed (bool* pk = mask)
        {
            var job = new ElementwiseJob<T> { Dy = pdy, Out = pdx, P = pp, Mask = mask.IsEmpty ? null : pk, L = l, Path = path, PerPlane = perPlane };
            RunElementwise<T, Elementwise<T, ScaleOp<T>>>(ref job);
        }
    }

    /// <summary>
    /// y = max(x * a + b, u): an affine with a thresholded linear unit (Filter Response
    /// Normalization's TLU, u = tau). Reads x once, writes y once.
    /// </summary>
    public static void Threshold<T>(ReadOnlySpan<T> x, ChannelLayout l, bool perPlane, ReadOnlySpan<T> a, ReadOnlySpan<T> b, ReadOnlySpan<T> u, Span<T> y)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        fixed (T* px = x, py = y, pa = a, pb = b, pu = u)
        {
            var job = new ElementwiseJob<T> { X = px, Out = py, A = pa, B = pb, U = pu, L = l, Path = path, PerPlane = perPlane };
            RunElementwise<T, Elementwise<T, ThresholdOp<T>>>(ref job);
        }
    }

    /// <summary>
    /// dx = dy where x * a + b &gt;= u, else 0: the gradient through <see cref="Threshold{T}"/>'s
    /// max (to the affine on ties, as TensorFlow's maximum), its comparison recomputed with the
    /// forward's operations. dx may be dy itself. Reads x and dy once, writes dx once.
    /// </summary>
    public static void Gate<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, ChannelLayout l, bool perPlane, ReadOnlySpan<T> a, ReadOnlySpan<T> b, ReadOnlySpan<T> u, Span<T> dx)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (l.Count == 0) return;
        var path = Simd.Dispatch();
        fixed (T* pdy = dy, px = x, pdx = dx, pa = a, pb = b, pu = u)
        {
            var job = new ElementwiseJob<T> { Dy = pdy, X = px, Out = pdx, A = pa, B = pb, U = pu, L = l, Path = path, PerPlane = perPlane };
            RunElementwise<T, Elementwise<T, GateOp<T>>>(ref job);
        }
    }

    // The per-(sample, channel) statistics passes: channels-last runs one job per sample (its
    // rows in blocks, columns in registers); channels-first runs chunks of whole planes.
    private static void RunPerSampleOrPlanes<T, TJob, TPerSample, TPlanes>(ref TJob job) where T : unmanaged where TJob : unmanaged, IChannelJob
        where TPerSample : IKernelBody<T, TJob> where TPlanes : IKernelBody<T, TJob>
    {
        var l = job.L;
        job.PerChunk = l.AsColumns ? BlockRows(l.C) : Math.Max(1, ChunkElements / l.S);
        if (l.AsColumns) Width.For<T, TJob, TPerSample>(l.N, ref job);
        else Width.For<T, TJob, TPlanes>((l.Planes + job.PerChunk - 1) / job.PerChunk, ref job);
    }

    private static void RunElementwise<T, TBody>(ref ElementwiseJob<T> job) where T : unmanaged where TBody : IKernelBody<T, ElementwiseJob<T>>
    {
        job.PerChunk = ElementwiseChunks(job.L, out int chunks);
        Width.For<T, ElementwiseJob<T>, TBody>(chunks, ref job);
    }

    // Units (planes, or channels-last rows) per chunk of an element-wise pass, and the chunks.
    private static int ElementwiseChunks(ChannelLayout l, out int chunks)
    {
        int units = l.AsColumns ? l.Rows : l.Planes;
        int unitLength = l.AsColumns ? l.C : l.S;
        int perChunk = Math.Max(1, ChunkElements / unitLength);
        chunks = (units + perChunk - 1) / perChunk;
        return perChunk;
    }


    private interface IParam<T, TV> where T : unmanaged
    {
        TV V(nuint i);
        T S(int i);
        /// <summary>Every value is +0: subtracting it is the identity, bit for bit, and is skipped.</summary>
        static virtual bool PositiveZero => false;
    }

    // Normalize's lo when every lo is +0 (eval: hi is the running mean itself). d - (+0) is d for
    // every d, -0 and NaN included, so dropping the subtraction keeps the bits.
    private readonly struct PositiveZeros<T, TV> : IParam<T, TV> where T : unmanaged
    {
        public TV V(nuint i) => default!;
        public T S(int i) => default;
        public static bool PositiveZero => true;
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

    /// <summary>The parameter index of plane p, or the offset of row r's parameters.</summary>
    private static int PlaneParam<T>(in ElementwiseJob<T> j, int p) where T : unmanaged => j.PerPlane ? p : p % j.L.C;
    private static nint RowParams<T>(in ElementwiseJob<T> j, int r) where T : unmanaged => j.PerPlane ? (nint)(r / j.L.S) * j.L.C : 0;

    // Masked positions of the unit just written get 0.
    private static void ZeroMasked<T>(in ElementwiseJob<T> j, int unit, ref T y) where T : unmanaged
    {
        var l = j.L;
        if (l.AsColumns)
        {
            if (!j.Mask[unit]) new Span<T>(Unsafe.AsPointer(ref y), l.C).Clear();
        }
        else
        {
            bool* mk = j.Mask + (nint)(unit / l.C) * l.S;
            for (int i = 0; i < l.S; i++) if (!mk[i]) Unsafe.Add(ref y, i) = default;
        }
    }

    // The one walk of the element-wise passes: chunk by chunk, a plane (channels-first, the
    // parameters broadcast) or a row (channels-last, the parameters loaded per column) at a
    // time, then the masked positions zeroed. TOp says what to compute on one span.
    private readonly struct Elementwise<T, TOp> : IKernelBody<T, ElementwiseJob<T>>
        where T : unmanaged, IFloatingPointIeee754<T> where TOp : IElementwiseOp<T>
    {
        public static void Run<W, TV, TD>(ref ElementwiseJob<T> j, int chunk, bool simd) where W : IWidth<T, TV, TD>
        {
            var l = j.L;
            int u0 = chunk * j.PerChunk, u1 = Math.Min(l.AsColumns ? l.Rows : l.Planes, u0 + j.PerChunk);
            if (typeof(T) == typeof(float) && j.Low != LowType.None)
            {
                LowUnits<W, TV, TD>(ref j, u0, u1, simd);
                return;
            }
            for (int u = u0; u < u1; u++)
            {
                nint at;
                if (l.AsColumns)
                {
                    at = (nint)u * l.C;
                    TOp.Apply<W, TV, TD, PerColumn<T, W, TV, TD>, Columns<T, W, TV, TD>>(ref j, at, l.C, new(RowParams(j, u)), simd);
                }
                else
                {
                    at = (nint)u * l.S;
                    TOp.Apply<W, TV, TD, Broadcast<T, TV>, Plane<T, W, TV, TD>>(ref j, at, l.S, new(PlaneParam(j, u)), simd);
                }
                if (j.Mask != null) ZeroMasked(j, u, ref j.Out[at]);
            }
        }

        // The 16-bit walk: the same TOp on a float scratch copy of each unit (a channels-last row
        // whole, a plane in blocks), computed in place, then narrowed. No mask on this path.
        private static void LowUnits<W, TV, TD>(ref ElementwiseJob<T> j, int u0, int u1, bool simd) where W : IWidth<T, TV, TD>
        {
            var l = j.L;
            int unitLength = l.AsColumns ? l.C : l.S;
            int block = LowBlockOf(l);
            T* s = (T*)LowPrecision.Slot(j.Scratch, block, j.ScratchSlots);
            var sj = j;
            sj.X = s; sj.Out = s;
            for (int u = u0; u < u1; u++)
            {
                nint at = (nint)u * unitLength;
                for (int k = 0; k < unitLength; k += block)
                {
                    int n = Math.Min(block, unitLength - k);
                    LowPrecision.Widen(j.Low, j.LowX + at + k, (float*)s, n, j.Path);
                    if (l.AsColumns) TOp.Apply<W, TV, TD, PerColumn<T, W, TV, TD>, Columns<T, W, TV, TD>>(ref sj, 0, n, new(RowParams(j, u)), simd);
                    else TOp.Apply<W, TV, TD, Broadcast<T, TV>, Plane<T, W, TV, TD>>(ref sj, 0, n, new(PlaneParam(j, u)), simd);
                    LowPrecision.Narrow(j.Low, (float*)s, j.LowOut + at + k, n, j.Path);
                }
            }
        }
    }

    // One span of an element-wise pass, its parameters taken from the job through S.
    private interface IElementwiseOp<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        static abstract void Apply<W, TV, TD, P, S>(ref ElementwiseJob<T> j, nint at, int n, S s, bool simd)
            where W : IWidth<T, TV, TD> where P : IParam<T, TV> where S : IParamSource<T, P>;
    }

    // Where a span's parameters come from: per column from an offset (channels-last), or one
    // value broadcast (channels-first).
    private interface IParamSource<T, P> where T : unmanaged
    {
        P Of(T* parameters);
    }

    private readonly struct Columns<T, W, TV, TD>(nint offset) : IParamSource<T, PerColumn<T, W, TV, TD>> where T : unmanaged where W : IWidth<T, TV, TD>
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public PerColumn<T, W, TV, TD> Of(T* parameters) => new(parameters + offset);
    }

    private readonly struct Plane<T, W, TV, TD>(int index) : IParamSource<T, Broadcast<T, TV>> where T : unmanaged where W : IWidth<T, TV, TD>
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public Broadcast<T, TV> Of(T* parameters) => new(W.Splat(parameters[index]), parameters[index]);
    }

    // y = ((x - hi) - lo) * a + b.
    private readonly struct NormalizeOp<T> : IElementwiseOp<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Apply<W, TV, TD, P, S>(ref ElementwiseJob<T> j, nint at, int n, S s, bool simd)
            where W : IWidth<T, TV, TD> where P : IParam<T, TV> where S : IParamSource<T, P>
        {
            if (j.Lo == null) NormalizeSpan<T, W, TV, TD, P, PositiveZeros<T, TV>>(ref j.X[at], ref j.Out[at], n, s.Of(j.Hi), default, s.Of(j.A), s.Of(j.B), simd);
            else NormalizeSpan<T, W, TV, TD, P, P>(ref j.X[at], ref j.Out[at], n, s.Of(j.Hi), s.Of(j.Lo), s.Of(j.A), s.Of(j.B), simd);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void NormalizeSpan<T, W, TV, TD, P, PL>(ref T x, ref T y, int n, P hi, PL lo, P a, P b, bool simd)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD> where P : IParam<T, TV> where PL : IParam<T, TV>
    {
        int i = 0;
        if (simd)
            for (int step = W.Count; i <= n - step; i += step)
            {
                nuint u = (nuint)i;
                TV d = W.Sub(W.Load(ref x, u), hi.V(u));
                if (!PL.PositiveZero) d = W.Sub(d, lo.V(u));
                W.Store(W.Add(W.Mul(d, a.V(u)), b.V(u)), ref y, u);
            }
        for (; i < n; i++)
        {
            T d = Unsafe.Add(ref x, i) - hi.S(i);
            if (!PL.PositiveZero) d -= lo.S(i);
            Unsafe.Add(ref y, i) = d * a.S(i) + b.S(i);
        }
    }

    // Whether every value is +0 (not -0: d - (-0) turns a -0 difference into +0).
    private static bool AllPositiveZero<T>(ReadOnlySpan<T> v) where T : unmanaged, IFloatingPointIeee754<T>
    {
        foreach (T t in v)
            if (!T.IsZero(t) || T.IsNegative(t)) return false;
        return true;
    }

    // dx = dy * p + ((x - hi) - lo) * q + r.
    private readonly struct InputGradOp<T> : IElementwiseOp<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Apply<W, TV, TD, P, S>(ref ElementwiseJob<T> j, nint at, int n, S s, bool simd)
            where W : IWidth<T, TV, TD> where P : IParam<T, TV> where S : IParamSource<T, P> =>
            InputGradSpan<T, W, TV, TD, P>(ref j.Dy[at], ref j.X[at], ref j.Out[at], n, s.Of(j.Hi), s.Of(j.Lo), s.Of(j.P), s.Of(j.Q), s.Of(j.R), simd);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void InputGradSpan<T, W, TV, TD, P>(ref T dy, ref T x, ref T dx, int n, P hi, P lo, P p, P q, P r, bool simd)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD> where P : IParam<T, TV>
    {
        int i = 0;
        if (simd)
            for (int step = W.Count; i <= n - step; i += step)
            {
                nuint u = (nuint)i;
                TV xc = W.Sub(W.Sub(W.Load(ref x, u), hi.V(u)), lo.V(u));
                W.Store(W.Add(W.Add(W.Mul(W.Load(ref dy, u), p.V(u)), W.Mul(xc, q.V(u))), r.V(u)), ref dx, u);
            }
        for (; i < n; i++)
            Unsafe.Add(ref dx, i) = Unsafe.Add(ref dy, i) * p.S(i) + (Unsafe.Add(ref x, i) - hi.S(i) - lo.S(i)) * q.S(i) + r.S(i);
    }

    // dx = dy * p.
    private readonly struct ScaleOp<T> : IElementwiseOp<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Apply<W, TV, TD, P, S>(ref ElementwiseJob<T> j, nint at, int n, S s, bool simd)
            where W : IWidth<T, TV, TD> where P : IParam<T, TV> where S : IParamSource<T, P> =>
            ScaleSpan<T, W, TV, TD, P>(ref j.Dy[at], ref j.Out[at], n, s.Of(j.P), simd);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleSpan<T, W, TV, TD, P>(ref T dy, ref T dx, int n, P p, bool simd)
        where T : unmanaged, IFloatingPointIeee754<T> where W : IWidth<T, TV, TD> where P : IParam<T, TV>
    {
        int i = 0;
        if (simd)
            for (int step = W.Count; i <= n - step; i += step)
            {
                nuint u = (nuint)i;
                W.Store(W.Mul(W.Load(ref dy, u), p.V(u)), ref dx, u);
            }
        for (; i < n; i++)
            Unsafe.Add(ref dx, i) = Unsafe.Add(ref dy, i) * p.S(i);
    }

    // y = max(x * a + b, u).
    private readonly struct ThresholdOp<T> : IElementwiseOp<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Apply<W, TV, TD, P, S>(ref ElementwiseJob<T> j, nint at, int n, S s, bool simd)
            where W : IWidth<T, TV, TD> where P : IParam<T, TV> where S : IParamSource<T, P>
        {
            ref T x = ref j.X[at], y = ref j.Out[at];
            P a = s.Of(j.A), b = s.Of(j.B), u = s.Of(j.U);
            int i = 0;
            if (simd)
                for (int step = W.Count; i <= n - step; i += step)
                {
                    nuint k = (nuint)i;
                    W.Store(W.Max(W.Add(W.Mul(W.Load(ref x, k), a.V(k)), b.V(k)), u.V(k)), ref y, k);
                }
            for (; i < n; i++)
                Unsafe.Add(ref y, i) = T.Max(Unsafe.Add(ref x, i) * a.S(i) + b.S(i), u.S(i));
        }
    }

    // dx = x * a + b >= u ? dy : 0.
    private readonly struct GateOp<T> : IElementwiseOp<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public static void Apply<W, TV, TD, P, S>(ref ElementwiseJob<T> j, nint at, int n, S s, bool simd)
            where W : IWidth<T, TV, TD> where P : IParam<T, TV> where S : IParamSource<T, P>
        {
            ref T x = ref j.X[at], dy = ref j.Dy[at], dx = ref j.Out[at];
            P a = s.Of(j.A), b = s.Of(j.B), u = s.Of(j.U);
            int i = 0;
            if (simd)
                for (int step = W.Count; i <= n - step; i += step)
                {
                    nuint k = (nuint)i;
                    W.Store(W.WhereGreaterOrEqual(W.Add(W.Mul(W.Load(ref x, k), a.V(k)), b.V(k)), u.V(k), W.Load(ref dy, k)), ref dx, k);
                }
            for (; i < n; i++)
                Unsafe.Add(ref dx, i) = Unsafe.Add(ref x, i) * a.S(i) + b.S(i) >= u.S(i) ? Unsafe.Add(ref dy, i) : T.Zero;
        }
    }
}
