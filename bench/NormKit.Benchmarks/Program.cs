using System.Diagnostics;
using System.Globalization;
using System.Runtime.Intrinsics;
using System.Text;
using NormKit.Benchmarks;
using NormKit.Kernels;

// normkit bench: the bandwidth roofline, then every case timed for NormKit, ONNX Runtime and
// PyTorch (twice: glibc keeping freed pages, and glibc's default) in interleaved rounds on the same
// inputs, each peer's output checked against NormKit's; written to bench/results/<date>.md.
//   --smoke      small shapes, one call per peer: checks that everything runs (CI); asserts no timing
//   --no-torch   skip the PyTorch peers
//   --out DIR    where the table goes (default: bench/results, or a temp folder with --smoke)
//   --filter T   only the cases whose name contains T, and no roofline (for quick comparisons)
//   --rounds N   interleaved rounds per case and thread count (default 7)
//   --mpi        instead: SyncBatchNorm over MPI, run under mpirun (MpiLatency.cs)
//   --lab-engine instead: the lab's matrix products against the FMA peak and OpenBLAS (LabEngine.cs)
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
if (args.Contains("--mpi")) return MpiLatency.Run(args);
if (args.Contains("--lab-engine")) return LabEngine.Run(args);
bool smoke = args.Contains("--smoke");
bool noTorch = args.Contains("--no-torch");
string outDir = ResultsFolder.From(args, smoke);
string? filter = Value("--filter");
int rounds = smoke ? 1 : int.Parse(Value("--rounds") ?? "7", CultureInfo.InvariantCulture);
if (rounds < 1) { Console.Error.WriteLine($"--rounds must be >= 1 but was {rounds}."); return 2; }
var cases = smoke ? BenchCase.Smoke() : BenchCase.All().Where(c => filter == null || c.Key.Contains(filter)).ToList();
int[] threadCounts = [1, 2];
// Each round times at least this many calls and seconds per peer: 7 rounds give >= 35 calls and >= 0.5 s.
int callsPerRound = smoke ? 1 : 5;
double secondsPerRound = smoke ? 0 : 0.075;
long rooflineBytes = smoke ? 8L << 20 : 256L << 20;
var started = DateTime.UtcNow;

// ---- roofline ----
var copyGbs = new Dictionary<int, double>();
var rooflineRows = new List<string>();
if (filter == null)
    foreach (string kind in Roofline.Kinds)
        foreach (int t in threadCounts)
        {
            using var r = new Roofline(kind, t, rooflineBytes);
            r.Run();
            var times = Sampler.Time(r.Run, smoke ? 1 : 30, smoke ? 0 : 0.5);
            double ms = Sampler.Quantile(times, 0.5), gbs = r.Bytes / (ms / 1e3) / 1e9;
            if (kind == "copy") copyGbs[t] = gbs;
            rooflineRows.Add($"| {kind} | {t} | {ms:F2} | {Sampler.Quantile(times, 0.25):F2}-{Sampler.Quantile(times, 0.75):F2} | {gbs:F1} |");
        }

// ---- the peers ----
var nk = new NormKitPeer();
var ort = new OrtPeer();
var torchPeers = new List<TorchPeer>();
string torchNote = "not run (--no-torch)";
if (!noTorch)
{
    var (kept, why) = TorchPeer.Start("torch", keepPages: true);
    if (kept is null) torchNote = why;
    else
    {
        torchPeers.Add(kept);
        var (plain, _) = TorchPeer.Start("torch, glibc default", keepPages: false);
        if (plain is not null) torchPeers.Add(plain);
        torchNote = $"{kept.Version} (Debian python3-torch, CPU, torch.set_num_threads matching, one python3 process per column, bench/NormKit.Benchmarks/torch_peer.py)";
    }
}
var peerNames = new List<string> { "ORT" };
peerNames.AddRange(torchPeers.Select(p => p.Name));

