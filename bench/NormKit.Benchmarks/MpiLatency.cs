using NormKit.Lab.Data;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using NormKit.Distributed;
using NormKit.Lab.Experiments;
using NormKit.Layers;
using NormKit.Mpi;

namespace NormKit.Benchmarks;

/// <summary>
/// mpirun -np K dotnet NormKit.Benchmarks.dll --mpi [--smoke] [--no-torch] [--out DIR] [--tag NAME]
/// <para>
/// What SyncBatchNorm costs over MPI: the latency of the all-gather for the vector sizes it sends,
/// beside MPI's own MPI_Allreduce and PyTorch's gloo collectives; SyncBatchNorm against BatchNorm
/// on the same shard; and the data-parallel CNN's time per step against one process.
/// </para>
/// <para>
/// Not BenchmarkDotNet: a collective needs the same number of calls on every rank, and
/// BenchmarkDotNet's stages choose call counts from timings measured in each process. Every rank
/// runs the same fixed loop instead (warm-up, then REPS timed blocks of INNER calls, each block
/// started after a barrier); the figure is the median block, of the slowest rank.
/// </para>
/// </summary>
public static class MpiLatency
{
    public static int Run(string[] args)
    {
        bool smoke = args.Contains("--smoke"), noTorch = args.Contains("--no-torch") || smoke;
        string outDir = ResultsFolder.From(args, smoke);
        string? tag = args.SkipWhile(a => a != "--tag").Skip(1).FirstOrDefault();   // e.g. two-hosts-tcp, in the file name and title
        MpiWorld.ShareCores();
        return MpiWorld.Run(world => Measure(world, smoke, noTorch, outDir, tag));
    }

