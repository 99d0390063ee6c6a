using System.Globalization;
using NormKit.Kernels;
using NormKit.Lab.Data;
using NormKit.Lab.Demos;
using NormKit.Lab.Experiments;
using NormKit.Mpi;
using Spectre.Console;

// The normkit command: parses, runs, prints. The work itself lives in NormKit.Lab.
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
const string Usage = """
    normkit demo [--data DIR] [--batch N]
        Loads a real batch of Fashion-MNIST (DIR, else /usr/share/datasets/fashion-mnist,
        else the 1000-image batch the repository ships), applies BatchNorm1d and LayerNorm
        to the N x 784 matrix (default N = 64) and prints per-feature and per-sample
        mean/std before and after: the seed article's Figure 1 in numbers.

    normkit report [--full] [--data DIR] [--text FILE] [--out DIR]
        The lab's tour: the figure and every experiment (quick modes, about a minute and a half;
        --full about twenty), then DIR/report.html (default DIR: lab-report) with the charts and,
        per claim of the seed article, what was measured, the published result and a verdict.

    normkit lab saturation [--quick | --deep] [--data DIR] [--out DIR]
        The BatchNorm paper's Figure 1 on Fashion-MNIST: sigmoid MLPs without normalization,
        with BatchNorm and with LayerNorm, under N(0, 0.01^2) and Glorot initialization.
        Prints the final test accuracy, saturation and gradient norms per arm, writes every
        evaluation point to DIR/saturation.csv and charts of accuracy, last-layer input
        percentiles and saturation against steps (PNG and SVG) (default DIR: lab-results). --quick takes
        about 15 seconds (one seed, 1000 steps); the default runs 8000 steps and three seeds; --deep uses
        ten hidden layers.

    normkit lab batch-size [--quick] [--data DIR] [--out DIR]
        ReLU MLPs with no normalization, BatchNorm, LayerNorm and GroupNorm trained on the same
        number of examples at batch sizes 2..128: test error against batch size, and BatchNorm's
        error with batch statistics at test time. Writes DIR/batch-size.csv and a chart.

    normkit lab figure [--data DIR] [--out DIR]
        The seed article's Figure 1 drawn from a real batch, and which cells share one
        statistic in BatchNorm, LayerNorm, InstanceNorm and GroupNorm.

    normkit lab language [--quick] [--text FILE] [--out DIR]
        A tiny pre-norm Transformer on characters (default text: the .NET SDK's XML docs) with
        no normalization, LayerNorm, RMSNorm and BatchNorm: validation bits per character, and
        how far BatchNorm's batch means stray from its running mean. Writes DIR/language.csv.

    normkit lab vision [--quick] [--data DIR] [--out DIR]
        A small CNN with no normalization, BatchNorm, LayerNorm, GroupNorm and InstanceNorm:
        final test accuracy, mean and standard deviation over seeds. Writes DIR/vision.csv.

    mpirun -np K normkit lab data-parallel [--steps N] [--batch B] [--double] [--adamw] [--check] [--data DIR] [--out DIR]
        The vision CNN with SyncBatchNorm trained data-parallel over MPI: each of the K processes
        takes B/K of every batch (default B = 64, N = 40 steps of SGD with momentum; --adamw for
        AdamW), gradients are summed over the ranks. Rank 0 prints the loss, the time per step and
        the part spent exchanging, and writes DIR/data-parallel-npK-losses.csv and -weights.bin.
        --check then trains the same model in one process on the whole batch, compares losses and
        weights, and charts the loss difference per step (DIR/data-parallel-npK-check.png; float32
        and float64 runs into one DIR share it). Started without mpirun
        it runs as one process (no MPI needed).
    """;

