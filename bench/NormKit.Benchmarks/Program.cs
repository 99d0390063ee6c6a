using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using NormKit.Benchmarks;
using NormKit.Kernels;

// normkit bench: the bandwidth roofline, NormKit's kernels and ONNX Runtime in one
// BenchmarkDotNet run (in-process), then the PyTorch peer on the same cases, merged into one
// table written to bench/results/<date>.md.
//   --smoke      small shapes, one iteration: checks that everything runs (CI); asserts no timing
//   --no-torch   skip the PyTorch peer
//   --out DIR    where the table goes (default: bench/results, or a temp folder with --smoke)
//   --filter T   only the cases whose name contains T, and no roofline (for quick comparisons)
//   --mpi        instead: SyncBatchNorm over MPI, run under mpirun (MpiLatency.cs)
//   --lab-engine instead: the lab's matrix products against the FMA peak and OpenBLAS (LabEngine.cs)
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
if (args.Contains("--mpi")) return MpiLatency.Run(args);   // under mpirun: SyncBatchNorm's collectives (MpiLatency.cs)
if (args.Contains("--lab-engine")) return LabEngine.Run(args);   // Gemm against the FMA peak and OpenBLAS (LabEngine.cs)
bool smoke = args.Contains("--smoke");
bool noTorch = args.Contains("--no-torch");
string outDir = ResultsFolder.From(args, smoke);
string? filter = args.SkipWhile(a => a != "--filter").Skip(1).FirstOrDefault();
if (filter != null) Plan.Cases = Plan.Cases.Where(c => c.Key.Contains(filter)).ToList();
if (smoke)
{
    Plan.Cases = BenchCase.Smoke();
    Plan.RooflineBytes = 8L << 20;
}

var job = (smoke ? Job.Dry : Job.Default.WithWarmupCount(3).WithIterationCount(15).WithIterationTime(Perfolizer.Horology.TimeInterval.FromMilliseconds(150)))
    .WithToolchain(InProcessEmitToolchain.Instance).WithLaunchCount(1);
var config = ManualConfig.CreateEmpty()
    .AddJob(job)
    .AddLogger(ConsoleLogger.Default)
    .AddColumnProvider(DefaultColumnProviders.Instance)
    .AddDiagnoser(MemoryDiagnoser.Default)
    .WithOptions(ConfigOptions.DisableOptimizationsValidator | ConfigOptions.JoinSummary);

var roofline = filter == null ? BenchmarkRunner.Run<RooflineBench>(config) : null;
var normkit = Plan.Cases.Count > 0 ? BenchmarkRunner.Run<NormKitBench>(config) : null;
var ort = Plan.Cases.Any(c => c.OrtHasIt) ? BenchmarkRunner.Run<OrtBench>(config) : null;
var gemm = BenchmarkRunner.Run<LabGemmBench>(config);

// ---- collect medians (ms) ----
static double Ms(BenchmarkReport r) => (r.ResultStatistics?.Median ?? double.NaN) / 1e6;
var copyGbs = new Dictionary<int, double>();
var rooflineRows = new List<string>();
foreach (var r in roofline?.Reports ?? [])
{
    string kind = (string)r.BenchmarkCase.Parameters["Kind"];
    int threads = (int)r.BenchmarkCase.Parameters["Threads"];
    double gbs = Roofline.BytesFor(kind, Plan.RooflineBytes) / (Ms(r) / 1e3) / 1e9;
    if (kind == "copy") copyGbs[threads] = gbs;
    rooflineRows.Add($"| {kind} | {threads} | {Ms(r):F2} | {gbs:F1} |");
}
var nk = new Dictionary<(string, int), (double Ms, long Alloc)>();
foreach (var r in normkit?.Reports ?? [])
{
    var c = (BenchCase)r.BenchmarkCase.Parameters["Case"];
    nk[(c.Key, (int)r.BenchmarkCase.Parameters["Threads"])] = (Ms(r), r.GcStats.GetBytesAllocatedPerOperation(r.BenchmarkCase) ?? -1);
}
var ortMs = new Dictionary<(string, int), double>();
foreach (var r in ort?.Reports ?? [])
{
    var c = (BenchCase)r.BenchmarkCase.Parameters["Case"];
    ortMs[(c.Key, (int)r.BenchmarkCase.Parameters["Threads"])] = Ms(r);
}
string ortModels = !Plan.Cases.Any(c => c.OrtHasIt) ? "" : string.Join(", ", Plan.Cases.Where(c => c.OrtHasIt).Select(c => c.Op).Distinct()
    .Select(op => { using var o = new OrtOp(Plan.Cases.First(c => c.Op == op && c.OrtHasIt), 1); return $"{op}: {o.Model}"; }));

