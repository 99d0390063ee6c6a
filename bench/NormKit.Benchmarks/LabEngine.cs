using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Text;
using NormKit.Kernels;
using NormKit.Lab.Engine;

namespace NormKit.Benchmarks;

/// <summary>
/// dotnet run -c Release --project bench/NormKit.Benchmarks -- --lab-engine [--out DIR] [--rounds R]
/// <para>
/// The lab engine's matrix products against this machine's measured FMA peak and against
/// OpenBLAS: the single-precision FMA peak of one and two cores, Gemm.Multiply's GFLOP/s on the
/// lab's shapes at 1 and 2 threads, and OpenBLAS's cblas_sgemm on the same shapes (loaded at run
/// time; the library never uses it). Written to bench/results/yyyy-MM-dd-lab-engine.md.
/// </para>
/// <para>
/// Not BenchmarkDotNet: the four cells of a row (ours and OpenBLAS, 1 and 2 threads) are timed
/// in interleaved rounds, so a change in the machine's load hits all of them alike.
/// </para>
/// </summary>
public static unsafe class LabEngine
{
    /// <summary>One product: C[m x n] = op(A) op(B), and where the lab uses it.</summary>
    public sealed record Shape(string Use, bool TransA, bool TransB, int M, int N, int K)
    {
        public double Flops => 2.0 * M * N * K;
        public int Lda => TransA ? M : K;
        public int Ldb => TransB ? K : N;
        public string Ops => (TransA ? "T" : "N") + (TransB ? "T" : "N");
        /// <summary>A and B read once, C written once.</summary>
        public double MinimalMB => 4.0 * ((long)M * K + (long)K * N + (long)M * N) / 1e6;
        /// <summary>The rows the targets are judged on: the lab's larger products (the conv products but the stem, 115 MFLOP each).</summary>
        public bool Larger => Flops >= 1e8;
    }

    public static IReadOnlyList<Shape> Shapes()
    {
        var s = new List<Shape>
        {
            new("conv fwd, C 16", false, false, 16, 25088, 144), new("conv fwd, C 32", false, false, 32, 6272, 288),
            new("conv fwd, C 64", false, false, 64, 1568, 576), new("conv fwd, stem", false, false, 16, 25088, 9),
            new("conv dW, C 16", false, true, 16, 144, 25088), new("conv dW, C 32", false, true, 32, 288, 6272),
            new("conv dW, C 64", false, true, 64, 576, 1568),
            new("conv dcol, C 16", true, false, 144, 25088, 16), new("conv dcol, C 32", true, false, 288, 6272, 32),
            new("conv dcol, C 64", true, false, 576, 1568, 64),
        };
        // Linear(in, out) at batch b: y = x W^T, dx = dy W, dW = dy^T x.
        foreach (var (b, o, i) in new[] { (60, 100, 784), (512, 256, 64), (512, 64, 256), (32, 10, 64) })
        {
            s.Add(new($"Linear {i}->{o} fwd", false, true, b, o, i));
            s.Add(new($"Linear {i}->{o} dx", false, false, b, i, o));
            s.Add(new($"Linear {i}->{o} dW", true, false, o, i, b));
        }
        return s;
    }

