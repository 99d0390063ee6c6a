using NormKit.Lab.Data;
using NormKit.Lab.Experiments;

namespace NormKit.Lab.Tests;

public class LearningRateSweepTests
{
    private static LearningRateSweep.Result R(string arm, double rate, int seed, double accuracy, bool diverged = false) =>
        new("ResNet-14", arm, rate, seed, diverged, diverged ? double.NaN : 0.5, diverged ? double.NaN : accuracy, 1);

    [Fact]
    public void Summaries_find_the_largest_rate_every_seed_trains_at_and_the_best_rate()
    {
        var results = new List<LearningRateSweep.Result>();
        foreach (int seed in new[] { 1, 2, 3 })
        {
            results.Add(R("none", 0.01, seed, 0.70 + 0.01 * seed));
            results.Add(R("none", 0.1, seed, seed == 2 ? 0.3 : 0.75));               // one seed below 0.5: 0.1 does not count as trained
            results.Add(R("none", 1, seed, 0, diverged: true));
            results.Add(R("BatchNorm", 0.01, seed, 0.60));
            results.Add(R("BatchNorm", 0.1, seed, 0.80 + 0.01 * seed));
            results.Add(R("BatchNorm", 1, seed, 0.78));
        }
        var summaries = LearningRateSweep.Summaries(results);
        var none = summaries.Single(s => s.Arm == "none");
        var bn = summaries.Single(s => s.Arm == "BatchNorm");
        Assert.Equal(0.01, none.LargestTrainedRate);
        Assert.Equal(1, bn.LargestTrainedRate);
        Assert.Equal(0.01, none.BestRate);                                            // 0.72 beats 0.60 (0.1) and 0.1 (diverged, scored at chance)
        Assert.Equal([0.71, 0.72, 0.73], none.Best, (a, b) => Math.Abs(a - b) < 1e-12);
        Assert.Equal(3, none.DivergedRuns);
        Assert.Equal(0.1, bn.BestRate);

        var finding = Claims.LearningRate(results).Single();
        Assert.Equal("ResNet-14: BatchNorm vs none", finding.Case);
        Assert.Equal(Outcome.Holds, finding.Comparison.Outcome);                         // 0.82 +- 0.01 vs 0.72 +- 0.01
        Assert.Equal(0.82, finding.First.Mean, 12);
        Assert.Contains("every seed reached 0.5: 1 vs 0.01", finding.Note);
    }

    [Fact]
    public void A_quick_sweep_trains_both_networks_and_writes_every_run()
    {
        var (train, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var config = new LearningRateSweep.Config(Steps: 3, Seeds: 1, Rates: [0.01, 1e30], Networks: [true, false], Arms: ["none", "BatchNorm"], Width: 2, Blocks: 1, Batch: 8, TestImages: 100);
        var results = LearningRateSweep.Run(config, train, test);
        Assert.Equal(2 * 2 * 2, results.Count);
        Assert.Equal(["ResNet-8", "plain CNN-8"], results.Select(r => r.Network).Distinct());
        Assert.All(results.Where(r => r.LearningRate == 0.01), r => { Assert.False(r.Diverged); Assert.InRange(r.TestAccuracy, 0, 1); });
        Assert.Contains(results, r => r.Diverged && double.IsNaN(r.TestAccuracy));   // 1e30 overflows the weights
        Assert.Equal(results.Count + 1, LearningRateSweep.Table(results).ToCsv().TrimEnd().Split('\n').Length);
        var back = LearningRateSweep.Parse(LearningRateSweep.Table(results).ToCsv());
        Assert.Equal(results.Select(r => (r.Network, r.Arm, r.LearningRate, r.Seed, r.Diverged)), back.Select(r => (r.Network, r.Arm, r.LearningRate, r.Seed, r.Diverged)));
        Assert.Equal(results.Select(r => r.TestAccuracy), back.Select(r => r.TestAccuracy), (a, b) => a.Equals(b) || Math.Abs(a - b) < 1e-6);
        Assert.Throws<ArgumentOutOfRangeException>("rate", () => LearningRateSweep.RunOne(true, "none", 0, 1, config, train, test));
    }
}
