using System.Numerics;
using NormKit.Distributed;
using NormKit.Lab.Data;
using NormKit.Lab.Results;
using NormKit.Lab.Training;
using NormKit.Layers;

namespace NormKit.Lab.Experiments;

/// <summary>
/// Vision: a small CNN on Fashion-MNIST (conv 3x3 1->8, norm, ReLU, max-pool, conv 3x3 8->16,
/// norm, ReLU, max-pool, linear 784->10) with no normalization, BatchNorm2d, LayerNorm over
/// (C, H, W), GroupNorm (4 groups) or InstanceNorm2d (affine), trained with AdamW at batch 32.
/// Final test accuracy, mean and standard deviation over seeds: the seed article's claim (c)
/// ("BatchNorm suits vision") set beside Wu &amp; He's Table 1.
/// </summary>
public static class Vision
{
    public sealed record Config(int Steps, int Seeds, int Batch = 32, double LearningRate = 2e-3, int TestImages = 2000)
    {
        public static Config Quick => new(Steps: 250, Seeds: 1, TestImages: 1000);
        public static Config Full => new(Steps: 2000, Seeds: 3);
    }

    public static readonly string[] Arms = ["none", "BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm"];

    /// <param name="BatchMeanFluctuation">Mean over training of (1/C) ||mu_B - mu|| at the first BatchNorm (NaN for other arms).</param>
    /// <param name="BatchFluctuationScaleFree">The same batch mean's deviation in units of the running standard deviation (<see cref="Fluctuation.MeanScaleFree"/>).</param>
    /// <param name="BatchVarianceFluctuationScaleFree">The batch variance's relative deviation from the running one (<see cref="Fluctuation.VarianceScaleFree"/>).</param>
    public sealed record Result(string Arm, int Seed, double FinalTrainLoss, double TestAccuracy, double BatchMeanFluctuation,
        double BatchFluctuationScaleFree = double.NaN, double BatchVarianceFluctuationScaleFree = double.NaN);

    /// <summary>
    /// The CNN with the given arm's normalization. With a <paramref name="group"/>, the BatchNorm arm
    /// uses SyncBatchNorm over it (data-parallel training; see <see cref="DataParallelVision"/>).
    /// </summary>
    public static Sequential<T> Model<T>(string arm, Rng rng, IAllGather? group = null) where T : unmanaged, IFloatingPointIeee754<T>
    {
        ILayer<T>? Norm(int c, int h) => arm switch
        {
            "BatchNorm" when group != null => new Norm<T>(new SyncBatchNorm<T>(c, group), c, h, h),
            "BatchNorm" => new Norm<T>(new BatchNorm2d<T>(c), c, h, h),
            "LayerNorm" => new Norm<T>(new LayerNorm<T>([c, h, h]), c, h, h),
            "GroupNorm" => new Norm<T>(new GroupNorm<T>(4, c), c, h, h),
            "InstanceNorm" => new Norm<T>(new InstanceNorm2d<T>(c, affine: true), c, h, h),
            _ => null,
        };
        var layers = new List<ILayer<T>> { new Conv2d<T>(1, 8, 3, 1, 28, 28, rng) };
        if (Norm(8, 28) is { } n1) layers.Add(n1);
        layers.AddRange([new Activation<T>(Activation<T>.Kind.ReLU), new MaxPool2<T>(8, 28, 28), new Conv2d<T>(8, 16, 3, 1, 14, 14, rng)]);
        if (Norm(16, 14) is { } n2) layers.Add(n2);
        layers.AddRange([new Activation<T>(Activation<T>.Kind.ReLU), new MaxPool2<T>(16, 14, 14), new Linear<T>(16 * 7 * 7, 10, Init.Glorot, rng)]);
        return new Sequential<T>(layers);
    }

    /// <summary>What one run trains: the settings the trainer takes.</summary>
    public static TrainSettings Training(Config c) => new(c.Steps, OptimizerSettings.AdamW(c.LearningRate));