    public static int Run(string[] args)
    {
        string outDir = ResultsFolder.From(args, smoke: false);
        int rounds = int.TryParse(args.SkipWhile(a => a != "--rounds").Skip(1).FirstOrDefault(), out int r) ? r : 7;
        string load0 = LoadAverage();

        var (read1, read2) = (ReadBandwidth(1), ReadBandwidth(2));
        var peakRuns1 = new List<double>();
        var peakRuns2 = new List<double>();

        var blas = OpenBlas.TryLoad();
        Console.WriteLine(blas == null ? "OpenBLAS: not found" : $"OpenBLAS: {blas.Path} ({blas.Config})");

        var shapes = Shapes();
        var rows = shapes.Select(s => new Row(s, blas != null)).ToList();
        int saved = NormKitThreading.MaxDegreeOfParallelism;
        try
        {
            foreach (var row in rows) row.Check(blas);
            for (int round = 0; round < rounds; round++)
            {
                Console.WriteLine($"round {round + 1} of {rounds}");
                // The peak is measured in every round too, so the machine's load weighs on it as on the products.
                for (int i = 0; i < 3; i++) { peakRuns1.Add(FmaPeak(1)); peakRuns2.Add(FmaPeak(2)); }
                foreach (var row in rows) row.Round(blas);
            }
        }
        finally { NormKitThreading.MaxDegreeOfParallelism = saved; }
        var (peak1, peak1Spread) = MedianAndRange(peakRuns1);
        var (peak2, peak2Spread) = MedianAndRange(peakRuns2);
        string load1 = LoadAverage();

        var md = new StringBuilder();
        md.AppendLine($"# Lab engine: matrix products, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");
        md.AppendLine();
        md.AppendLine($"Commit {Git("rev-parse --short HEAD")}; CPU {CpuModel()}, {Environment.ProcessorCount} logical cores; " +
            $"vector ISA {(Vector512.IsHardwareAccelerated ? "AVX-512" : Vector256.IsHardwareAccelerated ? "AVX2" : "none (scalar)")}; .NET {Environment.Version}.");
        md.AppendLine($"Load average (1, 5, 15 min) before {load0}, after {load1}: other work on the machine shares its cores, caches and memory.");
        md.AppendLine($"OpenBLAS: {(blas == null ? "not found (install Debian's libopenblas0-pthread; NORMKIT_OPENBLAS=path also works); its columns are empty" : $"{blas.Path}, {blas.Config}")}.");
        md.AppendLine();
        md.AppendLine("## Measured peak");
        md.AppendLine();
        md.AppendLine($"Single-precision FMA on {(Vector512.IsHardwareAccelerated ? "Vector512" : "Vector256")}: 12 independent accumulator chains per thread; 3 runs of 0.1-0.2 s in each round of the");
        md.AppendLine($"products below, so the machine's load weighs on both alike; median of the {peakRuns1.Count} (min-max).");
        md.AppendLine($"Stream read (sum of a 128 MiB array, median of 5): the memory roof the largest products run against.");
        md.AppendLine();
        md.AppendLine("| threads | FMA GFLOP/s | read GB/s |");
        md.AppendLine("|---|---|---|");
        md.AppendLine($"| 1 | {peak1:F1} ({peak1Spread}) | {read1:F1} |");
        md.AppendLine($"| 2 | {peak2:F1} ({peak2Spread}) | {read2:F1} |");
        md.AppendLine();
        md.AppendLine("## Gemm.Multiply (float) and OpenBLAS cblas_sgemm");
        md.AppendLine();
        md.AppendLine($"GFLOP/s = 2 m n k / time; median of every call over {rounds} interleaved rounds (each cell at least 5 calls and 80 ms per round),");
        md.AppendLine("IQR in brackets. % peak: 1 thread against the 1-core peak, 2 threads against the 2-core peak. 2t/1t: the speed-up.");
        md.AppendLine("ours/OB: our GFLOP/s over OpenBLAS's at the same thread count. diff: max |ours - OpenBLAS| / max |OpenBLAS|; marked");
        md.AppendLine("MISMATCH where an element differs by more than 2 (k + 2) eps sum_p |a_ip b_pj|, both results' error bound.");
        md.AppendLine("MB: A and B read once, C written once, the least traffic. Targets on the larger rows (the conv products but the stem,");
        md.AppendLine("115 MFLOP each): >= 60% of peak on 1 thread, 2 threads >= 1.8x 1 thread, >= 70% of OpenBLAS on 1 thread.");
        md.AppendLine();
        md.AppendLine("| product | op | m x n x k | MB | 1t GFLOP/s | % peak | 2t GFLOP/s | % peak | 2t/1t | OB 1t | OB 2t | ours/OB 1t | ours/OB 2t | diff | targets missed |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var row in rows) md.AppendLine(row.Markdown(peak1, peak2));
        md.AppendLine();
        var larger = rows.Where(x => x.Shape.Larger).ToList();
        md.AppendLine($"{larger.Count(x => x.Misses(peak1).Count == 0)} of {larger.Count} larger rows meet every target.");
        ConvolutionRows(md, peak1, peak2, rounds);

        Directory.CreateDirectory(outDir);
        string file = Path.Combine(outDir, $"{DateTime.UtcNow:yyyy-MM-dd}-lab-engine.md");
        File.WriteAllText(file, md.ToString());
        Console.WriteLine(md);
        Console.WriteLine($"Written to {file}");
        return rows.All(x => !x.Mismatch) ? 0 : 1;
    }

    /// <summary>
    /// The lab's convolution (im2col + Gemm + reorders) forward+backward on the residual CNN's
    /// shapes, and the residual CNN's training step (forward+backward at batch 32) per norm arm,
    /// at 1 and 2 threads in interleaved rounds.
    /// </summary>
    private static void ConvolutionRows(StringBuilder md, double peak1, double peak2, int rounds)
    {
        const int batch = 32;
        var rng = new NormKit.Lab.Training.Rng(1);
        float[] Random(int n) { var v = new float[n]; for (int i = 0; i < v.Length; i++) v[i] = (float)rng.Normal(); return v; }
        var cases = new List<(string Name, double Flops, Action Call)>();
        foreach (var (cin, cout, size, stride) in new[] { (16, 16, 28, 1), (16, 32, 28, 2), (32, 32, 14, 1), (64, 64, 7, 1) })
        {
            var conv = new NormKit.Lab.Training.Conv2d<float>(cin, cout, 3, stride, 1, size, size, bias: false, rng);
            var x = Random(batch * cin * size * size);
            var dy = Random(batch * cout * conv.OutHeight * conv.OutWidth);
            double flops = 3 * 2.0 * batch * cout * cin * 9 * conv.OutHeight * conv.OutWidth;   // forward, dW, dx: one product each
            cases.Add(($"conv 3x3 {cin}->{cout}, {size}x{size}, stride {stride}", flops, () => { conv.Forward(x, batch, true); conv.Backward(dy); }));
        }
        var images = Random(batch * 784);
        foreach (string arm in NormKit.Lab.Training.NormArms.Names)
        {
            var model = NormKit.Lab.Training.ResidualCnn.Build<float>(new(), arm, new NormKit.Lab.Training.Rng(1));
            var dLogits = Random(batch * 10);
            cases.Add(($"ResNet-14 step, {arm}", 121.1e6 * batch, () => { model.Forward(images, batch, true); model.Backward(dLogits); }));
        }
        var times = cases.Select(_ => (One: new List<double>(), Two: new List<double>())).ToList();
        int saved = NormKitThreading.MaxDegreeOfParallelism;
        try
        {
            for (int round = 0; round < rounds; round++)
            {
                Console.WriteLine($"convolution round {round + 1} of {rounds}");
                for (int c = 0; c < cases.Count; c++)
                    foreach (int threads in new[] { 1, 2 })
                    {
                        NormKitThreading.MaxDegreeOfParallelism = threads;
                        cases[c].Call();
                        var batchClock = Stopwatch.StartNew();
                        for (int i = 0; i < 3 || batchClock.ElapsedMilliseconds < 150; i++)
                        {
                            long t0 = Stopwatch.GetTimestamp();
                            cases[c].Call();
                            (threads == 1 ? times[c].One : times[c].Two).Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
                        }
                    }
            }
        }
        finally { NormKitThreading.MaxDegreeOfParallelism = saved; }
        static (double Median, double Lo, double Hi) Q(List<double> t)
        {
            var s = t.Order().ToList();
            double At(double q) => s[(int)Math.Round(q * (s.Count - 1))];
            return (At(0.5), At(0.25), At(0.75));
        }
        md.AppendLine();
        md.AppendLine("## The convolution layer and the residual CNN's training step");
        md.AppendLine();
        md.AppendLine($"Conv2d forward + backward (im2col, three products, reorders, col2im) at batch {batch}, and the residual CNN (14 weight");
        md.AppendLine($"layers, docs/lab/ResidualCnn.md) forward + backward at batch {batch} per norm arm, counted as 121.1 MFLOP per image. Median over");
        md.AppendLine($"{rounds} interleaved rounds (each cell at least 3 calls and 150 ms per round), IQR of the time in brackets.");
        md.AppendLine();
        md.AppendLine("| case | 1t ms | GFLOP/s | % peak | images/s | 2t ms | GFLOP/s | % peak | images/s | 2t/1t |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|---|");
        for (int c = 0; c < cases.Count; c++)
        {
            var (m1, lo1, hi1) = Q(times[c].One);
            var (m2, lo2, hi2) = Q(times[c].Two);
            double g1 = cases[c].Flops / m1 / 1e9, g2 = cases[c].Flops / m2 / 1e9;
            md.AppendLine($"| {cases[c].Name} | {1e3 * m1:F1} ({1e3 * lo1:F1}-{1e3 * hi1:F1}) | {g1:F1} | {100 * g1 / peak1:F0}% | {batch / m1:F0} | " +
                $"{1e3 * m2:F1} ({1e3 * lo2:F1}-{1e3 * hi2:F1}) | {g2:F1} | {100 * g2 / peak2:F0}% | {batch / m2:F0} | {m1 / m2:F2} |");
        }
    }

    /// <summary>Timings and checks of one shape.</summary>
    private sealed class Row
    {
        public readonly Shape Shape;
        private readonly float[] _a, _b, _c, _cBlas;
        private readonly List<double> _ours1 = [], _ours2 = [], _blas1 = [], _blas2 = [];
        public double Diff = double.NaN;
        public bool Mismatch;

        public Row(Shape s, bool withBlas)
        {
            Shape = s;
            var rng = new Random(s.M * 31 + s.N * 7 + s.K);
            _a = RandomArray(rng, s.M * s.K);
            _b = RandomArray(rng, s.K * s.N);
            _c = new float[s.M * s.N];
            _cBlas = withBlas ? new float[s.M * s.N] : [];
        }

        private static float[] RandomArray(Random rng, int n)
        {
            var x = new float[n];
            for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
            return x;
        }

        private void Ours() => Gemm.Multiply<float>(Shape.TransA, Shape.TransB, Shape.M, Shape.N, Shape.K, _a, Shape.Lda, _b, Shape.Ldb, _c, Shape.N, false);

        /// <summary>Ours against OpenBLAS, element by element against the error bound (from |A| |B|).</summary>
        public void Check(OpenBlas? blas)
        {
            if (blas == null) return;
            Ours();
            blas.SetThreads(1);
            blas.Sgemm(Shape, _a, _b, _cBlas);
            var absA = _a.Select(MathF.Abs).ToArray();
            var absB = _b.Select(MathF.Abs).ToArray();
            var bound = new float[_c.Length];
            Gemm.Multiply<float>(Shape.TransA, Shape.TransB, Shape.M, Shape.N, Shape.K, absA, Shape.Lda, absB, Shape.Ldb, bound, Shape.N, false);
            double maxDiff = 0, maxC = 0, eps = MathF.BitIncrement(1f) - 1f;
            for (int i = 0; i < _c.Length; i++)
            {
                double d = Math.Abs((double)_c[i] - _cBlas[i]);
                maxDiff = Math.Max(maxDiff, d);
                maxC = Math.Max(maxC, Math.Abs(_cBlas[i]));
                if (d > 2 * (Shape.K + 2) * eps * bound[i] * 1.01) Mismatch = true;
            }
            Diff = maxDiff / maxC;
        }

        public void Round(OpenBlas? blas)
        {
            // Ours first, after the pause that lets OpenBLAS's spinning threads sleep (below).
            NormKitThreading.MaxDegreeOfParallelism = 1;
            Time(Ours, _ours1);
            if (blas != null) { blas.SetThreads(1); Time(() => blas.Sgemm(Shape, _a, _b, _cBlas), _blas1); }
            NormKitThreading.MaxDegreeOfParallelism = 2;
            Time(Ours, _ours2);
            if (blas != null)
            {
                blas.SetThreads(2);
                Time(() => blas.Sgemm(Shape, _a, _b, _cBlas), _blas2);
                blas.SetThreads(1);
                Thread.Sleep(150);
            }
        }

        private static void Time(Action call, List<double> into)
        {
            call();
            call();
            var batch = Stopwatch.StartNew();
            for (int i = 0; i < 5 || batch.ElapsedMilliseconds < 80; i++)
            {
                long t0 = Stopwatch.GetTimestamp();
                call();
                into.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
            }
        }

        private (double Median, double Lo, double Hi) Gflops(List<double> seconds)
        {
            if (seconds.Count == 0) return (double.NaN, double.NaN, double.NaN);
            var t = seconds.Order().ToList();
            double At(double q) => Shape.Flops / t[(int)Math.Round(q * (t.Count - 1))] / 1e9;
            return (At(0.5), At(0.75), At(0.25));
        }

        public List<string> Misses(double peak1)
        {
            var misses = new List<string>();
            double o1 = Gflops(_ours1).Median, o2 = Gflops(_ours2).Median, b1 = Gflops(_blas1).Median;
            if (o1 / peak1 < 0.6) misses.Add($"1t {100 * o1 / peak1:F0}% < 60% peak");
            if (o2 / o1 < 1.8) misses.Add($"2t/1t {o2 / o1:F2} < 1.8");
            if (double.IsFinite(b1) && o1 / b1 < 0.7) misses.Add($"{100 * o1 / b1:F0}% < 70% OpenBLAS");
            return misses;
        }

        public string Markdown(double peak1, double peak2)
        {
            var (o1, o1lo, o1hi) = Gflops(_ours1);
            var (o2, o2lo, o2hi) = Gflops(_ours2);
            double b1 = Gflops(_blas1).Median, b2 = Gflops(_blas2).Median;
            static string F(double v, string f = "F1") => double.IsFinite(v) ? v.ToString(f) : "—";
            string diff = double.IsFinite(Diff) ? Diff.ToString("0.0e+0") + (Mismatch ? " MISMATCH" : "") : "—";
            string targets = Shape.Larger ? string.Join("; ", Misses(peak1)) : "";
            var s = Shape;
            return $"| {s.Use} | {s.Ops} | {s.M} x {s.N} x {s.K} | {s.MinimalMB:F1} | {F(o1)} ({F(o1lo)}-{F(o1hi)}) | {100 * o1 / peak1:F0}% | " +
                $"{F(o2)} ({F(o2lo)}-{F(o2hi)}) | {100 * o2 / peak2:F0}% | {F(o2 / o1, "F2")} | {F(b1)} | {F(b2)} | {F(o1 / b1, "F2")} | {F(o2 / b2, "F2")} | {diff} | {targets} |";
        }
    }

    // ---- the machine ----

    /// <summary>GFLOP/s of FMA chains on the widest accelerated vector, on 1 or 2 threads at once (one run).</summary>
    private static double FmaPeak(int threads)
    {
        const long iterations = 20_000_000;
        int lanes = Vector512.IsHardwareAccelerated ? 16 : 8;
        Func<long, float> loop = Vector512.IsHardwareAccelerated ? FmaLoop512 : FmaLoop256;
        loop(10_000);
        using var start = new Barrier(threads + 1);
        var workers = Enumerable.Range(0, threads).Select(_ => new Thread(() => { start.SignalAndWait(); loop(iterations); })).ToList();
        workers.ForEach(t => t.Start());
        start.SignalAndWait();
        var sw = Stopwatch.StartNew();
        workers.ForEach(t => t.Join());
        return threads * 2.0 * lanes * 12 * iterations / sw.Elapsed.TotalSeconds / 1e9;
    }

    private static (double Median, string Range) MedianAndRange(List<double> runs)
    {
        var s = runs.Order().ToList();
        return (s[s.Count / 2], $"{s[0]:F1}-{s[^1]:F1}");
    }

    // 12 independent chains: more than FMA latency (4-5 cycles) x 2 pipes, so the pipes never wait.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static float FmaLoop256(long n)
    {
        var x = Vector256.Create(0.999999f); var y = Vector256.Create(1e-7f);
        Vector256<float> a0 = x, a1 = x, a2 = x, a3 = x, a4 = x, a5 = x, a6 = x, a7 = x, a8 = x, a9 = x, a10 = x, a11 = x;
        for (long i = 0; i < n; i++)
        {
            a0 = Vector256.FusedMultiplyAdd(a0, x, y); a1 = Vector256.FusedMultiplyAdd(a1, x, y); a2 = Vector256.FusedMultiplyAdd(a2, x, y);
            a3 = Vector256.FusedMultiplyAdd(a3, x, y); a4 = Vector256.FusedMultiplyAdd(a4, x, y); a5 = Vector256.FusedMultiplyAdd(a5, x, y);
            a6 = Vector256.FusedMultiplyAdd(a6, x, y); a7 = Vector256.FusedMultiplyAdd(a7, x, y); a8 = Vector256.FusedMultiplyAdd(a8, x, y);
            a9 = Vector256.FusedMultiplyAdd(a9, x, y); a10 = Vector256.FusedMultiplyAdd(a10, x, y); a11 = Vector256.FusedMultiplyAdd(a11, x, y);
        }
        return Vector256.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static float FmaLoop512(long n)
    {
        var x = Vector512.Create(0.999999f); var y = Vector512.Create(1e-7f);
        Vector512<float> a0 = x, a1 = x, a2 = x, a3 = x, a4 = x, a5 = x, a6 = x, a7 = x, a8 = x, a9 = x, a10 = x, a11 = x;
        for (long i = 0; i < n; i++)
        {
            a0 = Vector512.FusedMultiplyAdd(a0, x, y); a1 = Vector512.FusedMultiplyAdd(a1, x, y); a2 = Vector512.FusedMultiplyAdd(a2, x, y);
            a3 = Vector512.FusedMultiplyAdd(a3, x, y); a4 = Vector512.FusedMultiplyAdd(a4, x, y); a5 = Vector512.FusedMultiplyAdd(a5, x, y);
            a6 = Vector512.FusedMultiplyAdd(a6, x, y); a7 = Vector512.FusedMultiplyAdd(a7, x, y); a8 = Vector512.FusedMultiplyAdd(a8, x, y);
            a9 = Vector512.FusedMultiplyAdd(a9, x, y); a10 = Vector512.FusedMultiplyAdd(a10, x, y); a11 = Vector512.FusedMultiplyAdd(a11, x, y);
        }
        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    /// <summary>GB/s summing a 128 MiB array, split over 1 or 2 threads: median of 5.</summary>
    private static double ReadBandwidth(int threads)
    {
        long n = 32L << 20;
        float* p = (float*)NativeMemory.AlignedAlloc((nuint)(n * 4), 64);
        try
        {
            for (long i = 0; i < n; i++) p[i] = 1;
            var runs = new List<double>();
            for (int r = 0; r < 5; r++)
            {
                var sw = Stopwatch.StartNew();
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t => Sum(p + t * n / threads, n / threads));
                runs.Add(n * 4 / sw.Elapsed.TotalSeconds / 1e9);
            }
            runs.Sort();
            return runs[2];
        }
        finally { NativeMemory.AlignedFree(p); }
    }

    private static float Sum(float* p, long n)
    {
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (long i = 0; i + 32 <= n; i += 32)
        {
            s0 += Vector256.Load(p + i); s1 += Vector256.Load(p + i + 8);
            s2 += Vector256.Load(p + i + 16); s3 += Vector256.Load(p + i + 24);
        }
        return Vector256.Sum(s0 + s1 + s2 + s3);
    }

    private static string CpuModel() =>
        File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? "?" : "?";

    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(", ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";

    private static string Git(string arguments)
    {
        try
        {
            var psi = new ProcessStartInfo("git", arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            string s = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return p.ExitCode == 0 ? s : "?";
        }
        catch (System.ComponentModel.Win32Exception) { return "?"; }
    }

    /// <summary>OpenBLAS's cblas_sgemm, loaded at run time: only the benchmark uses it.</summary>
    public sealed class OpenBlas
    {
        private readonly delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> _sgemm;
        private readonly delegate* unmanaged<int, void> _setThreads;
        public readonly string Path, Config;

        private OpenBlas(IntPtr lib, string path)
        {
            Path = path;
            _sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)NativeLibrary.GetExport(lib, "cblas_sgemm");
            _setThreads = (delegate* unmanaged<int, void>)NativeLibrary.GetExport(lib, "openblas_set_num_threads");
            Config = NativeLibrary.TryGetExport(lib, "openblas_get_config", out var cfg)
                ? Marshal.PtrToStringAnsi(((delegate* unmanaged<IntPtr>)cfg)()) ?? "?" : "?";
        }

        /// <summary>NORMKIT_OPENBLAS, else the usual names and Debian's paths (pthread, OpenMP, serial builds).</summary>
        public static OpenBlas? TryLoad()
        {
            var candidates = new[]
            {
                Environment.GetEnvironmentVariable("NORMKIT_OPENBLAS"), "libopenblas.so.0",
                "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0", "/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0",
                "/usr/lib/x86_64-linux-gnu/openblas-serial/libopenblas.so.0", "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
            };
            foreach (var c in candidates)
                if (!string.IsNullOrEmpty(c) && NativeLibrary.TryLoad(c, out var lib))
                {
                    if (NativeLibrary.TryGetExport(lib, "cblas_sgemm", out _) && NativeLibrary.TryGetExport(lib, "openblas_set_num_threads", out _))
                        return new OpenBlas(lib, c);
                    NativeLibrary.Free(lib);
                }
            return null;
        }

        public void SetThreads(int n) => _setThreads(n);

        public void Sgemm(Shape s, float[] a, float[] b, float[] c)
        {
            const int rowMajor = 101, noTrans = 111, trans = 112;
            fixed (float* pa = a, pb = b, pc = c)
                _sgemm(rowMajor, s.TransA ? trans : noTrans, s.TransB ? trans : noTrans, s.M, s.N, s.K, 1f, pa, s.Lda, pb, s.Ldb, 0f, pc, s.N);
        }

    }
}
