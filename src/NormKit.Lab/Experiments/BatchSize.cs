using NormKit.Lab.Data;
using NormKit.Lab.Results;
using NormKit.Lab.Training;
using NormKit.Layers;

namespace NormKit.Lab.Experiments;

/// <summary>
/// Batch size: a ReLU MLP (784-256-256-10) with no normalization, BatchNorm, LayerNorm or
/// GroupNorm (16 groups of features) before each ReLU, and BatchNorm's fixes (Batch
/// Renormalization, ghost batches of <see cref="GhostSize"/>, Filter Response Normalization with
/// its TLU in place of the ReLU), trained with AdamW on the same number of
/// examples at batch sizes 2..128. Reports test error (eval mode) and BatchNorm's train/eval gap:
/// the test error with the batch's own statistics (train mode, test batches of the training batch
/// size) against eval mode (running statistics). Ba et al. and Wu &amp; He report that BatchNorm
/// degrades at small batches while LayerNorm and GroupNorm do not.
/// </summary>
public static class BatchSize
{
    /// <param name="FirstSeed">The first seed; the runs use FirstSeed .. FirstSeed + Seeds - 1 (to add seeds to an earlier run).</param>
    /// <param name="Arms">The arms to train (null: <see cref="Arms"/>, every arm).</param>
    public sealed record Config(int[] BatchSizes, int Examples, int Seeds, int Hidden = 256, double LearningRate = 1e-3, int TestImages = 2000, int FirstSeed = 1,
        string[]? Arms = null)
    {
        /// <summary>The quick tour's: the four arms of the seed article's claim.</summary>
        public static Config Quick => new([2, 8, 32, 128], Examples: 8_000, Seeds: 1, TestImages: 1000, Arms: Classic);
        public static Config Full => new([2, 4, 8, 16, 32, 64, 128], Examples: 24_000, Seeds: 3);

        /// <summary>The arms this run trains.</summary>
        public IReadOnlyList<string> ArmList => Arms ?? BatchSize.Arms;
    }

    /// <summary>The arms of the seed article's claim: no normalization and the three norms it names.</summary>
    public static readonly string[] Classic = ["none", "BatchNorm", "LayerNorm", "GroupNorm"];

    /// <summary>Every arm: <see cref="Classic"/>, then BatchNorm's fixes.</summary>
    public static readonly string[] Arms = [.. Classic, "BatchRenorm", "GhostBatchNorm", "FRN"];

    /// <summary>
    /// The ghost batch of the GhostBatchNorm arm: 8 samples, 1/16 of the largest batch as in Hoffer et
    /// al.'s 128 of 2048. At batches of 8 or fewer it would equal BatchNorm, so it runs only above.
    /// </summary>
    public const int GhostSize = 8;

    /// <summary>Whether <paramref name="arm"/> runs at <paramref name="batch"/> (ghost batches only above <see cref="GhostSize"/>).</summary>
    public static bool Runs(string arm, int batch) => arm != "GhostBatchNorm" || batch > GhostSize;

    /// <param name="TestErrorTrainMode">Test error when normalizing with each test batch's own statistics (BatchNorm only; otherwise NaN).</param>
    public sealed record Point(string Arm, int Batch, int Seed, double FinalTrainLoss, double TestError, double TestErrorTrainMode);

    /// <param name="batch">The training batch, which sets Batch Renormalization's averaging rate (<see cref="RenormSchedule.Momentum"/>).</param>
    public static Sequential<float> Model(string arm, Config c, Rng rng, int batch = 32)
    {
        var layers = new List<ILayer<float>>();
        int inputs = 784;
        for (int l = 0; l < 2; l++)
        {
            layers.Add(new Linear<float>(inputs, c.Hidden, Init.Kaiming, rng));
            ILayer<float>? norm = arm switch
            {
                "none" => null,
                "BatchNorm" => new Norm<float>(new BatchNorm1d<float>(c.Hidden), c.Hidden),
                "LayerNorm" => new Norm<float>(new LayerNorm<float>(c.Hidden), c.Hidden),
                "GroupNorm" => new Norm<float>(new GroupNorm<float>(16, c.Hidden), c.Hidden),
                "BatchRenorm" => new Norm<float>(new BatchRenorm<float>(c.Hidden, momentum: RenormSchedule.Momentum(batch, Training(c, batch).Steps)), c.Hidden),
                "GhostBatchNorm" => new Norm<float>(new GhostBatchNorm<float>(c.Hidden, Math.Min(GhostSize, batch)), c.Hidden),
                // One value per (sample, feature): the learned eps keeps x / sqrt(x^2 + eps) from a sign function.
                "FRN" => new Norm<float>(new FilterResponseNorm<float>(c.Hidden, learnedEps: true), c.Hidden),
                _ => throw new ArgumentException($"arm must be one of {string.Join(", ", Arms)} but was '{arm}'.", nameof(arm)),
            };
            if (norm != null) layers.Add(norm);
            // FRN's thresholded linear unit is its activation.
            if (arm != "FRN") layers.Add(new Activation<float>(Activation<float>.Kind.ReLU));
            inputs = c.Hidden;
        }
        layers.Add(new Linear<float>(inputs, 10, Init.Glorot, rng));
        return new Sequential<float>(layers);
    }

    /// <summary>What one run trains: the settings the trainer takes (the same examples at every batch size).</summary>
    public static TrainSettings Training(Config c, int batch) => new(Math.Max(1, c.Examples / batch), OptimizerSettings.AdamW(c.LearningRate));

    /// <summary>Runs of a whole <see cref="Run"/>, for progress.</summary>
    public static int RunCount(Config c) => c.BatchSizes.Sum(b => c.ArmList.Count(a => Runs(a, b))) * c.Seeds;

    /// <summary>Training steps of a whole <see cref="Run"/>, for progress.</summary>
    public static long TotalSteps(Config c) => c.BatchSizes.Sum(b => c.ArmList.Count(a => Runs(a, b)) * (long)Training(c, b).Steps) * c.Seeds;

    public static List<Point> Run(Config c, FashionMnist.Split train, FashionMnist.Split test, Action<string>? progress = null, ProgressMeter? meter = null)
    {
        var points = new List<Point>();
        foreach (int batch in c.BatchSizes)
            foreach (string arm in c.ArmList.Where(a => Runs(a, batch)))
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
        var model = Model(arm, c, rng, batch);
        var trainer = new Trainer<float>(model, Images.Random<float>(train, batch), Training(c, batch), rng);
        RenormSchedule.Attach(trainer, model);
        double finalLoss = trainer.Run(meter);
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
