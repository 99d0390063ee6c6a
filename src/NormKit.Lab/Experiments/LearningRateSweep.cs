using System.Globalization;
using NormKit.Lab.Data;
using NormKit.Lab.Results;
using NormKit.Lab.Training;

namespace NormKit.Lab.Experiments;

/// <summary>
/// Claim (a), the speed part, by its mechanism: Bjorck et al. (2018) and Santurkar et al. (2018)
/// attribute much of BatchNorm's speed-up to the larger learning rates it tolerates. The residual
/// CNN and the same network without shortcuts (<see cref="ResidualCnn.Config.Shortcuts"/>), each
/// with no normalization, BatchNorm, LayerNorm and GroupNorm, trained with SGD and momentum for a
/// fixed number of steps at each learning rate of the sweep (cosine schedule to 0, no warm-up);
/// records the test accuracy and whether the run diverged (a NaN or infinite loss).
/// </summary>
public static class LearningRateSweep
{
    public static readonly string[] Arms = ["none", "BatchNorm", "LayerNorm", "GroupNorm"];

    /// <summary>A run counts as trained when its test accuracy reaches this (chance is 0.1).</summary>
    public const double TrainedAccuracy = 0.5;

    /// <param name="Networks">true: with shortcuts (residual), false: plain.</param>
    public sealed record Config(int Steps, int Seeds, double[] Rates, bool[] Networks, string[] Arms, int Width = 8, int Blocks = 2, int Batch = 32,
        double Momentum = 0.9, double WeightDecay = 1e-4, int TestImages = 2000)
    {
        public static Config Quick => new(Steps: 40, Seeds: 1, Rates: [0.01, 0.1, 1], Networks: [true, false], Arms: LearningRateSweep.Arms, Width: 4, TestImages: 500);
        public static Config Full => new(Steps: 100, Seeds: 3, Rates: [0.003, 0.01, 0.03, 0.1, 0.3, 1], Networks: [true, false], Arms: LearningRateSweep.Arms);

        public ResidualCnn.Config Network(bool shortcuts) => new(Width, Blocks, Shortcuts: shortcuts);

        public override string ToString() =>
            $"{string.Join(" and ", Networks.Select(n => Network(n).Name))} (width {Width}), batch {Batch}, SGD momentum {Momentum} weight decay {WeightDecay}, " +
            $"cosine schedule, {Steps} steps per run, learning rates {string.Join(", ", Rates.Select(r => r.ToString(CultureInfo.InvariantCulture)))}, {Seeds} seed(s), test on {TestImages} images";
    }

    public sealed record Result(string Network, string Arm, double LearningRate, int Seed, bool Diverged, double FinalTrainLoss, double TestAccuracy, double Seconds);

    public static long TotalSteps(Config c) => (long)c.Networks.Length * c.Arms.Length * c.Rates.Length * c.Seeds * c.Steps;

    public static List<Result> Run(Config c, FashionMnist.Split train, FashionMnist.Split test, Action<string>? progress = null, ProgressMeter? meter = null)
    {
        var results = new List<Result>();
        foreach (bool network in c.Networks)
            foreach (string arm in c.Arms)
                foreach (double rate in c.Rates)
                    for (int seed = 1; seed <= c.Seeds; seed++)
                    {
                        var r = RunOne(network, arm, rate, seed, c, train, test, meter);
                        results.Add(r);
                        progress?.Invoke(FormattableString.Invariant(
                            $"{r.Network}, {arm}, lr {rate}, seed {seed}: {(r.Diverged ? "diverged" : $"test accuracy {r.TestAccuracy:F3}")}, {r.Seconds:F0} s"));
                    }
        return results;
    }

    public static Result RunOne(bool shortcuts, string arm, double rate, int seed, Config c, FashionMnist.Split train, FashionMnist.Split test, ProgressMeter? meter = null)
    {
        if (!(rate > 0)) throw new ArgumentOutOfRangeException(nameof(rate), rate, $"rate must be > 0 but was {rate}.");
        var rng = new Rng(seed);
        var network = c.Network(shortcuts);
        var model = ResidualCnn.Build<float>(network, arm, rng);
        var settings = new TrainSettings(c.Steps, OptimizerSettings.Sgd(rate, c.Momentum, c.WeightDecay), Schedule.Cosine());
        var trainer = new Trainer<float>(model, Images.Shuffled<float>(train, c.Batch), settings, rng);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        double finalLoss = trainer.Run(meter);
        double seconds = clock.Elapsed.TotalSeconds;
        double accuracy = trainer.Diverged ? double.NaN : Evaluation.Run(model, Images.InOrder<float>(test, c.TestImages, 100), 10).Accuracy;
        return new Result(network.Name, arm, rate, seed, trainer.Diverged, finalLoss, accuracy, seconds);
    }