// ---- the PyTorch peer ----
var torchMs = new Dictionary<(string, int), double>();
string torchNote = "not run (--no-torch)";
if (!noTorch) torchNote = RunTorch(Plan.Cases, Plan.Threads, torchMs);

// ---- the table ----
var md = new StringBuilder();
string cpu = File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? "?" : "?";
md.AppendLine($"# NormKit benchmark, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC{(smoke ? " (smoke run: tiny shapes, one iteration, not a measurement)" : "")}");
md.AppendLine();
md.AppendLine($"CPU: {cpu}, {Environment.ProcessorCount} logical cores; .NET {Environment.Version}; NormKit path {Simd.ActivePath}.");
md.AppendLine($"Peers: ONNX Runtime 1.31.1 in-process, inference only, NCHW only ({ortModels}); PyTorch {torchNote}.");
md.AppendLine("Medians of BenchmarkDotNet iterations (NormKit, ONNX Runtime) or of repeated timed calls (PyTorch); outputs preallocated for NormKit and ONNX Runtime.");
md.AppendLine("GB/s counts minimal traffic: forward and eval = read x + write y (8 bytes per element); forward+backward adds read x, read dy, write dx (20 bytes per element).");
md.AppendLine("% roof = NormKit GB/s / normal-store copy GB/s at the same thread count. Peer columns: the peer's median, then peer time / NormKit time (> 1: NormKit is faster).");
md.AppendLine();
md.AppendLine("## Roofline (arrays of " + (Plan.RooflineBytes >> 20) + " MiB)");
md.AppendLine();
md.AppendLine("| probe | threads | ms | GB/s |");
md.AppendLine("|---|---|---|---|");
foreach (var row in rooflineRows) md.AppendLine(row);
md.AppendLine();
md.AppendLine("## Kernels");
md.AppendLine();
md.AppendLine("Targets column: what this row misses of the performance targets (at least as fast as every peer; at least 1.5x PyTorch for");
md.AppendLine("LayerNorm/RMSNorm forward+backward and BatchNorm training; forward at >= 70% of the roofline and 2 threads >= 1.6x 1 thread on shapes");
md.AppendLine("larger than the 32 MiB last-level cache); empty = all met.");
md.AppendLine();
md.AppendLine("| op | shape | layout | mode | thr | NormKit ms | GB/s | % roof | alloc B | ORT ms | ORT / NK | torch ms | torch / NK | targets missed |");
md.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
int missed = 0, rows = 0;
foreach (var c in Plan.Cases)
    foreach (int t in Plan.Threads)
    {
        if (!nk.TryGetValue((c.Key, t), out var m)) continue;
        double gbs = c.MinimalBytes / (m.Ms / 1e3) / 1e9;
        string roof = copyGbs.TryGetValue(t, out double cg) ? $"{100 * gbs / cg:F0}%" : "";
        string o = ortMs.TryGetValue((c.Key, t), out double om) ? $"{om:F3} | {om / m.Ms:F2}" : "— | —";
        string p = torchMs.TryGetValue((c.Key, t), out double pm) ? $"{pm:F3} | {pm / m.Ms:F2}" : "— | —";
        var misses = new List<string>();
        if (ortMs.TryGetValue((c.Key, t), out double om2) && om2 / m.Ms < 1) misses.Add("slower than ORT");
        if (torchMs.TryGetValue((c.Key, t), out double pm2))
        {
            bool wants15 = (c.Mode == "fwd+bwd" && c.Op is "LayerNorm" or "RMSNorm") || (c.Op.StartsWith("BatchNorm") && c.Mode != "eval");
            if (pm2 / m.Ms < 1) misses.Add("slower than torch");
            else if (wants15 && pm2 / m.Ms < 1.5) misses.Add("< 1.5x torch");
        }
        bool outOfCache = c.Elements * 4 > (32L << 20);
        if (outOfCache && c.Mode != "fwd+bwd" && copyGbs.TryGetValue(t, out double cg2) && gbs / cg2 < 0.7) misses.Add("< 70% roof");
        if (outOfCache && t == 2 && nk.TryGetValue((c.Key, 1), out var one) && one.Ms / m.Ms < 1.6) misses.Add($"2 thr {one.Ms / m.Ms:F2}x");
        rows++;
        if (misses.Count > 0) missed++;
        md.AppendLine($"| {c.Op} | {c.ShapeText} | {c.Layout} | {c.Mode} | {t} | {m.Ms:F3} | {gbs:F1} | {roof} | {m.Alloc} | {o} | {p} | {string.Join("; ", misses)} |");
    }