if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
{
    Console.WriteLine(Usage);
    return args.Length == 0 ? 1 : 0;
}
try
{
    return args[0] switch
    {
        "demo" => Demo(args[1..]),
        "lab" when args.Length > 1 && args[1] == "saturation" => SaturationCommand(args[2..]),
        "lab" when args.Length > 1 && args[1] == "batch-size" => BatchSizeCommand(args[2..]),
        "lab" when args.Length > 1 && args[1] == "vision" => VisionCommand(args[2..]),
        "lab" when args.Length > 1 && args[1] == "figure" => FigureCommand(args[2..]),
        "lab" when args.Length > 1 && args[1] == "language" => LanguageCommand(args[2..]),
        "lab" when args.Length > 1 && args[1] == "data-parallel" => DataParallelCommand(args[2..]),
        "report" => ReportCommand(args[1..]),
        _ => Fail($"Unknown command '{args[0]}'."),
    };
}
catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or UnauthorizedAccessException)
{
    Console.Error.WriteLine($"normkit: {e.Message}");
    return 2;
}

static int Fail(string message)
{
    Console.Error.WriteLine($"normkit: {message}");
    Console.Error.WriteLine(Usage);
    return 2;
}

static int Demo(string[] args)
{
    string? data = null;
    int batch = 64;
    if (Options.Parse(args, [], ["--data", "--batch"], out var o) is { } error) return Fail(error);
    data = o.Value("--data") ?? data;
    if (o.Value("--batch") is { } b && (!int.TryParse(b, out batch) || batch < 2))
        return Fail($"--batch must be an integer >= 2 but was '{b}'.");
    var split = FashionMnist.LoadTest(data);
    if (batch > split.Count) return Fail($"--batch {batch} is larger than the {split.Count} images in {split.Source}.");
    int d = split.Features;
    Console.WriteLine($"Batch: the first {batch} test images of Fashion-MNIST from {split.Source}");
    Console.WriteLine($"as a {batch} x {d} matrix: rows are samples, columns are pixel features (values in [0, 1]).");
    Console.WriteLine($"Kernels: {Simd.ActivePath} path, {NormKitThreading.MaxDegreeOfParallelism} threads.");
    Console.WriteLine();
    var stages = Figure1.Run(split.Pixels, batch, d);
    Console.WriteLine($"{"",-28} | {"per feature (each column)",-44} | {"per sample (each row)",-44}");
    Console.WriteLine($"{"stage",-28} | {"mean: avg",10} {"max|.|",9} {"std: avg",10} {"min..max",13} | {"mean: avg",10} {"max|.|",9} {"std: avg",10} {"min..max",13}");
    Console.WriteLine(new string('-', 28 + 3 + 44 + 3 + 44));
    foreach (var s in stages)
        Console.WriteLine($"{s.Name,-28} | {Cells(s.PerFeature)} | {Cells(s.PerSample)}");
    Console.WriteLine();
    int constant = stages[0].PerFeature.Constant;
    Console.WriteLine($"{constant} of {d} pixel features are constant over this batch (always-black borders); their std is 0");
    Console.WriteLine("and stays 0: BatchNorm maps a constant column to exactly its bias. They are left out of the std columns.");
    Console.WriteLine("BatchNorm: every column (feature) has mean 0 and std 1 across the batch; rows do not. A column whose");
    Console.WriteLine("variance is near eps (1e-5), e.g. a pixel lit in one image only, comes out with std sqrt(var / (var + eps)) < 1.");
    Console.WriteLine("LayerNorm: every row (sample) has mean 0 and std 1 across its features; columns do not.");
    return 0;
}