// ---- the cases, in interleaved rounds ----
var results = new List<Row>();
var ortModels = new SortedSet<string>();
foreach (var c in cases)
{
    var (x, dy) = c.Inputs();
    foreach (int t in threadCounts)
    {
        var peers = new List<IPeer> { nk };
        peers.AddRange(new IPeer[] { ort }.Concat(torchPeers).Where(p => p.Has(c)));
        foreach (var p in peers) p.Prepare(c, t, x, dy);
        if (peers.Contains(ort)) ortModels.Add($"{c.Op}: {ort.Model}");
        float[] reference = nk.Output();
        var mismatch = new Dictionary<string, string>();
        foreach (var p in peers.Skip(1))
            if (Compare(reference, p.Output()) is { } why) mismatch[p.Name] = why;
        var times = peers.ToDictionary(p => p.Name, _ => new List<double>());
        for (int round = 0; round < rounds; round++)
            for (int i = 0; i < peers.Count; i++)
            {
                // Each round starts with the next peer, so no peer always follows the same one.
                var p = peers[(i + round) % peers.Count];
                times[p.Name].AddRange(p.Time(callsPerRound, secondsPerRound));
            }
        double alloc = nk.AllocatedPerCall(smoke ? 2 : 20);
        results.Add(new Row(c, t, times.ToDictionary(kv => kv.Key, kv => Stats.Of(kv.Value)), mismatch, alloc));
        Console.WriteLine($"{c.Key} {t} thr: " + string.Join(", ", times.Select(kv => $"{kv.Key} {Stats.Of(kv.Value).Median:F3} ms")) +
            (mismatch.Count > 0 ? "; outputs differ: " + string.Join("; ", mismatch.Select(kv => $"{kv.Key} {kv.Value}")) : ""));
    }
}
ort.Dispose();
foreach (var p in torchPeers) p.Dispose();

// ---- the lab's matrix products ----
var gemmRows = new List<string>();
NormKitThreading.MaxDegreeOfParallelism = 1;
foreach (var (batch, inputs, outputs) in new[] { (60, 784, 100), (512, 64, 256), (512, 256, 64) })
{
    var rng = new NormKit.Lab.Training.Rng(1);
    var linear = new NormKit.Lab.Training.Linear<float>(inputs, outputs, NormKit.Lab.Training.Init.Glorot, rng);
    var lx = Enumerable.Range(0, batch * inputs).Select(i => (float)(i % 7) / 7).ToArray();
    var ldy = Enumerable.Range(0, batch * outputs).Select(i => (float)(i % 5) / 5 - 0.4f).ToArray();
    void Step() { linear.Forward(lx, batch, true); linear.Backward(ldy); }
    Step();
    var s = Stats.Of(Sampler.Time(Step, smoke ? 1 : 30, smoke ? 0 : 0.5));
    gemmRows.Add($"| {batch} x {inputs} x {outputs} | {s.Median:F3} | {s.Spread} | {6.0 * batch * inputs * outputs / (s.Median / 1e3) / 1e9:F1} |");
}

// ---- the table ----
var md = new StringBuilder();
string cpu = File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? "?" : "?";
string flags = File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags")) ?? "" : "";
string isa = flags.Contains(" avx512f") ? "AVX-512 (avx512f)" : flags.Contains(" avx2") ? "AVX2" + (flags.Contains(" fma") ? " and FMA" : "") + ", no AVX-512" : "no AVX2";
md.AppendLine($"# NormKit benchmark, {started:yyyy-MM-dd HH:mm} UTC{(smoke ? " (smoke run: tiny shapes, one call per peer, not a measurement)" : "")}");
md.AppendLine();
md.AppendLine($"Commit {Commit()}. CPU: {cpu}, {Environment.ProcessorCount} logical cores, {isa}; .NET {Environment.Version}" +
    $"{(Environment.GetEnvironmentVariable("DOTNET_EnableAVX512") is { } e ? $", DOTNET_EnableAVX512={e}" : "")}; NormKit path {Simd.ActivePath} " +
    $"(Vector512 accelerated: {Vector512.IsHardwareAccelerated}).");
