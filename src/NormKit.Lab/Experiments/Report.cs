using System.Globalization;
using System.Net;
using System.Text;
using NormKit.Lab.Data;
using NormKit.Lab.Demos;
using NormKit.Lab.Training;

namespace NormKit.Lab.Experiments;

/// <summary>
/// The lab's tour: the figure and every experiment (quick modes by default), then an HTML page
/// with the charts and, per claim of the seed article, what was measured, the published result
/// beside it and a verdict computed from this run's numbers.
/// </summary>
public static class Report
{
    public sealed record Claim(string Text, string Measured, string Published, string Verdict);

    /// <summary>The settings of one tour: a name for the page and each experiment's configuration.</summary>
    public sealed record Tour(string Name, Saturation.Config Saturation, BatchSize.Config BatchSize, Vision.Config Vision, Language.Config Language)
    {
        /// <summary>The quick tour, the README's main command (minutes).</summary>
        public static Tour Quick => new("Quick", Experiments.Saturation.Config.Quick, Experiments.BatchSize.Config.Quick, Experiments.Vision.Config.Quick, Experiments.Language.Config.Quick);
        /// <summary>The full tour, every experiment in its full mode.</summary>
        public static Tour Full => new("Full", Experiments.Saturation.Config.Full, Experiments.BatchSize.Config.Full, Experiments.Vision.Config.Full, Experiments.Language.Config.Full);
        /// <summary>The quick or the full tour.</summary>
        public static Tour For(bool full) => full ? Full : Quick;
    }

    /// <summary>How many units of work (the figure, then one per training run) a tour reports through its progress callback.</summary>
    public static int Units(bool full) => Units(Tour.For(full));

    /// <summary>How many units of work <paramref name="tour"/> reports through its progress callback.</summary>
    public static int Units(Tour tour) =>
        1 + Saturation.Arms.Length * Saturation.Inits.Length * tour.Saturation.Seeds + BatchSize.Arms.Length * tour.BatchSize.BatchSizes.Length * tour.BatchSize.Seeds
        + Vision.Arms.Length * tour.Vision.Seeds + Language.Arms.Length * tour.Language.Seeds;

    /// <summary>Runs the quick or the full tour; <paramref name="progress"/> is called once per finished unit (see <see cref="Units(bool)"/>).</summary>
    public static string Run(string outDir, string? data, bool full, Action<string> progress, string? text = null, Action<string>? status = null) =>
        Run(outDir, data, Tour.For(full), progress, text, status);

    /// <summary>Training steps of the whole tour, for progress.</summary>
    public static long TotalSteps(Tour tour) =>
        Saturation.TotalSteps(tour.Saturation) + BatchSize.TotalSteps(tour.BatchSize) + Vision.TotalSteps(tour.Vision) + Language.TotalSteps(tour.Language);