static int SaturationCommand(string[] args)
{
    var config = Saturation.Config.Full;
    string? data = null, outDir = "lab-results";
    if (Options.Parse(args, ["--quick", "--deep"], ["--data", "--out"], out var o) is { } error) return Fail(error);
    if (o.Has("--quick")) config = Saturation.Config.Quick;
    if (o.Has("--deep")) config = Saturation.Config.Deep;
    data = o.Value("--data") ?? data;
    outDir = o.Value("--out") ?? outDir;
    var (train, test) = Saturation.Data(data);
    Console.WriteLine($"Training on {train.Count} images ({train.Source}), testing on {Math.Min(test.Count, config.TestImages)} ({test.Source}).");
    Console.WriteLine($"{config.HiddenLayers} x {config.Hidden} sigmoid, batch {config.Batch}, SGD lr {config.LearningRate} momentum {config.Momentum}, {config.Steps} steps, {config.Seeds} seed(s).");
    var watch = System.Diagnostics.Stopwatch.StartNew();
    var points = Saturation.Run(config, train, test, run => Console.WriteLine($"  done: {run} ({watch.Elapsed.TotalSeconds:F0} s)"));
    Directory.CreateDirectory(outDir);
    string csv = Path.Combine(outDir, config.HiddenLayers == 3 ? "saturation.csv" : $"saturation-{config.HiddenLayers}layers.csv");
    File.WriteAllText(csv, Saturation.Csv(points));
    Console.WriteLine();
    Console.WriteLine($"{"init",-12} {"arm",-10} {"test acc",9} {"first acc",9} {"saturated",9} {"sigmoid'",9} {"p15..p85 first",17} {"p15..p85 last",17} {"|dW| first layer",16}");
    foreach (var g in points.GroupBy(p => (p.Init, p.Arm)))
    {
        int last = g.Max(p => p.Step), first = g.Min(p => p.Step);
        var l = g.Where(p => p.Step == last).ToList();
        var f0 = g.Where(p => p.Step == first).ToList();
        Console.WriteLine($"{g.Key.Init,-12} {g.Key.Arm,-10} {l.Average(p => p.TestAccuracy),9:F3} {f0.Average(p => p.TestAccuracy),9:F3} {l.Average(p => p.SaturatedFraction),9:F3} {l.Average(p => p.MeanSigmoidDerivative),9:F3} " +
            $"{f0.Average(p => p.P15),7:F2}..{f0.Average(p => p.P85),-7:F2} {l.Average(p => p.P15),7:F2}..{l.Average(p => p.P85),-7:F2} {l.Average(p => p.GradNorms[0]),16:E2}");
    }
    Console.WriteLine($"Every evaluation point: {csv}");
    var charts = SaturationPlots.Write(points, outDir, Path.GetFileNameWithoutExtension(csv));
    Console.WriteLine($"Charts (PNG and SVG): {string.Join(", ", charts.Select(Path.GetFileName))}");
    return 0;
}

static int BatchSizeCommand(string[] args)
{
    var config = BatchSize.Config.Full;
    string? data = null, outDir = "lab-results";
    if (Options.Parse(args, ["--quick"], ["--data", "--out"], out var o) is { } error) return Fail(error);
    if (o.Has("--quick")) config = BatchSize.Config.Quick;
    data = o.Value("--data") ?? data;
    outDir = o.Value("--out") ?? outDir;
    var (train, test) = Saturation.Data(data);
    Console.WriteLine($"Training on {train.Count} images, {config.Examples} examples per run, AdamW lr {config.LearningRate}; testing on {Math.Min(test.Count, config.TestImages)}.");
    var watch = System.Diagnostics.Stopwatch.StartNew();
    var points = BatchSize.Run(config, train, test, run => Console.WriteLine($"  done: {run} ({watch.Elapsed.TotalSeconds:F0} s)"));
    Directory.CreateDirectory(outDir);
    string csv = Path.Combine(outDir, "batch-size.csv");
    File.WriteAllText(csv, BatchSize.Csv(points));
    Console.WriteLine();
    Console.WriteLine($"{"batch",6} " + string.Join(" ", BatchSize.Arms.Select(a => $"{a,10}")) + $" {"BN train-mode",14}");
    foreach (var g in points.GroupBy(p => p.Batch).OrderBy(g => g.Key))
        Console.WriteLine($"{g.Key,6} " + string.Join(" ", BatchSize.Arms.Select(a => $"{g.Where(p => p.Arm == a).Average(p => p.TestError),10:F3}"))
            + $" {g.Where(p => p.Arm == "BatchNorm").Average(p => p.TestErrorTrainMode),14:F3}");
    Console.WriteLine($"Test error (eval mode) per arm; every run: {csv}");
    Console.WriteLine($"Chart (PNG and SVG): {Path.GetFileName(BatchSize.Plot(points, outDir, "batch-size"))}");
    return 0;
}

static int VisionCommand(string[] args)
{
    var config = Vision.Config.Full;
    string? data = null, outDir = "lab-results";
    if (Options.Parse(args, ["--quick"], ["--data", "--out"], out var o) is { } error) return Fail(error);
    if (o.Has("--quick")) config = Vision.Config.Quick;
    data = o.Value("--data") ?? data;
    outDir = o.Value("--out") ?? outDir;
    var (train, test) = Saturation.Data(data);
    Console.WriteLine($"Training on {train.Count} images, {config.Steps} AdamW steps (lr {config.LearningRate}) at batch {config.Batch}, {config.Seeds} seed(s); testing on {Math.Min(test.Count, config.TestImages)}.");
    var watch = System.Diagnostics.Stopwatch.StartNew();
    var results = Vision.Run(config, train, test, run => Console.WriteLine($"  done: {run} ({watch.Elapsed.TotalSeconds:F0} s)"));
    Directory.CreateDirectory(outDir);
    string csv = Path.Combine(outDir, "vision.csv");
    File.WriteAllText(csv, Vision.Csv(results));
    Console.WriteLine();
    Console.WriteLine($"{"arm",-13} {"test accuracy",14} {"sd",7} {"test error %",13} {"batch mean fluctuation",23}");
    foreach (var g in results.GroupBy(r => r.Arm))
    {
        double mean = g.Average(r => r.TestAccuracy);
        double sd = g.Count() > 1 ? Math.Sqrt(g.Sum(r => (r.TestAccuracy - mean) * (r.TestAccuracy - mean)) / (g.Count() - 1)) : 0;
        Console.WriteLine($"{g.Key,-13} {mean,14:F4} {sd,7:F4} {100 * (1 - mean),13:F2} {g.Average(r => r.BatchMeanFluctuation),23:E2}");
    }
    Console.WriteLine($"Every run: {csv}; chart: {Vision.Plot(results, outDir)}");
    return 0;
}

static int ReportCommand(string[] args)
{
    bool full = false;
    string? data = null, text = null, outDir = "lab-report";
    if (Options.Parse(args, ["--full"], ["--text", "--data", "--out"], out var o) is { } error) return Fail(error);
    if (o.Has("--full")) full = true;
    text = o.Value("--text") ?? text;
    data = o.Value("--data") ?? data;
    outDir = o.Value("--out") ?? outDir;
    var watch = System.Diagnostics.Stopwatch.StartNew();
    string path;
    int total = Report.Units(full);
    if (AnsiConsole.Profile.Capabilities.Interactive)
    {
        // A live progress bar on a terminal; plain lines when the output is redirected (CI, logs).
        path = AnsiConsole.Progress().Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("lab tour", maxValue: total);
                return Report.Run(outDir, data, full, step => { task.Increment(1); task.Description = step; }, text);
            });
    }
    else
    {
        int done = 0;
        path = Report.Run(outDir, data, full, step => Console.WriteLine($"[{watch.Elapsed.TotalSeconds,4:F0} s] {++done}/{total} {step}"), text);
    }
    Console.WriteLine($"Report: {Path.GetFullPath(path)}");
    return 0;
}

