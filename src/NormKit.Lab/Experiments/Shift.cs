using NormKit.Lab.Data;
using NormKit.Lab.Results;
using NormKit.Lab.Training;
using NormKit.Layers;

namespace NormKit.Lab.Experiments;

/// <summary>
/// Distribution shift, the seed article's claim that normalization keeps a model working when the
/// test data differ from the training data: the vision experiment's CNN (<see cref="Vision.Model"/>)
/// trained on Fashion-MNIST as it is, then tested on test images changed in brightness, in contrast,
/// inverted, and with noise. Per-sample norms (InstanceNorm, GroupNorm, LayerNorm) remove an
/// intensity offset and scale within each sample; BatchNorm in eval mode normalizes with the
/// training distribution's statistics. "BatchNorm + AdaBN" is the BatchNorm network with its running
/// statistics re-estimated on the shifted test images (Li et al. 2016;
/// <see cref="BatchNormRecalibration"/>), then evaluated.
/// </summary>
public static class Shift
{
    public sealed record Config(int Steps, int Seeds, int TestImages = 10_000, int Batch = 32, double LearningRate = 2e-3)
    {
        public static Config Quick => new(Steps: 250, Seeds: 1, TestImages: 1000);
        public static Config Full => new(Steps: 2000, Seeds: 3);
        public Vision.Config Training => new(Steps, Seeds, Batch, LearningRate, TestImages);
    }

    /// <summary>A change of the test images: a name and what it does to one pixel (values in [0, 1] before).</summary>
    public sealed record Change(string Name, Func<float, Random, float> Apply, bool Affine);

    /// <summary>The changes, the unchanged test set first. The affine ones are what per-sample norms remove.</summary>
    public static readonly Change[] Changes =
    [
        new("none", (v, _) => v, Affine: true),
        new("brightness +0.4", (v, _) => v + 0.4f, Affine: true),
        new("contrast x0.5", (v, _) => 0.5f * v + 0.25f, Affine: true),
        new("contrast x2", (v, _) => 2f * v - 0.5f, Affine: true),
        new("inverted", (v, _) => 1f - v, Affine: false),   // a negative scale: a norm keeps the sign flip
        new("noise sd 0.3", (v, r) => v + 0.3f * (float)Normal(r), Affine: false),
    ];

    /// <summary>The arms: the vision experiment's, and BatchNorm with AdaBN.</summary>
    public static readonly string[] Arms = [.. Vision.Arms, "BatchNorm + AdaBN"];

    public sealed record Point(string Arm, int Seed, string Change, double TestError);

    public static long TotalSteps(Config c) => (long)Vision.Arms.Length * c.Seeds * c.Steps;

    /// <summary>The test split with <paramref name="change"/> applied to every pixel (noise drawn with a fixed seed).</summary>
    public static FashionMnist.Split Apply(FashionMnist.Split test, Change change)
    {
        var r = new Random(12345);
        var pixels = new float[test.Pixels.Length];
        for (int i = 0; i < pixels.Length; i++) pixels[i] = change.Apply(test.Pixels[i], r);
        return test with { Pixels = pixels, Source = $"{test.Source} ({change.Name})" };
    }

