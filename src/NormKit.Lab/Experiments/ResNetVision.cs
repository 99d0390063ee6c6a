using NormKit.Lab.Data;
using NormKit.Lab.Results;
using NormKit.Lab.Training;

namespace NormKit.Lab.Experiments;

/// <summary>
/// Vision at depth: the residual CNN (<see cref="ResidualCnn"/>, 14 weight layers by default) on
/// Fashion-MNIST with each norm arm, SGD with momentum at batch 32, one schedule for all arms
/// (cosine from the base rate to 0), whole epochs of shuffled training images, test error in eval
/// mode over the whole test set. Records the training loss of every step (the curves), the
/// training time and the throughput.
/// </summary>
public static class ResNetVision
{
    /// <param name="Epochs">Passes over the training images (each a new shuffle).</param>
    /// <param name="TrainImages">Use only the first this many training images (null: all), for quick runs.</param>
    public sealed record Config(double Epochs, int Seeds, string[] Arms, int Batch = 32, double LearningRate = 0.05, double Momentum = 0.9,
        double WeightDecay = 1e-4, int Width = 16, int Blocks = 2, int? TrainImages = null, int TestImages = 10_000)
    {
        public static Config Quick => new(Epochs: 1, Seeds: 1, Arms: NormArms.Compared, TrainImages: 4000, TestImages: 2000);
        public static Config Full => new(Epochs: 1, Seeds: 3, Arms: NormArms.Compared);

        public ResidualCnn.Config Network => new(Width, Blocks);

        public int StepsFor(int trainImages) => Math.Max(1, (int)Math.Round(Epochs * Math.Min(trainImages, TrainImages ?? int.MaxValue) / Batch));

        public TrainSettings Training(int trainImages) =>
            new(StepsFor(trainImages), OptimizerSettings.Sgd(LearningRate, Momentum, WeightDecay), Schedule.Cosine());

        public override string ToString() =>
            $"{Network.Name} (width {Width}, {Blocks} blocks per stage), batch {Batch}, SGD lr {LearningRate} momentum {Momentum} weight decay {WeightDecay}, cosine schedule, {Epochs} epoch(s), {Seeds} seed(s)";
    }

    /// <param name="Seconds">Wall time of the training (evaluation excluded).</param>
    public sealed record Result(string Arm, int Seed, int Steps, double FinalTrainLoss, double TestError, double Seconds, double ImagesPerSecond, double[] Losses);

    public static long TotalSteps(Config c, int trainImages) => (long)c.Arms.Length * c.Seeds * c.StepsFor(trainImages);

    public static List<Result> Run(Config c, FashionMnist.Split train, FashionMnist.Split test, Action<string>? progress = null, ProgressMeter? meter = null)
    {
        var results = new List<Result>();
        foreach (string arm in c.Arms)
            for (int seed = 1; seed <= c.Seeds; seed++)
            {
                var r = RunOne(arm, seed, c, train, test, meter);
                results.Add(r);
                progress?.Invoke($"{arm}, seed {seed}: test error {r.TestError:F4}, {r.Seconds:F0} s");
            }
        return results;
    }

    public static Result RunOne(string arm, int seed, Config c, FashionMnist.Split train, FashionMnist.Split test, ProgressMeter? meter = null)
    {
        var rng = new Rng(seed);
        var images = c.TrainImages is int n && n < train.Count ? Images.First(train, n) : train;
        var network = c.Network with { RenormMomentum = RenormSchedule.Momentum(c.Batch, c.StepsFor(images.Count)) };
        var model = ResidualCnn.Build<float>(network, arm, rng);
        var trainer = new Trainer<float>(model, Images.Shuffled<float>(images, c.Batch), c.Training(images.Count), rng);
        RenormSchedule.Attach(trainer, model);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        double finalLoss = trainer.Run(meter);
        double seconds = clock.Elapsed.TotalSeconds;
        // Test batches of 100: each conv keeps an im2col buffer of its batch (about 0.3 GB in all at 100).
        double error = 1 - Evaluation.Run(model, Images.InOrder<float>(test, c.TestImages, 100), 10).Accuracy;
        int steps = trainer.Losses.Length;
        return new Result(arm, seed, steps, finalLoss, error, seconds, steps * (double)c.Batch / seconds, trainer.Losses);
    }

    public static ResultTable Table(IEnumerable<Result> results)
    {
        var t = new ResultTable("arm", "seed", "steps", "final_train_loss", "test_error", "train_seconds", "images_per_second");
        foreach (var r in results) t.Add(r.Arm, r.Seed, r.Steps, r.FinalTrainLoss, r.TestError, r.Seconds, r.ImagesPerSecond);
        return t;
    }