static int LanguageCommand(string[] args)
{
    var config = Language.Config.Full;
    string? text = null, outDir = "lab-results";
    if (Options.Parse(args, ["--quick"], ["--text", "--out"], out var o) is { } error) return Fail(error);
    if (o.Has("--quick")) config = Language.Config.Quick;
    text = o.Value("--text") ?? text;
    outDir = o.Value("--out") ?? outDir;
    var corpus = TextData.Load(text);
    Console.WriteLine($"Text: {corpus.Ids.Length} characters from {corpus.Source}; {config.Steps} AdamW steps of {config.Sequences} x {config.Length} characters, {config.Seeds} seed(s).");
    var watch = System.Diagnostics.Stopwatch.StartNew();
    var results = Language.Run(config, corpus, run => Console.WriteLine($"  done: {run} ({watch.Elapsed.TotalSeconds:F0} s)"));
    Directory.CreateDirectory(outDir);
    string csv = Path.Combine(outDir, "language.csv");
    File.WriteAllText(csv, Language.Csv(results));
    Console.WriteLine();
    Console.WriteLine($"{"arm",-10} {"validation bits/char",21} {"batch mean fluctuation",23}");
    foreach (var g in results.GroupBy(r => r.Arm))
    {
        var (mean, diverged, runs) = Language.BitsPerChar(g);
        Console.WriteLine($"{g.Key,-10} {mean,21:F3} {g.Average(r => r.BatchMeanFluctuation),23:E2}{(diverged > 0 ? $"   ({diverged} of {runs} runs diverged to NaN)" : "")}");
    }
    Console.WriteLine($"Every run: {csv}; chart: {Language.Plot(results, outDir)}");
    return 0;
}