    public static List<Point> Run(Config c, FashionMnist.Split train, FashionMnist.Split test, Action<string>? progress = null, ProgressMeter? meter = null)
    {
        var shifted = Changes.Select(ch => (Change: ch, Split: Apply(test, ch))).ToList();
        var points = new List<Point>();
        foreach (string arm in Vision.Arms)
            for (int seed = 1; seed <= c.Seeds; seed++)
            {
                var rng = new Rng(seed);
                var model = Vision.Model<float>(arm, rng);
                new Trainer<float>(model, Images.Random<float>(train, c.Batch), Vision.Training(c.Training), rng).Run(meter);
                foreach (var (change, split) in shifted)
                    points.Add(new(arm, seed, change.Name, 1 - Evaluation.Run(model, Images.InOrder<float>(split, c.TestImages, 250), 10).Accuracy));
                if (arm == "BatchNorm")
                {
                    var bns = BatchStatistics.NormLayers(model).OfType<BatchNorm<float>>().ToList();
                    var saved = bns.Select(b => (b.RunningMean!.ToArray(), b.RunningVar!.ToArray())).ToList();
                    foreach (var (change, split) in shifted)
                    {
                        BatchStatistics.Recompute(model, Images.InOrder<float>(split, c.TestImages, 250));
                        points.Add(new("BatchNorm + AdaBN", seed, change.Name, 1 - Evaluation.Run(model, Images.InOrder<float>(split, c.TestImages, 250), 10).Accuracy));
                        for (int i = 0; i < bns.Count; i++)   // back to the training statistics for the next change
                        {
                            saved[i].Item1.AsSpan().CopyTo(Span(bns[i].RunningMean!));
                            saved[i].Item2.AsSpan().CopyTo(Span(bns[i].RunningVar!));
                        }
                    }
                }
                progress?.Invoke($"{arm}, seed {seed}");
            }
        return points;
    }

    private static Span<float> Span(System.Numerics.Tensors.Tensor<float> t) =>
        System.Runtime.InteropServices.MemoryMarshal.CreateSpan(ref t.GetPinnableReference(), (int)t.FlattenedLength);

    private static double Normal(Random r) => Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble());

    public static ResultTable Table(IEnumerable<Point> points)
    {
        var t = new ResultTable("arm", "seed", "change", "test_error");
        foreach (var p in points) t.Add(p.Arm, p.Seed, p.Change, p.TestError);
        return t;
    }

    /// <summary>Reads the points back from what <see cref="Table"/> wrote (columns by name; extra columns are ignored).</summary>
    public static List<Point> Parse(string csv) =>
        ResultTable.Parse(csv).Records.Select(r => new Point(r.Text("arm"), r.Integer("seed"), r.Text("change"), r.Number("test_error"))).ToList();

    /// <summary>
    /// Per change and arm: does the arm's error under the change beat the unnormalized network's
    /// (the article's claim, by the verdict rule), and how much the change raised the arm's error.
    /// </summary>
    public static List<(string Change, string Arm, SeedStats Error, double Increase, Comparison VersusNone)> Verdicts(IReadOnlyList<Point> points) =>
        Changes.Skip(1).SelectMany(ch => Arms.Where(a => a != "none" && points.Any(p => p.Arm == a)).Select(arm =>
        {
            double[] E(string a, string change) => points.Where(p => p.Arm == a && p.Change == change).OrderBy(p => p.Seed).Select(p => p.TestError).ToArray();
            var shifted = E(arm, ch.Name);
            double increase = shifted.Average() - E(arm, "none").Average();
            return (ch.Name, arm, SeedStats.Of(shifted), increase,
                Verdict.Lower($"{arm} keeps a lower error than no normalization on {ch.Name} images", shifted, E("none", ch.Name)));
        })).ToList();

    /// <summary>Test error per arm (one line each) across the changes; returns the chart's path without extension.</summary>
    public static string Plot(IReadOnlyList<Point> points, string dir)
    {
        var series = Arms.Where(a => points.Any(p => p.Arm == a)).Select(a => new Plots.Charts.Series(a,
            Enumerable.Range(0, Changes.Length).Select(i => (double)i).ToArray(),
            Changes.Select(ch => points.Where(p => p.Arm == a && p.Change == ch.Name).Average(p => p.TestError)).ToArray(), OpenMarkers: a.Contains("AdaBN")));
        int seeds = points.Select(p => p.Seed).Distinct().Count();
        string path = Path.Combine(dir, "shift");
        Plots.Charts.Lines(path, $"CNN test error on changed test images\n{(seeds == 1 ? "1 seed" : $"mean of {seeds} seeds")}", "change to the test images", "test error", series,
            width: 900, xTicks: Plots.Charts.Ticks.Categories(Changes.Select(ch => ch.Name).ToArray()));
        return path;
    }
}