md.AppendLine($"Peers: ONNX Runtime 1.31.1 in-process, inference only, NCHW only ({string.Join(", ", ortModels)}); PyTorch {torchNote}.");
md.AppendLine($"Every case and thread count: the peers prepared on the same input, every peer's output (y, or dx for fwd+bwd) compared with NormKit's, then {rounds} interleaved rounds");
md.AppendLine($"(each round times every peer for at least {callsPerRound} calls and {secondsPerRound} s, starting with the next peer each round): medians of every call, spread = 25th-75th percentile.");
md.AppendLine("Two PyTorch columns: `torch` runs with glibc told to keep freed memory (MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ = 1 GiB), so repeated outputs reuse");
md.AppendLine("pages as PyTorch's caching allocator does in training; `torch, glibc default` maps and unmaps every large output. The targets use the first.");
md.AppendLine("Outputs agree when every |peer - NormKit| <= 1e-4 + 1e-4 |NormKit| (float32 sums in different orders over up to 200,000 values; the tests hold NormKit itself");
md.AppendLine("to float64 references); a peer whose output differs is marked in its row and its time is not counted.");
md.AppendLine("GB/s counts minimal traffic: forward and eval = read x + write y (8 bytes per element); forward+backward adds read x, read dy, write dx (20 bytes per element).");
md.AppendLine("% roof = NormKit GB/s / normal-store copy GB/s at the same thread count. Peer columns: the peer's median, then peer time / NormKit time (> 1: NormKit is faster).");
md.AppendLine();
if (rooflineRows.Count > 0)
{
    md.AppendLine($"## Roofline (arrays of {rooflineBytes >> 20} MiB)");
    md.AppendLine();
    md.AppendLine("| probe | threads | ms | spread | GB/s |");
    md.AppendLine("|---|---|---|---|---|");
    foreach (var row in rooflineRows) md.AppendLine(row);
    md.AppendLine();
}
md.AppendLine("## Kernels");
md.AppendLine();
md.AppendLine("Targets column: what this row misses of the performance targets (at least as fast as every peer; at least 1.5x PyTorch for");
md.AppendLine("LayerNorm/RMSNorm forward+backward, at least 2x for BatchNorm/InstanceNorm training; forward at >= 70% of the roofline and 2 threads >= 1.6x 1 thread on shapes");
md.AppendLine("larger than the 32 MiB last-level cache; 0 bytes allocated per call; Half/BFloat16 at least 1.6x the float time on those shapes); empty = all met.");
md.AppendLine();
md.AppendLine("| op | shape | layout | mode | thr | NormKit ms | spread | GB/s | % roof | alloc B | " + string.Join(" | ", peerNames.Select(n => $"{n} ms | {n} / NK")) + " | targets missed |");
md.AppendLine("|---|---|---|---|---|---|---|---|---|---|" + string.Concat(peerNames.Select(_ => "---|---|")) + "---|");
int missed = 0;
var lowRows = new List<string>();
foreach (var row in results)
{
    var c = row.Case;
    var m = row.Times["NormKit"];
    double gbs = c.MinimalBytes / (m.Median / 1e3) / 1e9;
    string roof = copyGbs.TryGetValue(row.Threads, out double cg) ? $"{100 * gbs / cg:F0}%" : "";
    var cells = new List<string>();
    var misses = new List<string>();
    foreach (string peer in peerNames)
    {
        if (!row.Times.TryGetValue(peer, out var p)) { cells.Add("— | —"); continue; }
        if (row.Mismatch.TryGetValue(peer, out string? why)) { cells.Add($"outputs differ ({why}) | —"); continue; }
        double ratio = p.Median / m.Median;
        cells.Add($"{p.Median:F3} ({p.Spread}) | {ratio:F2}");
        if (peer == "torch, glibc default") continue;
        bool wants15 = c.Mode == "fwd+bwd" && c.Op is "LayerNorm" or "RMSNorm";
        bool wants2 = (c.Op.StartsWith("BatchNorm") && c.Mode != "eval") || c.Op == "InstanceNorm2d";
        if (ratio < 1) misses.Add($"slower than {peer}");
        else if (peer == "torch" && wants15 && ratio < 1.5) misses.Add("< 1.5x torch");
        else if (peer == "torch" && wants2 && ratio < 2) misses.Add("< 2x torch");
    }
    bool outOfCache = c.Elements * 4 > (32L << 20);
    if (outOfCache && c.Mode != "fwd+bwd" && copyGbs.TryGetValue(row.Threads, out double cg2) && gbs / cg2 < 0.7) misses.Add("< 70% roof");
    if (outOfCache && row.Threads == 2 && results.FirstOrDefault(r => r.Case == c && r.Threads == 1) is { } one && one.Times["NormKit"].Median / m.Median < 1.6)
        misses.Add($"2 thr {one.Times["NormKit"].Median / m.Median:F2}x");
    if (row.AllocatedPerCall > 0) misses.Add("allocates");
    // A 16-bit row against the same case in float: half the bytes, so the target is 1.6x on shapes beyond the cache.
    if (c.Element != "float" && results.FirstOrDefault(r => r.Case.Key == c.AsFloat.Key && r.Threads == row.Threads) is { } asFloat)
    {
        double speedup = asFloat.Times["NormKit"].Median / m.Median;
        lowRows.Add($"| {c.Op} | {c.Element} | {c.ShapeText} | {c.Mode} | {row.Threads} | {asFloat.Times["NormKit"].Median:F3} | {m.Median:F3} | {speedup:F2} |");
        if (c.Elements * 4 > (32L << 20) && speedup < 1.6) misses.Add($"{speedup:F2}x float (< 1.6)");
    }
    if (misses.Count > 0) missed++;
    md.AppendLine($"| {c.Op}{(c.Element == "float" ? "" : " " + c.Element)} | {c.ShapeText} | {c.Layout} | {c.Mode} | {row.Threads} | {m.Median:F3} | {m.Spread} | {gbs:F1} | {roof} | {row.AllocatedPerCall:F0} | {string.Join(" | ", cells)} | {string.Join("; ", misses)} |");
}
md.AppendLine();
md.AppendLine($"{results.Count - missed} of {results.Count} rows meet every target that applies to them; " +
    $"{results.Count(r => r.Mismatch.Count > 0)} rows have a peer whose output differs. Run took {(DateTime.UtcNow - started).TotalMinutes:F1} minutes.");