static int FigureCommand(string[] args)
{
    string? data = null, outDir = "lab-results";
    if (Options.Parse(args, [], ["--data", "--out"], out var o) is { } error) return Fail(error);
    data = o.Value("--data") ?? data;
    outDir = o.Value("--out") ?? outDir;
    var paths = Figure.Write(FashionMnist.LoadTest(data), outDir);
    Console.WriteLine($"Figures (PNG and SVG): {string.Join(", ", paths)}");
    return 0;
}

static string Cells(Figure1.AxisStats a) =>
    $"{a.MeanOfMeans,10:F4} {a.MaxAbsMean,9:F4} {a.MeanOfStds,10:F4} {a.MinStd,6:F3}..{a.MaxStd,-6:F3}";

/// <summary>Parsed command-line options: switches ("--quick") and valued options ("--out DIR").</summary>
static int DataParallelCommand(string[] args)
{
    string? data = null, outDir = "lab-results";
    var config = new DataParallelVision.Config();
    if (Options.Parse(args, ["--check", "--double", "--adamw"], ["--steps", "--batch", "--data", "--out"], out var o) is { } error) return Fail(error);
    int steps = config.Steps, batch = config.Batch;
    if (o.Value("--steps") is { } s && (!int.TryParse(s, out steps) || steps < 1)) return Fail($"--steps must be an integer >= 1 but was '{s}'.");
    if (o.Value("--batch") is { } b && (!int.TryParse(b, out batch) || batch < 2)) return Fail($"--batch must be an integer >= 2 but was '{b}'.");
    config = config with { Steps = steps, Batch = batch };
    if (o.Has("--adamw")) config = config with { AdamW = true, LearningRate = 2e-3 };
    data = o.Value("--data") ?? data;
    outDir = o.Value("--out") ?? outDir;
    var (train, _) = Saturation.Data(data);
    return o.Has("--double") ? DataParallel<double>(config, train, outDir, o.Has("--check")) : DataParallel<float>(config, train, outDir, o.Has("--check"));
}