    public static ResultTable Table(IEnumerable<Result> results)
    {
        var t = new ResultTable("network", "arm", "learning_rate", "seed", "diverged", "final_train_loss", "test_accuracy", "train_seconds");
        foreach (var r in results) t.Add(r.Network, r.Arm, r.LearningRate, r.Seed, r.Diverged ? 1 : 0, r.FinalTrainLoss, r.TestAccuracy, r.Seconds);
        return t;
    }

    /// <summary>Reads the results back from what <see cref="Table"/> wrote (columns by name; extra columns are ignored).</summary>
    public static List<Result> Parse(string csv) => ResultTable.Parse(csv).Records.Select(r => new Result(r.Text("network"), r.Text("arm"),
        r.Number("learning_rate"), r.Integer("seed"), r.Integer("diverged") != 0, r.Number("final_train_loss"), r.Number("test_accuracy"), r.Number("train_seconds"))).ToList();

    /// <summary>
    /// A diverged run's accuracy for the summaries: chance (0.1), what its NaN outputs are worth.
    /// The CSV keeps NaN and the diverged flag.
    /// </summary>
    public static double ScoredAccuracy(Result r) => r.Diverged ? 0.1 : r.TestAccuracy;

    /// <summary>One (network, arm) of the sweep, summarized.</summary>
    /// <param name="LargestTrainedRate">The largest rate at which every seed reached <see cref="TrainedAccuracy"/> (NaN: none did).</param>
    /// <param name="BestRate">The rate with the highest mean accuracy.</param>
    /// <param name="Best">The per-seed accuracies at <paramref name="BestRate"/>.</param>
    public sealed record ArmSummary(string Network, string Arm, double LargestTrainedRate, double BestRate, double[] Best, int DivergedRuns, int Runs);

    public static List<ArmSummary> Summaries(IEnumerable<Result> results) =>
        results.GroupBy(r => (r.Network, r.Arm)).Select(g =>
        {
            var byRate = g.GroupBy(r => r.LearningRate).OrderBy(x => x.Key).ToList();
            var trained = byRate.Where(x => x.All(r => !r.Diverged && r.TestAccuracy >= TrainedAccuracy)).Select(x => x.Key).ToList();
            var best = byRate.MaxBy(x => x.Average(ScoredAccuracy))!;
            return new ArmSummary(g.Key.Network, g.Key.Arm, trained.Count > 0 ? trained.Max() : double.NaN, best.Key,
                best.Select(ScoredAccuracy).ToArray(), g.Count(r => r.Diverged), g.Count());
        }).ToList();

    /// <summary>Test accuracy against the learning rate, one chart per network, a line per arm (mean over seeds, diverged runs at 0.1); returns the charts' paths without extension.</summary>
    public static List<string> Plot(IReadOnlyList<Result> results, string dir)
    {
        var paths = new List<string>();
        foreach (var network in results.GroupBy(r => r.Network))
        {
            var rates = network.Select(r => r.LearningRate).Distinct().OrderBy(r => r).ToArray();
            var ticks = rates.Select(r => r.ToString(CultureInfo.InvariantCulture)).ToArray();
            var series = network.GroupBy(r => r.Arm).Select(arm => new Plots.Charts.Series(arm.Key,
                Enumerable.Range(0, rates.Length).Select(i => (double)i).ToArray(),
                rates.Select(rate => arm.Where(r => r.LearningRate == rate).Select(ScoredAccuracy).DefaultIfEmpty(double.NaN).Average()).ToArray()));
            string file = "lr-sweep-" + (network.Key.StartsWith("plain") ? "plain" : "residual");
            string path = Path.Combine(dir, file);
            Plots.Charts.Lines(path, $"{network.Key} on Fashion-MNIST: test accuracy after a fixed step budget\nmean over seeds; a diverged run counts as 0.1",
                "SGD learning rate (cosine schedule to 0)", "test accuracy", series, xTicks: Plots.Charts.Ticks.Categories(ticks));
            paths.Add(path);
        }
        return paths;
    }
}
