using NormKit.Lab.Data;
using NormKit.Lab.Results;
using NormKit.Lab.Training;
using NormKit.Layers;

namespace NormKit.Lab.Experiments;

/// <summary>
/// Batch size: a ReLU MLP (784-256-256-10) with no normalization, BatchNorm, LayerNorm or
/// GroupNorm (16 groups of features) before each ReLU, trained with AdamW on the same number of
/// examples at batch sizes 2..128. Reports test error (eval mode) and BatchNorm's train/eval gap:
/// the test error with the batch's own statistics (train mode, test batches of the training batch
/// size) against eval mode (running statistics). Ba et al. and Wu &amp; He report that BatchNorm
/// degrades at small batches while LayerNorm and GroupNorm do not.
/// </summary>
public static class BatchSize
{
    /// <param name="FirstSeed">The first seed; the runs use FirstSeed .. FirstSeed + Seeds - 1 (to add seeds to an earlier run).</param>
    public sealed record Config(int[] BatchSizes, int Examples, int Seeds, int Hidden = 256, double LearningRate = 1e-3, int TestImages = 2000, int FirstSeed = 1)
    {
        public static Config Quick => new([2, 8, 32, 128], Examples: 8_000, Seeds: 1, TestImages: 1000);
        public static Config Full => new([2, 4, 8, 16, 32, 64, 128], Examples: 24_000, Seeds: 3);
    }

    public static readonly string[] Arms = ["none", "BatchNorm", "LayerNorm", "GroupNorm"];

    /// <param name="TestErrorTrainMode">Test error when normalizing with each test batch's own statistics (BatchNorm only; otherwise NaN).</param>
    public sealed record Point(string Arm, int Batch, int Seed, double FinalTrainLoss, double TestError, double TestErrorTrainMode);

    public static Sequential<float> Model(string arm, Config c, Rng rng)
    {
        var layers = new List<ILayer<float>>();
        int inputs = 784;
        for (int l = 0; l < 2; l++)
        {
            layers.Add(new Linear<float>(inputs, c.Hidden, Init.Kaiming, rng));
            ILayer<float>? norm = arm switch
            {
                "BatchNorm" => new Norm<float>(new BatchNorm1d<float>(c.Hidden), c.Hidden),
                "LayerNorm" => new Norm<float>(new LayerNorm<float>(c.Hidden), c.Hidden),
                "GroupNorm" => new Norm<float>(new GroupNorm<float>(16, c.Hidden), c.Hidden),
                _ => null,
            };
            if (norm != null) layers.Add(norm);
            layers.Add(new Activation<float>(Activation<float>.Kind.ReLU));
            inputs = c.Hidden;
        }
        layers.Add(new Linear<float>(inputs, 10, Init.Glorot, rng));
        return new Sequential<float>(layers);
    }

    /// <summary>What one run trains: the settings the trainer takes (the same examples at every batch size).</summary>
    public static TrainSettings Training(Config c, int batch) => new(Math.Max(1, c.Examples / batch), OptimizerSettings.AdamW(c.LearningRate));

    /// <summary>Training steps of a whole <see cref="Run"/>, for progress.</summary>
    public static long TotalSteps(Config c) => c.BatchSizes.Sum(b => (long)Training(c, b).Steps) * Arms.Length * c.Seeds;

    public static List<Point> Run(Config c, FashionMnist.Split train, FashionMnist.Split test, Action<string>? progress = null, ProgressMeter? meter = null)
    {
        var points = new List<Point>();
        foreach (int batch in c.BatchSizes)
            foreach (string arm in Arms)
                for (int seed = c.FirstSeed; seed < c.FirstSeed + c.Seeds; seed++)
                {
                    points.Add(RunOne(arm, batch, seed, c, train, test, meter));
                    progress?.Invoke($"{arm}, batch {batch}, seed {seed}");
                }
        return points;
    }

    public static Point RunOne(string arm, int batch, int seed, Config c, FashionMnist.Split train, FashionMnist.Split test, ProgressMeter? meter = null)
    {
        var rng = new Rng(seed);
        var model = Model(arm, c, rng);
        double finalLoss = new Trainer<float>(model, Images.Random<float>(train, batch), Training(c, batch), rng).Run(meter);
        double evalError = 1 - Evaluation.Run(model, Images.InOrder<float>(test, c.TestImages, 500), 10).Accuracy;
        // Each test batch of the training batch size normalized with its own statistics.
        double trainModeError = arm == "BatchNorm" && batch > 1 ? 1 - Evaluation.Run(model, Images.InOrder<float>(test, c.TestImages, batch), 10, training: true).Accuracy : double.NaN;
        return new Point(arm, batch, seed, finalLoss, evalError, trainModeError);
    }

    public static ResultTable Table(IEnumerable<Point> points)
    {
        var t = new ResultTable("arm", "batch", "seed", "final_train_loss", "test_error", "test_error_train_mode");
        foreach (var p in points) t.Add(p.Arm, p.Batch, p.Seed, p.FinalTrainLoss, p.TestError, p.TestErrorTrainMode);
        return t;
    }

    public static string Csv(IEnumerable<Point> points) => Table(points).ToCsv();

    /// <summary>Reads the points back from what <see cref="Csv"/> wrote (columns by name; extra columns are ignored).</summary>
    public static List<Point> Parse(string csv) => ResultTable.Parse(csv).Records.Select(r => new Point(r.Text("arm"), r.Integer("batch"), r.Integer("seed"),
        r.Number("final_train_loss"), r.Number("test_error"), r.Number("test_error_train_mode"))).ToList();

    /// <summary>Test error against batch size (a log axis ticked at the batch sizes), one line per arm, plus BatchNorm in train mode.</summary>
    /// <param name="network">What was trained, for the title (default: this experiment's MLP).</param>
    public static string Plot(IReadOnlyList<Point> points, string dir, string name, string network = "MLP")
    {
        var series = points.GroupBy(p => p.Arm).Select(a =>
        {
            var byBatch = a.GroupBy(p => p.Batch).OrderBy(g => g.Key).ToList();
            return new Plots.Charts.Series(a.Key, byBatch.Select(g => Math.Log2(g.Key)).ToArray(), byBatch.Select(g => g.Average(p => p.TestError)).ToArray());
        }).ToList();
        var bn = points.Where(p => p.Arm == "BatchNorm" && !double.IsNaN(p.TestErrorTrainMode)).GroupBy(p => p.Batch).OrderBy(g => g.Key).ToList();
        if (bn.Count > 0)
            series.Add(new Plots.Charts.Series("BatchNorm, batch statistics at test", bn.Select(g => Math.Log2(g.Key)).ToArray(),
                bn.Select(g => g.Average(p => p.TestErrorTrainMode)).ToArray(), OpenMarkers: true, Arm: "BatchNorm", Line: Plots.Charts.Pattern.Dashed));
        var batches = points.Select(p => p.Batch).Distinct().Order().ToArray();
        int seeds = points.Select(p => p.Seed).Distinct().Count();
        string path = Path.Combine(dir, name);
        Plots.Charts.Lines(path, $"{network} test error (eval mode) against batch size\nthe same examples at every size, {(seeds == 1 ? "1 seed" : $"mean of {seeds} seeds")}",
            "batch size (log scale)", "test error", series,
            xTicks: new Plots.Charts.Ticks(batches.Select(b => Math.Log2(b)).ToArray(), batches.Select(b => b.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray()));
        return path;
    }
}