md.AppendLine();
md.AppendLine($"{rows - missed} of {rows} rows meet every target that applies to them.");
md.AppendLine();
md.AppendLine("## The lab's matrix products (Linear forward + backward, 1 thread, TensorPrimitives dot and multiply-add)");
md.AppendLine();
md.AppendLine("| batch x in x out | ms | GFLOP/s |");
md.AppendLine("|---|---|---|");
foreach (var r in gemm.Reports)
{
    var s = ((int Batch, int In, int Out))r.BenchmarkCase.Parameters["Shape"];
    md.AppendLine($"| {s.Batch} x {s.In} x {s.Out} | {Ms(r):F3} | {LabGemmBench.Flops(s) / (Ms(r) / 1e3) / 1e9:F1} |");
}
Directory.CreateDirectory(outDir);
string file = Path.Combine(outDir, $"{DateTime.UtcNow:yyyy-MM-dd}.md");
File.WriteAllText(file, md.ToString());
Console.WriteLine(md);
Console.WriteLine($"Written to {file}");
bool complete = nk.Count == Plan.Cases.Count * Plan.Threads.Length && nk.Values.All(v => double.IsFinite(v.Ms)) && gemm.Reports.All(r => r.ResultStatistics != null);
return complete ? 0 : 1;

static string RunTorch(IReadOnlyList<BenchCase> cases, int[] threads, Dictionary<(string, int), double> into)
{
    string python = File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
    string script = Path.Combine(AppContext.BaseDirectory, "torch_peer.py");
    string spec = Path.GetTempFileName(), result = Path.GetTempFileName();
    File.WriteAllText(spec, JsonSerializer.Serialize(new
    {
        threads,
        cases = cases.Select(c => new { key = c.Key, op = c.Op, shape = c.Shape, channelsLast = c.ChannelsLast, mode = c.Mode }),
    }));
    try
    {
        var psi = new ProcessStartInfo(python, [script, spec, result]) { RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            Console.Error.WriteLine($"PyTorch peer failed (exit {p.ExitCode}): {err.Trim().Split('\n').LastOrDefault()}");
            return err.Contains("No module named 'torch'")
                ? "absent (install Debian's python3-torch: bench/install-peers.sh)"
                : $"failed (exit {p.ExitCode})";
        }
        using var doc = JsonDocument.Parse(File.ReadAllText(result));
        string version = "?";
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "torch") { version = prop.Value.GetString() ?? "?"; continue; }
            var parts = prop.Name.Split('|');
            into[(parts[0], int.Parse(parts[1]))] = prop.Value.GetDouble();
        }
        return $"{version} (Debian python3-torch, CPU, torch.set_num_threads matching, run by bench/NormKit.Benchmarks/torch_peer.py)";
    }
    catch (System.ComponentModel.Win32Exception)
    {
        return "absent (no python3)";
    }
    finally { File.Delete(spec); File.Delete(result); }
}