md.AppendLine();
if (lowRows.Count > 0)
{
    md.AppendLine("## 16-bit activations against float (NormKit, the same run)");
    md.AppendLine();
    md.AppendLine("| op | element | shape | mode | thr | float ms | 16-bit ms | float / 16-bit |");
    md.AppendLine("|---|---|---|---|---|---|---|---|");
    foreach (var row in lowRows) md.AppendLine(row);
    md.AppendLine();
}
md.AppendLine("## The lab's matrix products (Linear forward + backward, 1 thread)");
md.AppendLine();
md.AppendLine("| batch x in x out | ms | spread | GFLOP/s |");
md.AppendLine("|---|---|---|---|");
foreach (var row in gemmRows) md.AppendLine(row);
Directory.CreateDirectory(outDir);
string file = Path.Combine(outDir, $"{started:yyyy-MM-dd}{(filter is null ? "" : "-filtered")}.md");
File.WriteAllText(file, md.ToString());
Console.WriteLine(md);
Console.WriteLine($"Written to {file}");
bool complete = results.Count == cases.Count * threadCounts.Length && results.All(r => double.IsFinite(r.Times["NormKit"].Median));
return complete ? 0 : 1;

string? Value(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();

// Null when every value agrees, else the largest difference.
static string? Compare(float[] expected, float[] actual)
{
    if (expected.Length != actual.Length) return $"{actual.Length} values, expected {expected.Length}";
    double worst = 0; int at = -1;
    for (int i = 0; i < expected.Length; i++)
    {
        double d = Math.Abs((double)actual[i] - expected[i]);
        bool ok = d <= 1e-4 + 1e-4 * Math.Abs(expected[i]);
        if (!ok && (at < 0 || d > worst)) { worst = d; at = i; }
    }
    return at < 0 ? null : $"max |diff| {worst:G3} at {at}";
}

static string Commit()
{
    static string Git(string arguments)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("git", arguments) { RedirectStandardOutput = true, RedirectStandardError = true })!;
            string s = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return p.ExitCode == 0 ? s : "";
        }
        catch (System.ComponentModel.Win32Exception) { return ""; }
    }
    string head = Git("rev-parse --short=12 HEAD");
    if (head.Length == 0) return "unknown (not a git checkout)";
    string dirty = Git("status --porcelain --untracked-files=no");
    return dirty.Length == 0 ? head : $"{head} with uncommitted changes";
}

/// <summary>One case at one thread count: each peer's timing, the peers whose output differs, NormKit's allocation.</summary>
sealed record Row(BenchCase Case, int Threads, Dictionary<string, Stats> Times, Dictionary<string, string> Mismatch, double AllocatedPerCall);

/// <summary>The median and quartiles of per-call times (ms).</summary>
sealed record Stats(double Median, double P25, double P75, int Calls)
{
    public static Stats Of(IReadOnlyList<double> ms) => new(Sampler.Quantile(ms, 0.5), Sampler.Quantile(ms, 0.25), Sampler.Quantile(ms, 0.75), ms.Count);
    public string Spread => $"{P25:F3}-{P75:F3}, {Calls} calls";
}