    /// <summary>
    /// Runs <paramref name="tour"/>; <paramref name="progress"/> is called once per finished unit (see
    /// <see cref="Units(Tour)"/>), <paramref name="status"/> every few seconds with the training's
    /// progress (steps of the whole tour, loss, examples/s, time left).
    /// </summary>
    public static string Run(string outDir, string? data, Tour tour, Action<string> progress, string? text = null, Action<string>? status = null)
    {
        var meter = status is null ? null : new ProgressMeter(TotalSteps(tour), status);
        Directory.CreateDirectory(outDir);
        var (train, test) = FashionMnist.TrainAndTest(data);
        var (sc, bc, vc, lc) = (tour.Saturation, tour.BatchSize, tour.Vision, tour.Language);
        var claims = new List<Claim>();

        var testSplit = FashionMnist.LoadTest(data);
        Figure.Write(testSplit, outDir);
        progress("figure");
        var stages = Figure1.Run(testSplit.Pixels, 64, testSplit.Features);
        var (input, bn, ln) = (stages[0], stages[1], stages[2]);
        bool bHolds = bn.PerFeature.MaxAbsMean < 1e-4 && ln.PerSample.MaxAbsMean < 1e-4 && bn.PerSample.MaxAbsMean > 0.05 && ln.PerFeature.MaxAbsMean > 0.05;
        claims.Add(new("(b) BatchNorm normalizes each feature across the batch; LayerNorm all features within a sample (Figure 1).",
            $"64 x 784 batch: after BatchNorm the largest column mean is {bn.PerFeature.MaxAbsMean:E1} (rows: {bn.PerSample.MaxAbsMean:F2}); after LayerNorm the largest row mean is {ln.PerSample.MaxAbsMean:E1} (columns: {ln.PerFeature.MaxAbsMean:F2}).",
            "By definition (Ioffe & Szegedy 2015; Ba et al. 2016).", bHolds ? "holds" : "does not hold here"));

        var sat = Saturation.Run(sc, train, test, run => progress($"saturation: {run}"), meter);
        File.WriteAllText(Path.Combine(outDir, "saturation.csv"), Saturation.Csv(sat));
        SaturationPlots.Write(sat, outDir, "saturation", sc);
        double Last(string init, string arm, Func<Saturation.Point, double> f) =>
            sat.Where(p => p.Init == init && p.Arm == arm && p.Step == sat.Where(q => q.Init == init && q.Arm == arm).Max(q => q.Step)).Average(f);
        double First(string init, string arm, Func<Saturation.Point, double> f) =>
            sat.Where(p => p.Init == init && p.Arm == arm && p.Step == sat.Where(q => q.Init == init && q.Arm == arm).Min(q => q.Step)).Average(f);
        const string small = "N(0,0.01^2)";
        double satNone = Last(small, "none", p => p.SaturatedFraction), satBn = Last(small, "BatchNorm", p => p.SaturatedFraction), satLn = Last(small, "LayerNorm", p => p.SaturatedFraction);
        double accNone = First(small, "none", p => p.TestAccuracy), accBn = First(small, "BatchNorm", p => p.TestAccuracy);
        double endNone = Last("Glorot", "none", p => p.TestAccuracy), endBn = Last("Glorot", "BatchNorm", p => p.TestAccuracy);
        bool lessSaturated = satBn < satNone && satLn < satNone, faster = accBn > accNone + 0.1, higher = endBn > endNone + 0.01;
        claims.Add(new("(a) Normalization keeps activations where sigmoids still pass gradients, avoiding vanishing gradients and speeding convergence.",
            $"{sc.HiddenLayers} x 100 sigmoid, {sc.Steps} SGD steps: saturated last-layer inputs at the end {satNone:F3} without normalization vs {satBn:F3} BatchNorm and {satLn:F3} LayerNorm ({small}); " +
            $"test accuracy at the first evaluation {accNone:F3} without vs {accBn:F3} with BatchNorm ({small}); at the end with Glorot {endNone:F3} vs {endBn:F3}.",
            "Ioffe & Szegedy 2015, Fig. 1: with BN accuracy rises faster and higher and the sigmoid input percentiles stay stable.",
            lessSaturated && faster && higher ? "holds" : lessSaturated || faster ? "holds partly" : "does not hold here"));

        var bs = BatchSize.Run(bc, train, test, run => progress($"batch size: {run}"), meter);
        File.WriteAllText(Path.Combine(outDir, "batch-size.csv"), BatchSize.Csv(bs));
        BatchSize.Plot(bs, outDir, "batch-size");
        int smallest = bc.BatchSizes.Min(), largest = bc.BatchSizes.Max();
        double E(string arm, int b, bool trainMode = false) => bs.Where(p => p.Arm == arm && p.Batch == b).Average(p => trainMode ? p.TestErrorTrainMode : p.TestError);
        bool degrades = E("BatchNorm", smallest, true) > E("LayerNorm", smallest) + 0.1 && E("BatchNorm", smallest, true) > E("GroupNorm", smallest) + 0.1;
        bool fineLarge = E("BatchNorm", largest) < E("LayerNorm", largest) + 0.03;
        claims.Add(new("BatchNorm depends on the batch; LayerNorm and GroupNorm do not.",
            $"Test error at batch {smallest}: BatchNorm {E("BatchNorm", smallest):F3} (eval) / {E("BatchNorm", smallest, true):F3} (batch statistics), LayerNorm {E("LayerNorm", smallest):F3}, GroupNorm {E("GroupNorm", smallest):F3}; " +
            $"at batch {largest}: BatchNorm {E("BatchNorm", largest):F3}, LayerNorm {E("LayerNorm", largest):F3}, GroupNorm {E("GroupNorm", largest):F3}.",
            "Wu & He 2018: BN 23.6 -> 34.7% error from 32 to 2 images/GPU, GN ~24.1% throughout; Ba et al. 2016: LN robust at batch 4.",
            degrades && fineLarge ? "holds" : degrades ? "holds partly" : "does not hold here"));

        var vis = Vision.Run(vc, train, test, run => progress($"vision: {run}"), meter);
        File.WriteAllText(Path.Combine(outDir, "vision.csv"), Vision.Csv(vis));
        Vision.Plot(vis, outDir);
        var acc = vis.GroupBy(r => r.Arm).ToDictionary(g => g.Key, g => g.Average(r => r.TestAccuracy));
        double best = acc.Where(kv => kv.Key != "BatchNorm").Max(kv => kv.Value);
        claims.Add(new("(c) BatchNorm suits vision (here: a small CNN on Fashion-MNIST).",
            "Test accuracy: " + string.Join(", ", acc.Select(kv => $"{kv.Key} {kv.Value:F3}")) + ".",
            "Wu & He 2018, Table 1 (ResNet-50, ImageNet): error BN 23.6, GN 24.1, LN 25.3, IN 28.4.",
            acc["BatchNorm"] > best + 0.01 ? "holds" : acc["BatchNorm"] > best - 0.01 ? "does not hold here (the arms are within 0.01)" : "does not hold here"));
        var corpus = TextData.Load(text);
        var lang = Language.Run(lc, corpus, run => progress($"language: {run}"), meter);
        File.WriteAllText(Path.Combine(outDir, "language.csv"), Language.Csv(lang));
        Language.Plot(lang, outDir);
        var bpc = lang.GroupBy(r => r.Arm).ToDictionary(g => g.Key, g => Language.BitsPerChar(g).Mean);
        double textFluct = lang.Where(r => r.Arm == "BatchNorm").Average(r => r.BatchMeanFluctuation);
        double imageFluct = vis.Where(r => r.Arm == "BatchNorm").Average(r => r.BatchMeanFluctuation);
        bool lnBeatsBn = bpc["LayerNorm"] < bpc["BatchNorm"] - 0.02, fluctuatesMore = textFluct > imageFluct;
        claims.Add(new("(c) LayerNorm suits language (here: a tiny Transformer on characters).",
            "Validation bits per character: " + string.Join(", ", bpc.Select(kv => $"{kv.Key} {kv.Value:F3}")) +
            $". BatchNorm's batch-mean fluctuation (1/d)||mu_B - mu||: {textFluct:E2} on text vs {imageFluct:E2} in the CNN on images.",
            "Shen et al. 2020 (PowerNorm): BN ~1 BLEU below LN in Transformers; its batch statistics fluctuate far more on text than in CNNs on images.",
            lnBeatsBn && fluctuatesMore ? "holds" : lnBeatsBn || fluctuatesMore ? "holds partly" : "does not hold here"));

        string html = Html(claims, tour.Name, train, test);
        string path = Path.Combine(outDir, "report.html");
        File.WriteAllText(path, html);
        return path;
    }