    /// <summary>Training steps of a whole <see cref="Run"/>, for progress.</summary>
    public static long TotalSteps(Config c) => (long)Arms.Length * c.Seeds * c.Steps;

    public static List<Result> Run(Config c, FashionMnist.Split train, FashionMnist.Split test, Action<string>? progress = null, ProgressMeter? meter = null)
    {
        var results = new List<Result>();
        foreach (string arm in Arms)
            for (int seed = 1; seed <= c.Seeds; seed++)
            {
                results.Add(RunOne(arm, seed, c, train, test, meter));
                progress?.Invoke($"{arm}, seed {seed}");
            }
        return results;
    }

    public static Result RunOne(string arm, int seed, Config c, FashionMnist.Split train, FashionMnist.Split test, ProgressMeter? meter = null)
    {
        var rng = new Rng(seed);
        var model = Model<float>(arm, rng);
        var trainer = new Trainer<float>(model, Images.Random<float>(train, c.Batch), Training(c), rng);
        var fluctuation = arm == "BatchNorm" ? BatchStatistics.FluctuationAfter(trainer, model.Layers.OfType<Norm<float>>().First(), c.Steps / 10) : null;
        double finalLoss = trainer.Run(meter);
        var accuracy = Evaluation.Run(model, Images.InOrder<float>(test, c.TestImages, 250), 10).Accuracy;
        return new Result(arm, seed, finalLoss, accuracy, fluctuation?.Mean.Mean ?? double.NaN,
            fluctuation?.Mean.MeanScaleFree ?? double.NaN, fluctuation?.Mean.VarianceScaleFree ?? double.NaN);
    }

    public static ResultTable Table(IEnumerable<Result> results)
    {
        var t = new ResultTable("arm", "seed", "final_train_loss", "test_accuracy", "batch_mean_fluctuation", "batch_fluctuation_scale_free", "batch_variance_fluctuation_scale_free");
        foreach (var r in results) t.Add(r.Arm, r.Seed, r.FinalTrainLoss, r.TestAccuracy, r.BatchMeanFluctuation, r.BatchFluctuationScaleFree, r.BatchVarianceFluctuationScaleFree);
        return t;
    }

    public static string Csv(IEnumerable<Result> results) => Table(results).ToCsv();

    /// <summary>Reads the results back from what <see cref="Csv"/> wrote (columns by name; extra columns are ignored).</summary>
    public static List<Result> Parse(string csv) => ResultTable.Parse(csv).Records.Select(r => new Result(r.Text("arm"), r.Integer("seed"),
        r.Number("final_train_loss"), r.Number("test_accuracy"), r.Number("batch_mean_fluctuation"),
        // Files written before the scale-free measures existed lack their columns.
        r.Has("batch_fluctuation_scale_free") ? r.Number("batch_fluctuation_scale_free") : double.NaN,
        r.Has("batch_variance_fluctuation_scale_free") ? r.Number("batch_variance_fluctuation_scale_free") : double.NaN)).ToList();

    /// <summary>Test accuracy per arm (mean +- sd over seeds) as a bar chart.</summary>
    public static string Plot(IReadOnlyList<Result> results, string dir)
    {
        var arms = results.GroupBy(r => r.Arm).ToList();
        double Sd(IGrouping<string, Result> g) { double m = g.Average(r => r.TestAccuracy); return g.Count() > 1 ? Math.Sqrt(g.Sum(r => (r.TestAccuracy - m) * (r.TestAccuracy - m)) / (g.Count() - 1)) : 0; }
        string path = Path.Combine(dir, "vision");
        int seeds = results.Select(r => r.Seed).Distinct().Count();
        Plots.Charts.Bars(path, $"Small CNN on Fashion-MNIST: test accuracy\n{(seeds == 1 ? "1 seed" : $"mean ± sd over {seeds} seeds")}", "test accuracy",
            arms.Select(g => g.Key).ToArray(), arms.Select(g => g.Average(r => r.TestAccuracy)).ToArray(), arms.Select(Sd).ToArray());
        return path;
    }
}