    private static int Measure(MpiWorld world, bool smoke, bool noTorch, string outDir, string? tag)
    {
        int k = world.WorldSize, reps = smoke ? 2 : 15, inner = smoke ? 5 : 400;
        // (doubles each rank sends, what sends it): SyncBatchNorm sends 3C in forward, 1 + 2C in backward.
        var sizes = new List<(int N, string What)>();
        foreach (int c in smoke ? [16] : (int[])[16, 64, 256, 1024])
        {
            sizes.Add((3 * c, $"forward, C = {c}"));
            sizes.Add((1 + 2 * c, $"backward, C = {c}"));
        }
        int gradients = Vision.Model<float>("BatchNorm", new NormKit.Lab.Training.Rng(1)).Parameters.Sum(p => p.Value.Length);
        sizes.Add((gradients, "the lab CNN's gradients"));

        var rows = new List<(int N, string What, double Gather, double RankOrderSum, double MpiSum)>();
        foreach (var (n, what) in sizes)
        {
            var local = Enumerable.Range(0, n).Select(i => world.Rank + i * 1e-3).ToArray();
            var gathered = new double[n * k];
            var sum = new double[n];
            double gather = Time(world, reps, inner, () => world.AllGather(local, gathered));
            double ordered = Time(world, reps, inner, () => { local.CopyTo(sum, 0); world.AllReduceSum(sum, gathered); });
            double mpi = Time(world, reps, inner, () => { local.CopyTo(sum, 0); world.AllReduceSumUnordered(sum); });
            rows.Add((n, what, gather, ordered, mpi));
        }

        // SyncBatchNorm against BatchNorm on this rank's shard of the batch (forward + backward, training).
        var layerRows = new List<(string Shape, double Sync, double Local)>();
        foreach (int[] whole in smoke ? [[8, 8, 6, 6]] : (int[][])[[64, 8, 28, 28], [64, 16, 14, 14], [32, 64, 56, 56]])
        {
            int[] shard = [Math.Max(1, whole[0] / k), .. whole[1..]];
            int len = shard.Aggregate(1, (a, b) => a * b), ch = shard[1];
            var rng = new Random(world.Rank + 1);
            var x = Enumerable.Range(0, len).Select(_ => (float)rng.NextDouble()).ToArray();
            var dy = Enumerable.Range(0, len).Select(_ => (float)rng.NextDouble()).ToArray();
            var y = new float[len]; var dx = new float[len];
            var sync = new SyncBatchNorm<float>(ch, world);
            var plain = new BatchNorm2d<float>(ch);
            int layerInner = smoke ? 2 : Math.Max(5, 4_000_000 / len);
            double ts = Time(world, reps, layerInner, () => { sync.Forward(x, shard, y); sync.Backward(dy, x, shard, dx); });
            double tl = Time(world, reps, layerInner, () => { plain.Forward(x, shard, y); plain.Backward(dy, x, shard, dx); });
            layerRows.Add(($"[{string.Join(",", whole)}] as {k} x [{string.Join(",", shard)}]", ts, tl));
        }

        // The data-parallel CNN: time per step, and the part spent in all-gathers.
        var config = new DataParallelVision.Config(Steps: smoke ? 3 : 200);
        var train = FashionMnist.TrainAndTest(null).Train;
        var dp = DataParallelVision.Run<float>(config, train, world);
        if (world.Rank != 0) return 0;
        var single = DataParallelVision.Run<float>(config, train);

        string torch = noTorch ? "" : RunTorchPeer(k, sizes.Select(s => s.N), reps, Math.Min(inner, 100));
        var torchUs = torch.StartsWith('{') ? JsonSerializer.Deserialize<Dictionary<string, Dictionary<string, double>>>(torch) : null;

        var md = new StringBuilder();
        md.AppendLine($"# SyncBatchNorm over MPI: {DateTime.UtcNow:yyyy-MM-dd}, {k} ranks{(tag != null ? ", " + tag : "")}{(smoke ? " (smoke run: timings meaningless)" : "")}");
        md.AppendLine();
        md.AppendLine($"Machine: {Environment.MachineName}, {File.ReadLines("/proc/cpuinfo").Count(l => l.StartsWith("processor"))} cores ({Environment.ProcessorCount} visible to rank 0 under the launcher's binding); {world.Flavor}: {world.LibraryVersion}; .NET {Environment.Version};");
        md.AppendLine($"Tiered compilation: {(Environment.GetEnvironmentVariable("DOTNET_TieredCompilation") == "0" ? "off (optimized code from the first call; bench/run-mpi.sh sets it)" : "on (short runs may time unoptimized code; bench/run-mpi.sh turns it off)")}.");
        md.AppendLine($"NormKit threads per rank: {NormKit.Kernels.NormKitThreading.MaxDegreeOfParallelism}. Each figure: median of {reps} blocks of repeated calls, each block after a barrier;");
        md.AppendLine("the slowest rank's median. PyTorch: torch.distributed over gloo (TCP on loopback), same scheme, `torch_collectives_peer.py`.");
        md.AppendLine();
        md.AppendLine("## Collective latency (microseconds per call)");
        md.AppendLine();
        md.AppendLine("| doubles per rank | bytes per rank | used for | NormKit all-gather | rank-order all-reduce (gather + sum) | MPI_Allreduce | torch all_gather | torch all_reduce |");
        md.AppendLine("|---|---|---|---|---|---|---|---|");
        foreach (var r in rows)
        {
            string t = torchUs != null && torchUs.TryGetValue(r.N.ToString(CultureInfo.InvariantCulture), out var tu) ? $"{tu["all_gather"]:F1} | {tu["all_reduce"]:F1}" : "— | —";
            md.AppendLine($"| {r.N} | {r.N * 8} | {r.What} | {r.Gather * 1e6:F1} | {r.RankOrderSum * 1e6:F1} | {r.MpiSum * 1e6:F1} | {t} |");
        }
        if (!noTorch && torchUs == null) md.AppendLine($"\nPyTorch peer: {torch}");
        md.AppendLine();
        md.AppendLine("## SyncBatchNorm against BatchNorm on the same shard (forward + backward, training, float32, ms)");
        md.AppendLine();
        md.AppendLine("| whole batch, per rank | SyncBatchNorm | BatchNorm (shard only) | exchange overhead |");
        md.AppendLine("|---|---|---|---|");
        foreach (var r in layerRows) md.AppendLine($"| {r.Shape} | {r.Sync * 1e3:F3} | {r.Local * 1e3:F3} | {(r.Sync - r.Local) * 1e3:F3} ms ({100 * (r.Sync / r.Local - 1):F0}%) |");
        md.AppendLine();
        md.AppendLine($"## The lab's data-parallel CNN (batch {config.Batch}, {config.Steps} steps, float32; median step)");
        md.AppendLine();
        md.AppendLine("| run | ms per step | of which in all-gathers | all-gathers per step | doubles received per rank per step | speed-up over one process |");
        md.AppendLine("|---|---|---|---|---|---|");
        md.AppendLine($"| one process, whole batch, {NormKit.Kernels.NormKitThreading.MaxDegreeOfParallelism} thread(s) | {single.StepSeconds * 1e3:F2} | — | — | — | 1.00 |");
        md.AppendLine($"| {k} ranks, {config.Batch / k} samples each | {dp.StepSeconds * 1e3:F2} | {dp.ExchangeSeconds * 1e3:F3} ms ({100 * dp.ExchangeSeconds / dp.StepSeconds:F1}%) | {dp.ExchangesPerStep} | {dp.ExchangeDoubles} ({dp.ExchangeDoubles * 8 / 1024.0:F1} KiB) | {single.StepSeconds / dp.StepSeconds:F2} |");
        var (dl, dw) = DataParallelVision.Difference(dp, single);
        md.AppendLine();
        string promise = DataParallelVision.Tolerance<float>(config) is { } tol ? $"tolerance {tol:E0}" : $"no tolerance is promised for float32 beyond {DataParallelVision.MaxFloatSteps} steps, where the rounding differences grow with the steps; the equality check is `normkit lab data-parallel --double --check` and the multi-process tests";
        md.AppendLine($"Same run, against one process: largest loss difference {dl:E2}, largest weight difference {dw:E2} (relative to max(1, |value|); {promise}); weights bit-identical on every rank: {(dp.SameOnEveryRank ? "yes" : "NO")}.");
        Directory.CreateDirectory(outDir);
        string path = Path.Combine(outDir, $"mpi-{DateTime.UtcNow:yyyy-MM-dd}-np{k}-{world.Flavor.ToString().ToLowerInvariant()}{(tag != null ? "-" + tag : "")}.md");
        File.WriteAllText(path, md.ToString());
        Console.WriteLine(md);
        Console.WriteLine($"Wrote {path}");
        return dp.SameOnEveryRank ? 0 : 1;
    }

