using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using NormKit.Lab.Data;
using NormKit.Lab.Demos;
using NormKit.Lab.Results;
using NormKit.Lab.Training;

namespace NormKit.Lab.Experiments;

/// <summary>
/// The lab's tour: the figure and every experiment (quick modes by default), then an HTML page that
/// says what ran on which data, and per claim of the seed article and per part of it, what was
/// measured and the verdict by the lab's rule (<see cref="Claims"/>), with the full-mode results
/// committed in docs/lab decided by the same code beside it, and every chart with a caption.
/// </summary>
public static class Report
{
    /// <summary>The settings of one tour: a name for the page and each experiment's configuration.</summary>
    public sealed record Tour(string Name, Saturation.Config Saturation, BatchSize.Config BatchSize, Vision.Config Vision, Language.Config Language)
    {
        /// <summary>The quick tour, the README's main command (minutes).</summary>
        public static Tour Quick => new("Quick", Experiments.Saturation.Config.Quick, Experiments.BatchSize.Config.Quick, Experiments.Vision.Config.Quick, Experiments.Language.Config.Quick);
        /// <summary>The full tour, every experiment in its full mode.</summary>
        public static Tour Full => new("Full", Experiments.Saturation.Config.Full, Experiments.BatchSize.Config.Full, Experiments.Vision.Config.Full, Experiments.Language.Config.Full);
        /// <summary>The quick or the full tour.</summary>
        public static Tour For(bool full) => full ? Full : Quick;

        /// <summary>What the tour is, in one sentence for the top of the page.</summary>
        public string Headline
        {
            get
            {
                int[] seeds = [Saturation.Seeds, BatchSize.Seeds, Vision.Seeds, Language.Seeds];
                string settings = Name == "Full" ? "every experiment in its full mode" : "reduced settings";
                string verdicts = seeds.All(s => s == 1) ? "one seed per arm — its verdicts are indicative only"
                    : $"{(seeds.Min() == seeds.Max() ? $"{seeds[0]}" : $"{seeds.Min()} to {seeds.Max()}")} seeds per arm — verdicts by the rule below";
                return $"{Name} tour: {settings}, {verdicts}";
            }
        }
    }

    /// <summary>How many units of work (the figure, then one per training run) a tour reports through its progress callback.</summary>
    public static int Units(bool full) => Units(Tour.For(full));

    /// <summary>How many units of work <paramref name="tour"/> reports through its progress callback.</summary>
    public static int Units(Tour tour) =>
        1 + Saturation.Arms.Length * Saturation.Inits.Length * tour.Saturation.Seeds + BatchSize.RunCount(tour.BatchSize)
        + Vision.Arms.Length * tour.Vision.Seeds + tour.Language.ArmList.Count * tour.Language.Seeds;

    /// <summary>Runs the quick or the full tour; <paramref name="progress"/> is called once per finished unit (see <see cref="Units(bool)"/>).</summary>
    public static string Run(string outDir, string? data, bool full, Action<string> progress, string? text = null, Action<string>? status = null) =>
        Run(outDir, data, Tour.For(full), progress, text, status);

    /// <summary>Training steps of the whole tour, for progress.</summary>
    public static long TotalSteps(Tour tour) =>
        Saturation.TotalSteps(tour.Saturation) + BatchSize.TotalSteps(tour.BatchSize) + Vision.TotalSteps(tour.Vision) + Language.TotalSteps(tour.Language);

    /// <summary>
    /// Runs <paramref name="tour"/>; <paramref name="progress"/> is called once per finished unit (see
    /// <see cref="Units(Tour)"/>), <paramref name="status"/> every few seconds with the training's
    /// progress (steps of the whole tour, loss, examples/s, time left). The page sets
    /// <paramref name="committed"/> (default: the results committed in docs/lab) beside this run;
    /// their charts are drawn into DIR/committed. Returns the page's path.
    /// </summary>
    public static string Run(string outDir, string? data, Tour tour, Action<string> progress, string? text = null, Action<string>? status = null, LabResults? committed = null)
    {
        ArgumentNullException.ThrowIfNull(tour);
        var clock = Stopwatch.StartNew();
        var meter = status is null ? null : new ProgressMeter(TotalSteps(tour), status);
        Directory.CreateDirectory(outDir);
        string folder = FashionMnist.Locate(data);
        var (train, test) = FashionMnist.TrainAndTest(data);
        var (sc, bc, vc, lc) = (tour.Saturation, tour.BatchSize, tour.Vision, tour.Language);

        var testSplit = FashionMnist.LoadTest(data);
        Figure.Write(testSplit, outDir);
        progress("figure");
        var stages = Figure1.Run(testSplit.Pixels, 64, testSplit.Features);

        var sat = Saturation.Run(sc, train, test, run => progress($"saturation: {run}"), meter);
        File.WriteAllText(Path.Combine(outDir, "saturation.csv"), Saturation.Csv(sat));
        SaturationPlots.Write(sat, outDir, "saturation", sc);
        var bs = BatchSize.Run(bc, train, test, run => progress($"batch size: {run}"), meter);
        File.WriteAllText(Path.Combine(outDir, "batch-size.csv"), BatchSize.Csv(bs));
        BatchSize.Plot(bs, outDir, "batch-size");
        var vis = Vision.Run(vc, train, test, run => progress($"vision: {run}"), meter);
        File.WriteAllText(Path.Combine(outDir, "vision.csv"), Vision.Csv(vis));
        Vision.Plot(vis, outDir);
        var corpus = TextData.Load(text);
        var lang = Language.Run(lc, corpus, run => progress($"language: {run}"), meter);
        File.WriteAllText(Path.Combine(outDir, "language.csv"), Language.Csv(lang));
        Language.Plot(lang, outDir);

        committed ??= LabResults.Committed;
        string committedDir = Path.Combine(outDir, CommittedFolder);
        var drawn = LabCharts.DrawAll(committed, committedDir);
        foreach (string file in committed.Files) File.WriteAllText(Path.Combine(committedDir, file), committed.Csv(file));

        var measured = new Measured(tour, DataInWords(folder, train, test), train.Count, test.Count, $"{corpus.Ids.Length.ToString("N0", CultureInfo.InvariantCulture)} characters of {corpus.Source}",
            stages[1], stages[2], sat, bs, vis, lang, clock.Elapsed);
        var evidence = Evidence.Read(committed, drawn.Charts.Select(c => Path.GetFileName(c)).ToHashSet());
        string path = Path.Combine(outDir, "report.html");
        File.WriteAllText(path, Page(measured, evidence));
        return path;
    }