    private static string Html(List<Claim> claims, string tourName, FashionMnist.Split train, FashionMnist.Split test)
    {
        static string H(string s) => WebUtility.HtmlEncode(s);
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>NormKit lab report</title><style>")
          .Append("body{font-family:DejaVu Sans,sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:6px;vertical-align:top}")
          .Append(".holds{background:#d8f5d0}.partly{background:#fff3c4}.not{background:#f8d4d4}.none{background:#eee}img{max-width:100%}</style></head><body>")
          .Append("<h1>NormKit lab report</h1>")
          .Append($"<p>{H(tourName)} tour, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC. Images: {H(train.Source)} ({train.Count} training images); test data: {H(test.Source)}. ")
          .Append("Every number below was measured in this run; the CSV files beside this page hold every point.</p>")
          .Append("<h2>The seed article's claims</h2><table><tr><th>claim</th><th>measured here</th><th>published</th><th>verdict</th></tr>");
        foreach (var c in claims)
        {
            string cls = c.Verdict.StartsWith("holds partly") ? "partly" : c.Verdict.StartsWith("holds") ? "holds" : c.Verdict.StartsWith("not measured") ? "none" : "not";
            sb.Append($"<tr><td>{H(c.Text)}</td><td>{H(c.Measured)}</td><td>{H(c.Published)}</td><td class=\"{cls}\">{H(c.Verdict)}</td></tr>");
        }
        sb.Append("</table>")
          .Append("<h2>Figure 1, from a real batch</h2><img src=\"figure-batch.png\"><p>Which (sample, channel) cells share one mean and variance in each norm (each cell holds an image's H x W values):</p><img src=\"figure-norms.png\">")
          .Append("<h2>Saturation (BatchNorm paper, Figure 1)</h2>");
        foreach (string tag in new[] { "small-init", "glorot" })
            foreach (string chart in new[] { "accuracy", "percentiles", "saturation" })
                sb.Append($"<img src=\"saturation-{tag}-{chart}.png\">");
        sb.Append("<h2>Batch size</h2><img src=\"batch-size.png\">")
          .Append("<h2>Vision</h2><img src=\"vision.png\"><h2>Language</h2><img src=\"language.png\">")
          .Append("<p>The full-mode results, with a discussion of each verdict, are in the repository's docs/lab/README.md.</p></body></html>");
        return sb.ToString();
    }
}