    // Median seconds per call over reps blocks of inner calls, of the slowest rank.
    private static double Time(MpiWorld world, int reps, int inner, Action call)
    {
        for (int i = 0; i < Math.Min(inner, 50); i++) call();
        var blocks = new double[reps];
        for (int r = 0; r < reps; r++)
        {
            world.Barrier();
            long t = Stopwatch.GetTimestamp();
            for (int i = 0; i < inner; i++) call();
            blocks[r] = Stopwatch.GetElapsedTime(t).TotalSeconds / inner;
        }
        Array.Sort(blocks);
        var all = new double[world.WorldSize];
        world.AllGather([blocks[reps / 2]], all);
        return all.Max();
    }

    private static string RunTorchPeer(int world, IEnumerable<int> sizes, int reps, int inner)
    {
        string script = Path.Combine(AppContext.BaseDirectory, "torch_collectives_peer.py");
        var psi = new ProcessStartInfo("/usr/bin/python3") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in (string[])[script, world.ToString(), string.Join(",", sizes), reps.ToString(), inner.ToString()]) psi.ArgumentList.Add(a);
        // The job's MPI variables would mislead PyTorch's own launcher logic.
        foreach (var v in Environment.GetEnvironmentVariables().Keys.Cast<string>().Where(v => v.StartsWith("OMPI_") || v.StartsWith("PMI")))
            psi.Environment.Remove(v);
        try
        {
            using var p = Process.Start(psi)!;
            string output = p.StandardOutput.ReadToEnd(), error = p.StandardError.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0 ? output.Trim() : $"failed: {error.Trim().Split('\n').LastOrDefault()}";
        }
        catch (System.ComponentModel.Win32Exception e) { return $"absent ({e.Message})"; }
    }
}
