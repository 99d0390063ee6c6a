using System.Globalization;
using System.Numerics;
using NormKit.Distributed;
using System.Text;
using NormKit.Lab.Data;
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
    public sealed record Result(string Arm, int Seed, double FinalTrainLoss, double TestAccuracy, double BatchMeanFluctuation);

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

    public static List<Result> Run(Config c, FashionMnist.Split train, FashionMnist.Split test, Action<string>? progress = null)
    {
        var results = new List<Result>();
        foreach (string arm in Arms)
            for (int seed = 1; seed <= c.Seeds; seed++)
            {
                results.Add(RunOne(arm, seed, c, train, test));
                progress?.Invoke($"{arm}, seed {seed}");
            }
        return results;
    }

    public static Result RunOne(string arm, int seed, Config c, FashionMnist.Split train, FashionMnist.Split test)
    {
        var rng = new Rng(seed);
        var model = Model<float>(arm, rng);
        var opt = new AdamW<float>(c.LearningRate, weightDecay: 0);
        int d = train.Features;
        var x = new float[c.Batch * d];
        var y = new byte[c.Batch];
        var firstNorm = model.Layers.OfType<Norm<float>>().FirstOrDefault();
        double recent = 0, fluctuation = 0; int recentCount = 0, fluctuationCount = 0;
        for (int step = 1; step <= c.Steps; step++)
        {
            MiniBatch.Sample(train, rng, x, y);
            double loss = MiniBatch.ForwardBackward(model, x, y);
            if (step > c.Steps * 9 / 10) { recent += loss; recentCount++; }
            if (arm == "BatchNorm" && step > c.Steps / 10) { fluctuation += BatchStatistics.MeanFluctuation(firstNorm!); fluctuationCount++; }
            opt.Step(model.Parameters);
        }
        int n = Math.Min(c.TestImages, test.Count), chunk = Math.Min(250, n);
        double right = 0;
        for (int start = 0; start + chunk <= n; start += chunk)
        {
            var logits = model.Forward(test.Pixels.AsSpan(start * d, chunk * d).ToArray(), chunk, training: false);
            right += CrossEntropy.Accuracy<float>(logits, test.Labels.AsSpan(start, chunk), chunk, 10) * chunk;
        }
        return new Result(arm, seed, recent / Math.Max(1, recentCount), right / (n / chunk * chunk),
            fluctuationCount > 0 ? fluctuation / fluctuationCount : double.NaN);
    }

    public static string Csv(IEnumerable<Result> results)
    {
        static string F(double v) => double.IsNaN(v) ? "" : v.ToString("G6", CultureInfo.InvariantCulture);
        var sb = new StringBuilder("arm,seed,final_train_loss,test_accuracy,batch_mean_fluctuation\n");
        foreach (var r in results)
            sb.AppendLine(string.Join(",", r.Arm, r.Seed, F(r.FinalTrainLoss), F(r.TestAccuracy), F(r.BatchMeanFluctuation)));
        return sb.ToString();
    }

    /// <summary>Test accuracy per arm (mean +- sd over seeds) as a bar chart.</summary>
    public static string Plot(IReadOnlyList<Result> results, string dir)
    {
        var arms = results.GroupBy(r => r.Arm).ToList();
        double Sd(IGrouping<string, Result> g) { double m = g.Average(r => r.TestAccuracy); return g.Count() > 1 ? Math.Sqrt(g.Sum(r => (r.TestAccuracy - m) * (r.TestAccuracy - m)) / (g.Count() - 1)) : 0; }
        string path = Path.Combine(dir, "vision");
        Plots.Charts.Bars(path, "Small CNN on Fashion-MNIST: test accuracy (mean +- sd over seeds)", "test accuracy",
            arms.Select(g => g.Key).ToArray(), arms.Select(g => g.Average(r => r.TestAccuracy)).ToArray(), arms.Select(Sd).ToArray());
        return path;
    }
}