    /// <summary>The folder beside the page that holds the committed results' CSV files and charts.</summary>
    public const string CommittedFolder = "committed";

    /// <summary>
    /// Fashion-MNIST as this run used it, in words: the full set's splits with the folder, or the
    /// shipped sample's 80/20 split, named as such.
    /// </summary>
    public static string DataInWords(string folder, FashionMnist.Split train, FashionMnist.Split test)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(test);
        string N(int n) => n.ToString("N0", CultureInfo.InvariantCulture);
        bool sample = Path.GetFullPath(folder).TrimEnd(Path.DirectorySeparatorChar) == Path.GetFullPath(FashionMnist.SampleFolder).TrimEnd(Path.DirectorySeparatorChar);
        return sample
            ? $"{N(train.Count)} training images and {N(test.Count)} test images from the {N(train.Count + test.Count)}-image sample the repository ships " +
              "(data/fashion-mnist-sample: the first images of Fashion-MNIST's test set) — not the full data set"
            : $"{N(train.Count)} training / {N(test.Count)} test images of Fashion-MNIST from {folder}";
    }

    // What one tour measured.
    private sealed record Measured(Tour Tour, string Data, int TrainImages, int TestImages, string Text, Figure1.Stage BatchNorm, Figure1.Stage LayerNorm,
        List<Experiments.Saturation.Point> Saturation, List<Experiments.BatchSize.Point> BatchSize, List<Experiments.Vision.Result> Vision,
        List<Experiments.Language.Result> Language, TimeSpan Elapsed);

    // The committed results, each null where its CSV is absent, and the charts drawn from them.
    private sealed record Evidence(LabResults Source, List<Experiments.Saturation.Point>? Saturation, List<Experiments.Saturation.Point>? Deep,
        List<Experiments.BatchSize.Point>? BatchSize, List<Experiments.Vision.Result>? Vision, List<Experiments.Language.Result>? Language,
        List<Experiments.Shift.Point>? Shift, List<ResNetVision.Result>? ResNet, List<Experiments.BatchSize.Point>? ResNetBatch,
        List<LearningRateSweep.Result>? LearningRates, List<DepthDiagnosis.Point>? Depth, HashSet<string> Charts)
    {
        public static Evidence Read(LabResults source, HashSet<string> charts) => new(source,
            source.Read("saturation.csv", Experiments.Saturation.Parse), source.Read("saturation-10layers.csv", Experiments.Saturation.Parse),
            source.Read("batch-size.csv", Experiments.BatchSize.Parse), source.Read("vision.csv", Experiments.Vision.Parse),
            source.Read("language.csv", Experiments.Language.Parse), source.Read("shift.csv", Experiments.Shift.Parse),
            source.Read("resnet.csv", ResNetVision.Parse), source.Read("resnet-batch-size.csv", Experiments.BatchSize.Parse),
            source.Read("lr-sweep.csv", LearningRateSweep.Parse), source.Read("depth.csv", DepthDiagnosis.Parse), charts);

        public string Label => $"Committed full-mode results ({Source.Origin})";
    }

    // A chart on the page: its file beside the page, and what it shows.
    private sealed record Chart(string Src, string Caption, bool Wide = false);

    // One claim (or one depth or network of it): this run's side and the committed side.
    // NotRun says how to run an experiment the tour leaves out.
    private sealed record Block(string Id, string Title, string Claim, string Published,
        string? RunSetup, List<Finding>? RunFindings, List<Chart> RunCharts,
        string? CommittedSetup, List<Finding>? CommittedFindings, List<Chart> CommittedCharts, string? CommittedMissing, string? NotRun = null);

    private const string FullSet = "the full Fashion-MNIST set's 60,000 training images";

    private static string Page(Measured m, Evidence e)
    {
        var blocks = Blocks(m, e);
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>NormKit lab report</title><style>").Append(Css).Append("</style></head><body>");
        sb.Append("<h1>NormKit lab report</h1>");
        sb.Append($"<p class=\"headline\">{H(m.Tour.Headline)}.</p>");
        sb.Append($"<p>Written {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; the tour took {H(ProgressMeter.Duration(m.Elapsed.TotalSeconds))} on {Environment.ProcessorCount} cores. ")
          .Append("Every number of this run is in the CSV files beside this page; the committed results' files and charts are in the folder <code>").Append(CommittedFolder).Append("</code>.</p>");
        sb.Append("<dl class=\"facts\">")
          .Append($"<dt>Data</dt><dd>{H(m.Data)}. Each experiment tests on the first of the test images (its setup below says how many). Text for the language model: {H(m.Text)}.</dd>")
          .Append("<dt>The full data set</dt><dd>Install Debian's package <code>dataset-fashion-mnist</code> (<code>apt-get install dataset-fashion-mnist</code>: ")
          .Append($"60,000 training and 10,000 test images in <code>{H(FashionMnist.SystemFolder)}</code>, found without options), ")
          .Append("or pass <code>--data DIR</code> with a folder holding the four IDX files (<code>train-images-idx3-ubyte</code>, <code>train-labels-idx1-ubyte</code>, ")
          .Append("<code>t10k-images-idx3-ubyte</code>, <code>t10k-labels-idx1-ubyte</code>, raw or <code>.gz</code>).</dd>")
          .Append("<dt>The full modes</dt><dd><code>normkit report --full</code> runs this tour with every experiment in its full mode (several seeds; ")
          .Append("<code>normkit report --help</code> gives the measured time); one experiment alone: <code>normkit lab saturation</code> (<code>--deep</code>: 10 layers), ")
          .Append("<code>lab depth</code>, <code>lab batch-size</code>, <code>lab vision</code>, <code>lab language</code>, <code>lab shift</code>, <code>lab resnet</code>, <code>lab lr-sweep</code>. From a clone of the repository: ")
          .Append("<code>dotnet run --project src/NormKit.Cli -c Release -- report --full</code>. <code>normkit lab charts</code> redraws the committed charts from their CSV files.</dd>")
          .Append($"<dt>Beside this run</dt><dd>{H(e.Label)}: the full modes' results as the repository holds them, decided by the same code as this run.</dd>")
          .Append("<dt>Verdicts</dt><dd>Each part of a claim compares two arms on one quantity, seed by seed. It <span class=\"v holds\">holds</span> when the difference ")
          .Append("of the means goes the claimed way by more than two standard errors of the difference (Welch: &radic;(sd&#8321;&sup2;/n&#8321; + sd&#8322;&sup2;/n&#8322;)), ")
          .Append("is <span class=\"v reversed\">reversed</span> when it goes the other way by as much, and is <span class=\"v notsep\">not separated</span> otherwise. ")
          .Append("With one seed there is no standard error: the verdict is <span class=\"v indicative\">indicative: one seed</span>, and only the difference's sign says anything. ")
          .Append("Values: the two sides in the order the case names them, mean &plusmn; sd over seeds; a positive difference goes the claimed way.</dd></dl>");

        sb.Append("<nav><b>Contents:</b> <a href=\"#glance\">at a glance</a> · <a href=\"#figure\">Figure 1</a>");
        foreach (var b in blocks) sb.Append($" · <a href=\"#{b.Id}\">{H(b.Title)}</a>");
        sb.Append("</nav>");

        sb.Append("<h2 id=\"glance\">At a glance</h2><table class=\"glance\"><tr><th>claim</th><th>part</th><th>this run</th><th>").Append(H(e.Label)).Append("</th></tr>");
        sb.Append($"<tr><td>(b) Figure 1</td><td>BatchNorm normalizes columns, LayerNorm rows</td>{SummaryCell(FigureVerdict(m))}<td class=\"v none\">not a result file</td></tr>");
        foreach (var b in blocks)
        {
            var parts = PartsOf(b);
            if (parts.Count == 0)
            {
                sb.Append($"<tr><td>{H(b.Title)}</td><td>—</td>{GlanceCell(b.RunFindings, null, b.RunSetup is null)}{GlanceCell(b.CommittedFindings, null, false, b.CommittedMissing)}</tr>");
                continue;
            }
            for (int i = 0; i < parts.Count; i++)
            {
                sb.Append("<tr>");
                if (i == 0) sb.Append($"<td rowspan=\"{parts.Count}\"><a href=\"#{b.Id}\">{H(b.Title)}</a></td>");
                sb.Append($"<td>{H(parts[i])}</td>{GlanceCell(b.RunFindings, parts[i], b.RunSetup is null)}{GlanceCell(b.CommittedFindings, parts[i], false, b.CommittedMissing)}</tr>");
            }
        }
        sb.Append("</table>");

        sb.Append("<section id=\"figure\"><h2>Figure 1, from a real batch (claim (b))</h2>")
          .Append("<p class=\"claim\"><b>Claim.</b> BatchNorm normalizes each feature across the batch; LayerNorm all features within a sample (the seed article's Figure 1).</p>")
          .Append("<p class=\"published\"><b>Published.</b> By definition (Ioffe &amp; Szegedy 2015; Ba et al. 2016).</p>")
          .Append($"<p><b>This run.</b> A 64 x 784 batch of test images: after BatchNorm the largest column mean is {m.BatchNorm.PerFeature.MaxAbsMean:0.0e+0} while rows keep means up to ")
          .Append($"{m.BatchNorm.PerSample.MaxAbsMean:F2}; after LayerNorm the largest row mean is {m.LayerNorm.PerSample.MaxAbsMean:0.0e+0} while columns keep means up to {m.LayerNorm.PerFeature.MaxAbsMean:F2}. ")
          .Append($"Verdict: <span class=\"v {Class(FigureVerdict(m))}\">{H(FigureVerdict(m))}</span> (a definition, checked on real data: below 1e-4 where it normalizes, above 0.05 where it does not).</p>")
          .Append(Grid([
              new Chart("figure-batch.png", "Rows: the first Fashion-MNIST test images (samples); columns: a band of pixel features across the images' middle rows (pixel index on the x axis); grey level = pixel value. " +
                  "The orange column is what one BatchNorm mean and variance are computed over (one feature, every sample of the batch); the blue row is what one LayerNorm " +
                  "statistic is computed over (one sample, all its features)."),
              new Chart("figure-norms.png", "For images: rows are samples N, columns channels C, each cell one H x W plane. Orange cells share one mean and variance: " +
                  "BatchNorm one channel over every sample, LayerNorm one sample over every channel, InstanceNorm one plane, GroupNorm one sample over a group of channels " +
                  "(Wu & He 2018, Figure 2).", Wide: true),
          ])).Append("</section>");

        foreach (var b in blocks) sb.Append(Render(b, e));
        sb.Append("<p class=\"foot\">The committed results are discussed claim by claim in the repository's docs/lab/README.md; the seed article's claims and the papers ")
          .Append("are listed there too.</p></body></html>");
        return sb.ToString();
    }

    private static List<Block> Blocks(Measured m, Evidence e)
    {
        var (sc, bc, vc, lc) = (m.Tour.Saturation, m.Tour.BatchSize, m.Tour.Vision, m.Tour.Language);
        string trainedOn = $"{m.TrainImages.ToString("N0", CultureInfo.InvariantCulture)} images";
        string missing(string file) => $"{file} is not among the committed results, so there is nothing to set beside this run.";
        var blocks = new List<Block>();

        var satFull = e.Saturation is null ? null : Saturation.ConfigOf(e.Saturation);
        blocks.Add(new("saturation", "(a) saturation and speed, " + Saturation.Network(sc),
            "(a) Normalization keeps activations where sigmoids still pass gradients, avoiding vanishing gradients and speeding convergence.",
            "Ioffe & Szegedy 2015, Figure 1: with BatchNorm the test accuracy rises faster and higher, and the sigmoid input's percentiles stay stable.",
            Setup.Saturation(sc, trainedOn, Math.Min(m.TestImages, sc.TestImages)), Claims.Saturation(m.Saturation), SaturationCharts("", sc, m.Saturation),
            satFull is null ? null : Setup.Saturation(satFull, FullSet, satFull.TestImages), e.Saturation is null ? null : Claims.Saturation(e.Saturation),
            e.Saturation is null ? [] : SaturationCharts(CommittedFolder + "/", satFull!, e.Saturation, e.Charts), e.Saturation is null ? missing("saturation.csv") : null));

        var deep = e.Deep is null ? null : Saturation.ConfigOf(e.Deep);
        blocks.Add(new("depth", "(a) at depth, " + Saturation.Network(deep ?? Saturation.Config.Deep),
            "(a) as above, in a deeper network, where vanishing gradients matter most.",
            "Ioffe & Szegedy 2015: saturating nonlinearities make deep networks hard to train; normalization keeps their inputs in the unsaturated range.",
            null, null, [],
            deep is null ? null : Setup.Saturation(deep, FullSet, deep.TestImages), e.Deep is null ? null : Claims.Saturation(e.Deep),
            e.Deep is null ? [] : SaturationCharts(CommittedFolder + "/", deep!, e.Deep, e.Charts, "saturation-10layers"), e.Deep is null ? missing("saturation-10layers.csv") : null,
            "Not in this tour: normkit lab saturation --deep runs it."));

        var bsFull = e.BatchSize is null ? null : BatchSize.Config.Full with
        {
            BatchSizes = e.BatchSize.Select(p => p.Batch).Distinct().Order().ToArray(),
            Seeds = e.BatchSize.GroupBy(p => (p.Arm, p.Batch)).Max(g => g.Count()),
            Arms = BatchSize.Arms.Where(a => e.BatchSize.Any(p => p.Arm == a)).ToArray(),
        };
        blocks.Add(new("batch-size", "batch size",
            "BatchNorm depends on the batch: it degrades at small batches, LayerNorm and GroupNorm do not. Verdicts on the test error in eval mode " +
            "(BatchNorm with its running statistics); BatchNorm's error with each test batch's own statistics is shown beside it as the mechanism.",
            "Wu & He 2018: BatchNorm 23.6% -> 34.7% ImageNet error from 32 to 2 images per GPU, GroupNorm about 24.1% throughout; Ba et al. 2016: LayerNorm robust at batch 4.",
            Setup.BatchSize(bc, trainedOn, Math.Min(m.TestImages, bc.TestImages)), Claims.BatchSize(m.BatchSize), [BatchSizeChart("", m.BatchSize)],
            bsFull is null ? null : Setup.BatchSize(bsFull, FullSet, bsFull.TestImages), e.BatchSize is null ? null : Claims.BatchSize(e.BatchSize),
            e.BatchSize is null ? [] : [BatchSizeChart(CommittedFolder + "/", e.BatchSize)], e.BatchSize is null ? missing("batch-size.csv") : null));

        var visFull = e.Vision is null ? null : Vision.Config.Full with { Seeds = Seeds(e.Vision.Select(r => (r.Arm, r.Seed))) };
        const string visionPart = "BatchNorm has the lowest test error";
        blocks.Add(new("vision", "(c) vision, small CNN", "(c) BatchNorm suits vision (here: a small CNN on Fashion-MNIST).",
            "Wu & He 2018, Table 1 (ResNet-50 on ImageNet, 32 images per GPU): error BatchNorm 23.6%, GroupNorm 24.1%, LayerNorm 25.3%, InstanceNorm 28.4%.",
            Setup.Vision(vc, trainedOn, Math.Min(m.TestImages, vc.TestImages)), Claims.BatchNormBest(VisionErrors(m.Vision), visionPart), [VisionChart("", m.Vision)],
            visFull is null ? null : Setup.Vision(visFull, FullSet, visFull.TestImages), e.Vision is null ? null : Claims.BatchNormBest(VisionErrors(e.Vision), visionPart),
            e.Vision is null ? [] : [VisionChart(CommittedFolder + "/", e.Vision)], e.Vision is null ? missing("vision.csv") : null));

        var resFull = e.ResNet is null ? null : ResNetVision.Config.Full with
        {
            Seeds = Seeds(e.ResNet.Select(r => (r.Arm, r.Seed))), Arms = e.ResNet.Select(r => r.Arm).Distinct().ToArray(),
        };
        var resSteps = e.ResNet?.Select(r => r.Steps).Distinct().ToList();
        var resCharts = new List<Chart>();
        if (e.Charts.Contains("resnet"))
            resCharts.Add(new(CommittedFolder + "/resnet.png", "Test error per arm for the residual CNN (bars: mean; whiskers: ± one standard deviation over seeds). " +
                "Lower is better; look for BatchNorm below the others by more than the whiskers."));
        if (e.Charts.Contains("resnet-curves"))
            resCharts.Add(new(CommittedFolder + "/resnet-curves.png", "Training loss against training step for the residual CNN, one line per arm (each point the mean of 50 steps, " +
                "averaged over seeds). Look for which arms train fastest and lowest at depth."));
        blocks.Add(new("resnet", "(c) vision at depth, residual CNN", "(c) BatchNorm suits vision, in a network deep enough for normalization to matter.",
            "Wu & He 2018, Table 1 (as above).",
            null, null, [],
            resFull is null ? null : Setup.ResNet(resFull, FullSet, resSteps is [int s] ? s : null),
            e.ResNet is null ? null : Claims.BatchNormBest(e.ResNet.Select(r => (r.Arm, r.Seed, r.TestError)), visionPart + " (residual CNN)"),
            resCharts, e.ResNet is null ? missing("resnet.csv") : null, "Not in this tour: normkit lab resnet runs it (hours on 2 cores; --quick about a minute and a half)."));

        var rbCharts = e.Charts.Contains("resnet-batch-size")
            ? new List<Chart> { new(CommittedFolder + "/resnet-batch-size.png", "Test error in eval mode (y) of the residual CNN (width 8) with BatchNorm and GroupNorm against the batch size (x, log scale), " +
                "the same 6,000 training images at every batch size (learning rate scaled with the batch), mean over seeds. Look for BatchNorm's line rising at batch 2 and 4 while GroupNorm's stays flat (Wu & He's Figure 1).") }
            : [];
        blocks.Add(new("resnet-batch", "batch size, residual CNN", "BatchNorm depends on the batch in a deep CNN too: it degrades at batch 2 and 4, GroupNorm does not.",
            "Wu & He 2018, Figure 1 / Table 2 (ResNet-50, ImageNet): BatchNorm 23.6, 27.3, 34.7% error at 32, 4, 2 images per GPU; GroupNorm 24.1, 24.2, 24.1%.",
            null, null, [],
            e.ResNetBatch is null ? null : $"The residual CNN of the block above at width 8 (channels 8, 16, 32), BatchNorm and GroupNorm, the first 6,000 training images once at batch " +
                $"{string.Join(", ", e.ResNetBatch.Select(p => p.Batch).Distinct().Order())} with SGD (momentum 0.9, cosine schedule) at 0.05 x batch / 32, " +
                $"{Seeds(e.ResNetBatch.Select(p => (p.Arm + p.Batch, p.Seed)))} seeds; test error in eval mode on the 10,000 test images.",
            e.ResNetBatch is null ? null : Claims.BatchSize(e.ResNetBatch), rbCharts, e.ResNetBatch is null ? missing("resnet-batch-size.csv") : null,
            "Not in this tour: normkit lab resnet --width 8 --train-images 6000 --epochs 1 --seeds 3 --arm BatchNorm --arm GroupNorm --batch B runs one batch size."));

        var lrCharts = new List<Chart>();
        foreach (var (file, network) in new[] { ("lr-sweep-residual", "residual CNN"), ("lr-sweep-plain", "the same network without shortcuts") })
            if (e.Charts.Contains(file))
                lrCharts.Add(new(CommittedFolder + "/" + file + ".png", $"Test accuracy (y) of the {network} after a fixed number of SGD steps against the learning rate (x), one line per arm, mean over seeds " +
                    "(a diverged run, whose loss became NaN, counts as chance, 0.1). Look for how far to the right each line stays high: the rates each arm tolerates."));
        blocks.Add(new("lr-sweep", "(a) speed: the learning rates each norm tolerates", "(a) Normalization speeds training up, largely by letting it use larger learning rates.",
            "Bjorck et al. 2018 (ResNet-110, CIFAR-10): BatchNorm mainly permits larger learning rates, which gives faster convergence; without it large steps diverge with depth. " +
            "Santurkar et al. 2018 (VGG, CIFAR-10, lr 0.1 and 0.5): BatchNorm smooths the loss landscape. Neither paper's per-rate numbers are quoted here (not verified).",
            null, null, [],
            e.LearningRates is null ? null : $"{string.Join(" and ", e.LearningRates.Select(r => r.Network).Distinct())} at width 8, arms " +
                $"{string.Join(", ", e.LearningRates.Select(r => r.Arm).Distinct())}; SGD with momentum 0.9 and weight decay 1e-4, batch 32, cosine schedule to 0, the same number of steps at each rate " +
                $"({string.Join(", ", e.LearningRates.Select(r => r.LearningRate).Distinct().Order().Select(r => r.ToString(CultureInfo.InvariantCulture)))}), " +
                $"{Seeds(e.LearningRates.Select(r => (r.Network + r.Arm + r.LearningRate, r.Seed)))} seeds; test accuracy on the first 2,000 test images.",
            e.LearningRates is null ? null : Claims.LearningRate(e.LearningRates), lrCharts, e.LearningRates is null ? missing("lr-sweep.csv") : null,
            "Not in this tour: normkit lab lr-sweep runs it (--quick about a minute)."));

        blocks.Add(new("depth-diagnosis", "(a) at depth: why LayerNorm fails ten sigmoid layers", "LayerNorm does not train the 10-layer sigmoid MLP with SGD: why, measured.",
            "Not a published claim: the seed article says normalization keeps sigmoids out of saturation; here LayerNorm's inputs are not saturated and it still fails.",
            null, null, [],
            e.Depth is null ? null : $"The 10 x 100 sigmoid MLP of the saturation experiment (Glorot init, batch 60, {e.Depth.Max(p => p.Step):N0} steps, " +
                $"{Seeds(e.Depth.Select(p => (p.Setting, p.Seed)))} seeds) in the settings named below; the per-layer measurements and their charts are in docs/lab/README.md " +
                "(section \"Depth: why LayerNorm does not train ten sigmoid layers\"): LayerNorm divides by a spread over features that is almost the same for every " +
                "sample, so the samples' differences, and the gradient, shrink layer by layer.",
            e.Depth is null ? null : Claims.Depth(e.Depth), [], e.Depth is null ? missing("depth.csv") : null,
            "Not in this tour: normkit lab depth runs it (about 5 minutes)."));

        var langFull = e.Language is null ? null : Language.Config.Full with
        {
            Seeds = Seeds(e.Language.Select(r => (r.Arm, r.Seed))),
            Arms = Language.Arms.Where(a => e.Language.Any(r => r.Arm == a)).ToArray(),
        };
        blocks.Add(new("language", "(c) language, tiny Transformer", "(c) LayerNorm suits language (here: a tiny Transformer on characters).",
            "Shen et al. 2020 (PowerNorm): BatchNorm about 1 BLEU below LayerNorm in Transformers; its batch statistics fluctuate far more on text than in CNNs on images.",
            Setup.Language(lc, m.Text), Claims.Language(m.Language, m.Vision), [LanguageChart("", m.Language)],
            langFull is null ? null : Setup.Language(langFull, "the .NET SDK's reference XML documentation, tags stripped (the default text)"),
            e.Language is null ? null : Claims.Language(e.Language, e.Vision),
            e.Language is null ? [] : [LanguageChart(CommittedFolder + "/", e.Language)], e.Language is null ? missing("language.csv") : null));

        var shiftFull = e.Shift is null ? null : Shift.Config.Full with { Seeds = Seeds(e.Shift.Select(p => (p.Arm, p.Seed))) };
        blocks.Add(new("shift", "distribution shift", "Normalization keeps a model working when the test data differ from the training data.",
            "Li et al. 2016 (AdaBN): re-estimating BatchNorm's statistics on the target data recovers much of the loss under a domain shift.",
            null, null, [],
            shiftFull is null ? null : Setup.Shift(shiftFull, FullSet), e.Shift is null ? null : Claims.Shift(e.Shift),
            e.Shift is null ? [] : [new(CommittedFolder + "/shift.png", "Test error (y) of each arm (lines) on the unchanged test images and on each change of them (x). " +
                "Look for lines that stay low under the intensity changes (brightness, contrast): a norm that removes a per-channel offset and scale should; " +
                "inverted images and noise are not intensity changes of that kind.", Wide: true)],
            e.Shift is null ? missing("shift.csv") : null, "Not in this tour: normkit lab shift runs it (--quick about half a minute)."));
        return blocks;
    }

    private static int Seeds(IEnumerable<(string Arm, int Seed)> runs) => runs.Distinct().GroupBy(r => r.Arm).Max(g => g.Count());

    private static IEnumerable<(string, int, double)> VisionErrors(IEnumerable<Vision.Result> results) => results.Select(r => (r.Arm, r.Seed, 1 - r.TestAccuracy));

    private static List<Chart> SaturationCharts(string dir, Saturation.Config c, IReadOnlyList<Saturation.Point> points, HashSet<string>? drawn = null, string prefix = "saturation")
    {
        string network = Saturation.Network(c), seeds = SeedWords(points.Select(p => (p.Arm, p.Seed)));
        var charts = new List<Chart>();
        // Two columns, one per initialization; rows: accuracy, percentiles, saturation.
        var inits = points.Select(p => p.Init).Distinct().ToList();
        foreach (var (chart, caption) in new (string, Func<string, string>)[]
        {
            ("accuracy", init => $"Test accuracy (y) against training step (x), {network}, {init} initialization, one line per norm arm ({seeds}). " +
                "Look for how soon each arm leaves chance (0.1): the speed part of the claim; the last points are the final-accuracy part."),
            ("percentiles", init => $"The 15th, 50th and 85th percentiles (dashed ▼, solid ●, dotted ▲) of one last-layer sigmoid's input over the test images (y) against training step (x), " +
                $"{network}, {init} initialization; colour = norm arm. Look for the band drifting towards |x| > 4 without normalization, where the sigmoid's slope vanishes, " +
                "and staying centred with it (the BatchNorm paper's Figure 1 b, c)."),
            ("saturation", init => $"Fraction of all last-layer sigmoid inputs with |x| > 4 (slope below 0.018) (y) against training step (x), {network}, {init} initialization. " +
                "Lower is better; the claim expects the 'none' line above the normalized ones."),
        })
            foreach (string init in inits)
            {
                string name = $"{prefix}-{(init.StartsWith("Glorot") ? "glorot" : "small-init")}-{chart}";
                if (drawn is null || drawn.Contains(name)) charts.Add(new(dir + name + ".png", caption(init)));
            }
        return charts;
    }

    private static Chart BatchSizeChart(string dir, IReadOnlyList<BatchSize.Point> points) => new(dir + "batch-size.png",
        $"Test error (y) against batch size (x, log scale), one line per arm ({SeedWords(points.Select(p => (p.Arm, p.Seed)))}); eval mode, with BatchNorm's running statistics. " +
        "Dashed: BatchNorm normalizing each test batch with its own statistics. Every run sees the same number of examples, so small batches take more steps. " +
        "Look for BatchNorm rising at small batches while LayerNorm and GroupNorm stay flat.");

    private static Chart VisionChart(string dir, IReadOnlyList<Vision.Result> results) => new(dir + "vision.png",
        $"Test accuracy (y) per norm arm (x) of the small CNN ({SeedWords(results.Select(r => (r.Arm, r.Seed)))}; whiskers: ± one standard deviation). " +
        "Higher is better; look for BatchNorm above the others by more than the whiskers.");

    private static Chart LanguageChart(string dir, IReadOnlyList<Language.Result> results) => new(dir + "language.png",
        $"Validation bits per character (y) per norm arm (x) of the tiny Transformer ({SeedWords(results.Select(r => (r.Arm, r.Seed)))}; diverged runs left out and named under their bar). " +
        "Lower is better; look for LayerNorm and RMSNorm below BatchNorm.");

    private static string SeedWords(IEnumerable<(string Arm, int Seed)> runs)
    {
        int seeds = Seeds(runs);
        return seeds == 1 ? "1 seed" : $"mean of {seeds} seeds";
    }

    private static string FigureVerdict(Measured m) =>
        m.BatchNorm.PerFeature.MaxAbsMean < 1e-4 && m.LayerNorm.PerSample.MaxAbsMean < 1e-4 && m.BatchNorm.PerSample.MaxAbsMean > 0.05 && m.LayerNorm.PerFeature.MaxAbsMean > 0.05
            ? "holds" : "does not hold here";

    // The parts of a block in order, this run's first.
    private static List<string> PartsOf(Block b) =>
        (b.RunFindings ?? []).Concat(b.CommittedFindings ?? []).Select(f => f.Part).Distinct().ToList();

    private static string GlanceCell(List<Finding>? findings, string? part, bool notRun, string? missing = null)
    {
        if (notRun) return "<td class=\"v none\">not in this tour</td>";
        if (findings is null) return $"<td class=\"v none\">{(missing is null ? "—" : "no committed results")}</td>";
        var ofPart = findings.Where(f => f.Part == part).ToList();
        // A part whose arms these results lack (the quick tour runs the classic arms only).
        return ofPart.Count == 0 ? "<td class=\"v none\">its arms not run here</td>" : SummaryCell(Claims.Summary(ofPart));
    }

    private static string SummaryCell(string summary) => $"<td class=\"v {Class(summary)}\">{H(summary)}</td>";

    private static string Class(string verdict) =>
        verdict.StartsWith("holds") ? "holds" : verdict.StartsWith("reversed") ? "reversed" : verdict.StartsWith("not separated") ? "notsep"
        : verdict.StartsWith("indicative") ? "indicative" : verdict.StartsWith("mixed") ? "mixed" : verdict.StartsWith("does not") ? "reversed" : "none";

    private static string Render(Block b, Evidence e)
    {
        var sb = new StringBuilder();
        sb.Append($"<section id=\"{b.Id}\"><h2>{H(b.Title)}</h2>")
          .Append($"<p class=\"claim\"><b>Claim.</b> {H(b.Claim)}</p><p class=\"published\"><b>Published.</b> {H(b.Published)}</p>")
          .Append("<div class=\"setup\"><div><h4>This run</h4>")
          .Append($"<p>{H(b.RunSetup ?? b.NotRun ?? "Not in this tour.")}</p>")
          .Append($"</div><div><h4>{H(e.Label)}</h4>")
          .Append(b.CommittedSetup is null ? $"<p>{H(b.CommittedMissing ?? "Absent.")}</p>"
              : $"<p>The full mode's settings, with the seeds{(b.Id is "saturation" or "depth" ? ", steps" : "")}{(b.Id == "batch-size" ? " and batch sizes" : "")} the CSV holds: {H(b.CommittedSetup)}</p>")
          .Append("</div></div>");

        var parts = PartsOf(b);
        bool run = b.RunSetup is not null;
        if (parts.Count > 0)
        {
            sb.Append("<table class=\"findings\"><tr><th>part</th><th>case</th>").Append(run ? "<th>this run</th><th>verdict</th>" : "")
              .Append("<th>committed full mode</th><th>verdict</th></tr>");
            foreach (string part in parts)
            {
                var cases = (b.RunFindings ?? []).Concat(b.CommittedFindings ?? []).Where(f => f.Part == part).Select(f => f.Case).Distinct().ToList();
                for (int i = 0; i < cases.Count; i++)
                {
                    sb.Append("<tr>");
                    if (i == 0) sb.Append($"<td rowspan=\"{cases.Count}\">{H(part)}</td>");
                    sb.Append($"<td>{H(cases[i])}</td>")
                      .Append(run ? FindingCells(b.RunFindings?.FirstOrDefault(f => f.Part == part && f.Case == cases[i]), "its arms not run here") : "")
                      .Append(FindingCells(b.CommittedFindings?.FirstOrDefault(f => f.Part == part && f.Case == cases[i]), b.CommittedFindings is null ? "no committed results" : "its arms not run here"))
                      .Append("</tr>");
                }
            }
            sb.Append("</table>");
        }
        if (b.RunCharts.Count == 1 && b.CommittedCharts.Count == 1)
        {
            // One chart a side: this run's and the committed one side by side.
            sb.Append("<div class=\"grid\"><div><h3>Chart: this run</h3>").Append(Grid(b.RunCharts, columns: false))
              .Append("</div><div><h3>Chart: committed full mode</h3>").Append(Grid(b.CommittedCharts, columns: false)).Append("</div></div>");
        }
        else
        {
            if (b.RunCharts.Count > 0) sb.Append("<h3>Charts: this run</h3>").Append(Grid(b.RunCharts));
            if (b.CommittedCharts.Count > 0) sb.Append($"<h3>Charts: {H(e.Label)}</h3>").Append(Grid(b.CommittedCharts));
        }
        return sb.Append("</section>").ToString();
    }

    private static string FindingCells(Finding? f, string absent)
    {
        if (f is null) return $"<td class=\"none\" colspan=\"2\">{H(absent)}</td>";
        string values = H(f.Values).Replace(" +- ", " &plusmn; ");
        string note = f.Note is null ? "" : $"<br><small>{H(f.Note)}</small>";
        string direction = f.Comparison.Outcome == Outcome.TooFewSeeds
            ? $"<br><small>{(f.Comparison.Difference > 0 ? "the claimed way" : f.Comparison.Difference < 0 ? "the other way" : "no difference")}</small>" : "";
        return $"<td>{values}{note}</td><td class=\"v {Class(f.Verdict)}\">{H(f.Verdict)}{direction}</td>";
    }

    // Charts with their captions, in two columns unless columns is false.
    private static string Grid(IEnumerable<Chart> charts, bool columns = true)
    {
        var sb = new StringBuilder(columns ? "<div class=\"grid\">" : "<div>");
        foreach (var c in charts)
            sb.Append($"<figure{(c.Wide ? " class=\"wide\"" : "")}><a href=\"{H(c.Src)}\"><img src=\"{H(c.Src)}\" alt=\"{H(c.Caption)}\"></a><figcaption>{H(c.Caption)}</figcaption></figure>");
        return sb.Append("</div>").ToString();
    }

    private static string H(string s) => WebUtility.HtmlEncode(s);

    private const string Css =
        "body{font-family:'DejaVu Sans',sans-serif;max-width:1280px;margin:1.5em auto;padding:0 1em;line-height:1.45;color:#222}" +
        "h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}h4{margin:.3em 0}" +
        ".headline{font-size:1.25em;font-weight:bold;background:#fff3c4;border-left:6px solid #e0a800;padding:.5em .8em}" +
        "dl.facts{display:grid;grid-template-columns:11em 1fr;gap:.4em 1em}dl.facts dt{font-weight:bold}dl.facts dd{margin:0}" +
        "code{background:#f3f3f3;padding:0 .2em;border-radius:3px}nav{margin:1em 0;padding:.5em;background:#f7f7f7}" +
        "table{border-collapse:collapse;margin:.8em 0;font-size:.9em}td,th{border:1px solid #bbb;padding:4px 7px;vertical-align:top;text-align:left}th{background:#f0f0f0}" +
        ".v{white-space:nowrap}.holds{background:#d8f5d0}.reversed{background:#f8d4d4}.notsep{background:#e9e9e9}.indicative{background:#dcebf7}.mixed{background:#fff3c4}" +
        ".none{color:#777}span.v{padding:0 .3em;border-radius:3px}" +
        ".claim,.published{margin:.3em 0}.setup{display:grid;grid-template-columns:1fr 1fr;gap:1.5em}.setup p{margin:.3em 0;font-size:.92em}" +
        ".grid{display:grid;grid-template-columns:1fr 1fr;gap:1.2em}figure{margin:0}figure.wide{grid-column:1/-1}" +
        "figure img{width:100%;border:1px solid #ddd}figure.wide img{max-width:900px}figcaption{font-size:.85em;color:#444}.foot{margin-top:3em;color:#555}";
}