    /// <summary>
    /// Reads the results back from what <see cref="Table"/> wrote (columns by name; extra columns are
    /// ignored). The file has no per-step losses, so <see cref="Result.Losses"/> is empty: the curves
    /// are in their own file (<see cref="ParseCurves"/>).
    /// </summary>
    public static List<Result> Parse(string csv) => ResultTable.Parse(csv).Records.Select(r => new Result(r.Text("arm"), r.Integer("seed"),
        r.Integer("steps"), r.Number("final_train_loss"), r.Number("test_error"), r.Number("train_seconds"), r.Number("images_per_second"), [])).ToList();

    /// <summary>One point of a loss curve: the mean training loss of the steps up to <paramref name="Step"/> since the previous point.</summary>
    public sealed record CurvePoint(string Arm, int Seed, int Step, double TrainLoss);

    /// <summary>The training loss against steps, each point the mean of <paramref name="every"/> steps.</summary>
    public static List<CurvePoint> CurvePoints(IEnumerable<Result> results, int every = 50)
    {
        if (every < 1) throw new ArgumentOutOfRangeException(nameof(every), every, $"every must be >= 1 but was {every}.");
        var points = new List<CurvePoint>();
        foreach (var r in results)
            for (int s = 0; s + every <= r.Losses.Length; s += every)
                points.Add(new(r.Arm, r.Seed, s + every, r.Losses.AsSpan(s, every).ToArray().Average()));
        return points;
    }

    /// <summary>The loss curves as a table (resnet-curves.csv).</summary>
    public static ResultTable Curves(IEnumerable<Result> results, int every = 50)
    {
        var t = new ResultTable("arm", "seed", "step", "train_loss");
        foreach (var p in CurvePoints(results, every)) t.Add(p.Arm, p.Seed, p.Step, p.TrainLoss);
        return t;
    }

    /// <summary>Reads the curve points back from what <see cref="Curves"/> wrote.</summary>
    public static List<CurvePoint> ParseCurves(string csv) => ResultTable.Parse(csv).Records.Select(r => new CurvePoint(r.Text("arm"), r.Integer("seed"),
        r.Integer("step"), r.Number("train_loss"))).ToList();

    /// <summary>Training loss against steps per arm (mean over seeds, smoothed over 50 steps); returns the chart's path without extension.</summary>
    public static string PlotCurves(IReadOnlyList<Result> results, string dir, int every = 50) => PlotCurves(CurvePoints(results, every), dir);

    /// <summary>Training loss against steps per arm, the mean over seeds at the steps every seed reached; returns the chart's path without extension.</summary>
    public static string PlotCurves(IReadOnlyList<CurvePoint> points, string dir)
    {
        var series = points.GroupBy(p => p.Arm).Select(g =>
        {
            int seeds = g.Select(p => p.Seed).Distinct().Count();
            var steps = g.GroupBy(p => p.Step).Where(s => s.Count() == seeds).OrderBy(s => s.Key).ToList();
            return new Plots.Charts.Series(g.Key, steps.Select(s => (double)s.Key).ToArray(), steps.Select(s => s.Average(p => p.TrainLoss)).ToArray());
        });
        int every = points.Select(p => p.Step).Distinct().Order().FirstOrDefault();
        int seedCount = points.Select(p => (p.Arm, p.Seed)).Distinct().GroupBy(p => p.Arm).Select(g => g.Count()).DefaultIfEmpty(0).Max();
        string path = Path.Combine(dir, "resnet-curves");
        Plots.Charts.Lines(path, $"ResNet on Fashion-MNIST: training loss\neach point the mean of {every} steps, {(seedCount == 1 ? "1 seed" : $"mean of up to {seedCount} seeds")}",
            "training step", "training loss", series);
        return path;
    }

    /// <summary>Test error per arm (mean +- sd over seeds) as a bar chart; returns the chart's path without extension.</summary>
    public static string Plot(IReadOnlyList<Result> results, string dir)
    {
        var arms = results.GroupBy(r => r.Arm).Select(g => (g.Key, Error: SeedStats.Of(g.Select(r => r.TestError)))).ToList();
        int seeds = arms.Select(a => a.Error.Count).DefaultIfEmpty(0).Max();
        string path = Path.Combine(dir, "resnet");
        Plots.Charts.Bars(path, $"ResNet on Fashion-MNIST: test error (lower is better)\n{(seeds == 1 ? "1 seed" : $"mean ± sd over up to {seeds} seeds")}", "test error",
            arms.Select(a => a.Key).ToArray(), arms.Select(a => a.Error.Mean).ToArray(), arms.Select(a => a.Error.Sd).ToArray());
        return path;
    }
}