static int DataParallel<T>(DataParallelVision.Config config, FashionMnist.Split train, string outDir, bool check)
    where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
{
    string type = typeof(T) == typeof(float) ? "float32" : "float64";
    if (MpiWorld.LauncherWorldSize() is null)
    {
        Console.WriteLine($"Not started by an MPI launcher: one process, batch {config.Batch}, {config.Steps} steps, {type}.");
        var single = DataParallelVision.Run<T>(config, train);
        DataParallelVision.Save(single, outDir, "data-parallel-np1");
        PrintLosses(single.Losses);
        Console.WriteLine($"median step {single.StepSeconds * 1e3:F1} ms. Wrote {outDir}/data-parallel-np1-losses.csv and -weights.bin.");
        return 0;
    }
    MpiWorld.ShareCores();
    return MpiWorld.Run(world =>
    {
        if (world.Rank == 0)
            Console.WriteLine($"{world.WorldSize} ranks over {world.Flavor} ({world.LibraryVersion}): batch {config.Batch} split {config.Batch / world.WorldSize}-{(config.Batch + world.WorldSize - 1) / world.WorldSize} per rank, {config.Steps} steps, {type}.");
        var r = DataParallelVision.Run<T>(config, train, world);
        if (world.Rank != 0) return r.SameOnEveryRank ? 0 : 1;
        string prefix = $"data-parallel-np{world.WorldSize}";
        DataParallelVision.Save(r, outDir, prefix);
        PrintLosses(r.Losses);
        Console.WriteLine($"median step {r.StepSeconds * 1e3:F2} ms, of which {r.ExchangeSeconds * 1e3:F3} ms in {r.ExchangesPerStep} all-gathers receiving {r.ExchangeDoubles} doubles ({r.ExchangeDoubles * 8 / 1024.0:F1} KiB) per rank.");
        Console.WriteLine($"weights bit-identical on every rank: {(r.SameOnEveryRank ? "yes" : "NO")}. Wrote {outDir}/{prefix}-losses.csv and -weights.bin.");
        int code = r.SameOnEveryRank ? 0 : 1;
        if (check)
        {
            var single = DataParallelVision.Run<T>(config, train);
            DataParallelVision.Save(single, outDir, "data-parallel-np1");
            var (dl, dw) = DataParallelVision.Difference(r, single);
            string chart = DataParallelVision.PlotCheck(r.Losses, single.Losses, world.WorldSize, type, outDir);
            Console.WriteLine($"Wrote {chart}.png and .svg (loss difference per step) and the data beside them.");
            string versus = $"against one process on the whole batch: largest loss difference {dl:E2}, largest weight difference {dw:E2} (relative to max(1, |value|))";
            if (DataParallelVision.Tolerance<T>(config) is { } tol)
            {
                bool ok = dl <= tol && dw <= tol;
                Console.WriteLine($"{versus}; tolerance {tol:E0}: {(ok ? "equal within tolerance" : "NOT EQUAL")}.");
                if (!ok) code = 1;
            }
            else
                Console.WriteLine($"{versus}. No tolerance is promised for {(config.AdamW ? "AdamW, whose step m/sqrt(v) magnifies rounding in near-zero gradients" : $"float32 beyond {DataParallelVision.MaxFloatSteps} steps, where the rounding differences grow with the steps and tip max-pool or ReLU decisions (docs/lab)")}; --double stays within 1e-12.");
        }
        return code;
    });
}

static void PrintLosses(double[] losses)
{
    int every = Math.Max(1, losses.Length / 8);
    for (int i = 0; i < losses.Length; i++)
        if ((i + 1) % every == 0 || i == 0 || i == losses.Length - 1) Console.WriteLine($"  step {i + 1,5}  loss {losses[i]:F6}");
}

sealed class Options
{
    private readonly HashSet<string> _switches = [];
    private readonly Dictionary<string, string> _values = [];

    public bool Has(string name) => _switches.Contains(name);
    public string? Value(string name) => _values.TryGetValue(name, out var v) ? v : null;

    /// <summary>Returns null on success, else the error message (an unknown argument or a missing value).</summary>
    public static string? Parse(string[] args, string[] switches, string[] valued, out Options options)
    {
        options = new Options();
        for (int i = 0; i < args.Length; i++)
        {
            if (switches.Contains(args[i])) options._switches.Add(args[i]);
            else if (valued.Contains(args[i]) && i + 1 < args.Length) options._values[args[i]] = args[++i];
            else return $"Unexpected argument '{args[i]}'.";
        }
        return null;
    }
}
