using NormKit.Lab.Plots;
using NormKit.Lab.Data;
using NormKit.Lab.Experiments;
using NormKit.Lab.Results;

namespace NormKit.Lab.Tests;

/// <summary>A seeded quick run of the saturation experiment on the shipped batch: reproducible, and within its stated losses.</summary>
public class SaturationTests
{
    private static readonly Saturation.Config Tiny = new(Steps: 300, EvalEvery: 100, Seeds: 1, TestImages: 200);

    [Fact]
    public void The_same_seed_gives_the_same_run()
    {
        var (train, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var a = Saturation.RunOne("BatchNorm", "Glorot", 7, Tiny with { Steps = 100 }, train, test);
        var b = Saturation.RunOne("BatchNorm", "Glorot", 7, Tiny with { Steps = 100 }, train, test);
        Assert.Equal(Saturation.Csv(a), Saturation.Csv(b));
        var c = Saturation.RunOne("BatchNorm", "Glorot", 8, Tiny with { Steps = 100 }, train, test);
        Assert.NotEqual(Saturation.Csv(a), Saturation.Csv(c));
    }

    [Fact]
    public void With_tiny_initial_weights_BatchNorm_trains_and_the_plain_net_stalls()
    {
        // Stated budget: 300 SGD steps at batch 60 on the shipped 800 training images. Chance is
        // ln(10) = 2.30. BatchNorm must get the training loss of steps 201-300 below 0.6; without
        // normalization the N(0, 0.01^2) net stays above 2.0 (the stall the BatchNorm paper's
        // pilot reports).
        var (train, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var bn = Saturation.RunOne("BatchNorm", "N(0,0.01^2)", 1, Tiny, train, test);
        var none = Saturation.RunOne("none", "N(0,0.01^2)", 1, Tiny, train, test);
        Assert.True(bn[^1].TrainLoss < 0.6, $"BatchNorm training loss {bn[^1].TrainLoss}");
        Assert.True(none[^1].TrainLoss > 2.0, $"plain net training loss {none[^1].TrainLoss}");
        Assert.True(bn[^1].TestAccuracy > none[^1].TestAccuracy + 0.3, $"test accuracy {bn[^1].TestAccuracy} vs {none[^1].TestAccuracy}");
        Assert.Equal(4, bn[^1].GradNorms.Length);
        Assert.InRange(bn[^1].P15, -10, bn[^1].P50);
        Assert.InRange(bn[^1].P85, bn[^1].P50, 10);
    }

    [Fact]
    public void Csv_has_a_header_and_one_row_per_point()
    {
        var (train, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var points = Saturation.RunOne("LayerNorm", "Glorot", 1, Tiny with { Steps = 200 }, train, test);
        var lines = Saturation.Csv(points).TrimEnd().Split('\n');
        Assert.StartsWith("arm,init,seed,step,train_loss,test_accuracy", lines[0]);
        Assert.Equal(points.Count + 1, lines.Length);
        Assert.Equal(2, points.Count);
    }
}

public sealed class SaturationPlotTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("normkit-plots-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Charts_are_drawn_with_the_intended_typeface()
    {
        // ScottPlot falls back to another font without a word when DejaVu Sans is missing
        // (fonts-dejavu-core), so the charts' text would change silently: check the font resolves.
        Assert.Equal(Charts.FontFamily, Charts.ResolvedFamily());
        Assert.Null(Charts.ResolvedFamily("No Such Typeface NormKit"));   // the probe can fail
    }

    [Fact]
    public void Charts_render_as_png_and_svg()
    {
        var (train, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var config = new Saturation.Config(Steps: 40, EvalEvery: 20, Seeds: 1, TestImages: 100);
        var points = Saturation.RunOne("none", "Glorot", 1, config, train, test)
            .Concat(Saturation.RunOne("BatchNorm", "Glorot", 1, config, train, test)).ToList();
        var charts = SaturationPlots.Write(points, _dir, "saturation", config);
        Assert.Equal(3, charts.Count);
        Assert.Throws<ArgumentException>("config", () => SaturationPlots.Write(points, _dir, "saturation", config with { HiddenLayers = 10 }));
        foreach (var c in charts)
        {
            var png = File.ReadAllBytes(c + ".png");
            Assert.True(png.Length > 5000, $"{c}.png has {png.Length} bytes");
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);
            string svg = File.ReadAllText(c + ".svg");
            Assert.Contains("<svg", svg);
            Assert.Contains("BatchNorm", svg);   // the legend's text
            Assert.Contains("3 x 100 sigmoid", svg);   // the title names the network
        }
    }
}

public class BatchSizeTests
{
    private static readonly BatchSize.Config Tiny = new([2, 64], Examples: 3000, Seeds: 1, Hidden: 64, TestImages: 128);

    [Fact]
    public void BatchNorm_with_batch_statistics_fails_at_batch_2_and_LayerNorm_does_not()
    {
        // Stated: after 3000 examples at batch 2 on the shipped batch, normalizing test batches of 2
        // with their own statistics (x_hat is always +-1 per feature) gives BatchNorm a test error at
        // least 0.15 above LayerNorm's; at batch 64 the two are within 0.15 of each other.
        var (train, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var bn2 = BatchSize.RunOne("BatchNorm", 2, 1, Tiny, train, test);
        var ln2 = BatchSize.RunOne("LayerNorm", 2, 1, Tiny, train, test);
        var bn64 = BatchSize.RunOne("BatchNorm", 64, 1, Tiny, train, test);
        var ln64 = BatchSize.RunOne("LayerNorm", 64, 1, Tiny, train, test);
        Assert.True(bn2.TestErrorTrainMode > ln2.TestError + 0.15, $"batch 2: BatchNorm (batch statistics) {bn2.TestErrorTrainMode}, LayerNorm {ln2.TestError}");
        Assert.True(Math.Abs(bn64.TestError - ln64.TestError) < 0.15, $"batch 64: BatchNorm {bn64.TestError}, LayerNorm {ln64.TestError}");
        Assert.True(double.IsNaN(ln2.TestErrorTrainMode));
        Assert.Equal(BatchSize.Csv([bn2]), BatchSize.Csv([BatchSize.RunOne("BatchNorm", 2, 1, Tiny, train, test)]));
    }
}

public class VisionTests
{
    [Fact]
    public void Every_arm_learns_within_its_budget_and_runs_repeat()
    {
        // Stated budget: 150 AdamW steps at batch 32 on the shipped 800 training images; every arm
        // must pass 55% test accuracy (chance is 10%) on the 200 held-out images.
        var (train, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var config = new Vision.Config(Steps: 150, Seeds: 1, TestImages: 200);
        foreach (string arm in Vision.Arms)
        {
            var r = Vision.RunOne(arm, 1, config, train, test);
            Assert.True(r.TestAccuracy > 0.55, $"{arm}: test accuracy {r.TestAccuracy}");
        }
        var a = Vision.RunOne("GroupNorm", 2, config with { Steps = 20 }, train, test);
        var b = Vision.RunOne("GroupNorm", 2, config with { Steps = 20 }, train, test);
        Assert.Equal(Vision.Csv([a]), Vision.Csv([b]));
    }
}

public sealed class ReportTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("normkit-report-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // Every experiment of the tour with small budgets: the page, its claims and every chart are
    // what this test checks; the quick tour itself runs in .ci/run (normkit report).
    private static readonly Report.Tour Tiny = new("Tiny",
        new Saturation.Config(Steps: 200, EvalEvery: 100, Seeds: 1, TestImages: 200),
        new BatchSize.Config([2, 32], Examples: 1_000, Seeds: 1, Hidden: 64, TestImages: 200),
        new Vision.Config(Steps: 40, Seeds: 1, TestImages: 200),
        new Language.Config(Steps: 40, Seeds: 1, ValidationSequences: 32));

    [Fact]
    public void A_tour_renders_the_report()
    {
        var steps = new List<string>();
        string path = Report.Run(_dir, FashionMnist.SampleFolder, Tiny, steps.Add);
        string html = File.ReadAllText(path);
        Assert.StartsWith("<!DOCTYPE html>", html);
        Assert.Contains("(a) Normalization keeps activations", html);
        Assert.Contains("(c) LayerNorm suits language", html);
        Assert.Contains("Wu &amp; He 2018", html);
        var images = System.Text.RegularExpressions.Regex.Matches(html, "<img src=\"([^\"]+)\"").Select(m => m.Groups[1].Value).ToList();
        Assert.True(images.Count >= 20, $"{images.Count} charts");   // this run's and the committed ones
        foreach (var img in images)
            Assert.True(File.Exists(Path.Combine(_dir, img)), $"the report shows {img}, which is missing");
        Assert.Contains(steps, s => s.StartsWith("vision"));
        Assert.Equal(Report.Units(Tiny), steps.Count);   // one progress call per unit of work
        Assert.Contains("Tiny tour: reduced settings, one seed per arm — its verdicts are indicative only", html);
        Assert.Contains("800 training images and 200 test images from the 1,000-image sample the repository ships", html);
        Assert.Contains("dataset-fashion-mnist", html);
        Assert.Contains("--data DIR", html);
        Assert.Contains("3 x 100 sigmoid MLP", html);   // a setup paragraph from the configuration
        Assert.Contains($"Committed full-mode results ({LabResults.Committed.Origin})", html);
        // Every chart sits in a figure with its caption.
        var figures = System.Text.RegularExpressions.Regex.Matches(html, "<figure[^>]*>(.*?)</figure>").Select(m => m.Groups[1].Value).ToList();
        Assert.Equal(images.Count, figures.Count);
        Assert.All(figures, f => Assert.Matches("<img [^>]+><\\/a><figcaption>[^<]{40,}</figcaption>$", f));
        // One seed per arm: no verdict by the rule, the difference is indicative only.
        Assert.Contains("<td class=\"v indicative\">indicative: one seed<br><small>the", html);
        Assert.DoesNotContain("holds partly", html);
    }

    [Fact]
    public void A_committed_csv_that_is_absent_is_named_in_its_section()
    {
        // Committed results with vision.csv only: every other section says its file is missing.
        string committed = Path.Combine(_dir, "some-results");
        Directory.CreateDirectory(committed);
        File.WriteAllText(Path.Combine(committed, "vision.csv"), LabResults.Committed.Csv("vision.csv"));
        var tiny = new Report.Tour("Tiny",
            new Saturation.Config(Steps: 20, EvalEvery: 10, Seeds: 1, TestImages: 100),
            new BatchSize.Config([2, 8], Examples: 100, Seeds: 1, Hidden: 32, TestImages: 100),
            new Vision.Config(Steps: 10, Seeds: 1, TestImages: 100),
            new Language.Config(Steps: 10, Seeds: 1, ValidationSequences: 16));
        string html = File.ReadAllText(Report.Run(Path.Combine(_dir, "page"), FashionMnist.SampleFolder, tiny, _ => { }, committed: LabResults.Folder(committed)));
        foreach (string file in (string[])["saturation.csv", "saturation-10layers.csv", "batch-size.csv", "language.csv", "shift.csv", "resnet.csv"])
            Assert.Contains($"{file} is not among the committed results", html);
        Assert.DoesNotContain("vision.csv is not among", html);
        Assert.Contains("src=\"committed/vision.png\"", html);
        Assert.Contains($"Committed full-mode results ({committed})", html);
        Assert.True(File.Exists(Path.Combine(_dir, "page", "committed", "vision.csv")));
    }
}

public sealed class LanguageTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("normkit-text-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string TextFile()
    {
        var rng = new Random(1);
        string[] words = ["the", "norm", "layer", "batch", "mean", "variance", "of", "each", "sample", "feature", "is", "computed"];
        var sb = new System.Text.StringBuilder();
        while (sb.Length < 60_000) sb.Append(words[rng.Next(words.Length)]).Append(rng.Next(8) == 0 ? ". " : " ");
        string path = Path.Combine(_dir, "text.txt");
        File.WriteAllText(path, sb.ToString());
        return path;
    }

    [Fact]
    public void A_tiny_Transformer_learns_characters_and_runs_repeat()
    {
        // Stated budget: 150 AdamW steps of 16 x 32 characters; chance is log2(96) = 6.58 bits.
        // With LayerNorm the validation loss must fall below 3.5 bits per character.
        var corpus = TextData.Load(TextFile());
        var config = new Language.Config(Steps: 150, Seeds: 1, ValidationSequences: 32);
        var ln = Language.RunOne("LayerNorm", 1, config, corpus);
        Assert.True(ln.ValidationBitsPerChar < 3.5, $"LayerNorm: {ln.ValidationBitsPerChar} bits per character");
        var bn = Language.RunOne("BatchNorm", 1, config with { Steps = 30 }, corpus);
        Assert.True(bn.BatchMeanFluctuation > 0 && double.IsFinite(bn.BatchMeanFluctuation));
        Assert.Equal(Language.Csv([bn]), Language.Csv([Language.RunOne("BatchNorm", 1, config with { Steps = 30 }, corpus)]));
    }

    [Fact]
    public void Text_sources_and_their_errors()
    {
        var sdk = TextData.Load(null, maxChars: 200_000);
        Assert.Equal(200_000, sdk.Ids.Length);
        Assert.Contains("tags stripped", sdk.Source);
        Assert.All(sdk.Ids, id => Assert.InRange(id, 0, 94));
        Assert.Throws<FileNotFoundException>(() => TextData.Load(Path.Combine(_dir, "missing.txt")));
        string tiny = Path.Combine(_dir, "tiny.txt");
        File.WriteAllText(tiny, "too short");
        Assert.Contains("at least 1000", Assert.Throws<InvalidDataException>(() => TextData.Load(tiny)).Message);
    }
}
