using NormKit.Lab.Experiments;

namespace NormKit.Lab.Tests;

/// <summary>The per-arm summaries the CLI prints: means and standard deviations over seeds, first and last evaluation steps.</summary>
public class SummaryTests
{
    [Fact]
    public void Seed_stats_give_the_mean_and_the_sample_standard_deviation()
    {
        var s = SeedStats.Of([1.0, 2.0, 3.0, 4.0]);
        Assert.Equal(2.5, s.Mean, 12);
        Assert.Equal(Math.Sqrt(5.0 / 3.0), s.Sd, 12);
        Assert.Equal(4, s.Count);
        Assert.Equal(new SeedStats(0.7, 0, 1), SeedStats.Of([0.7]));
        Assert.True(double.IsNaN(SeedStats.Of([]).Mean));
    }

    private static Saturation.Point P(string arm, int seed, int step, double acc, double p15 = 0, double grad = 0) =>
        new(arm, "Glorot", seed, step, 1, acc, p15, 0, 1, 0.1, 0.2, [grad]);

    [Fact]
    public void Saturation_summary_averages_the_seeds_at_the_first_and_the_last_step()
    {
        var points = new[]
        {
            P("none", 1, 100, 0.2, p15: -1), P("none", 1, 200, 0.6, grad: 1), P("none", 2, 100, 0.4, p15: -3), P("none", 2, 200, 0.8, grad: 3),
            P("BatchNorm", 1, 100, 0.5), P("BatchNorm", 1, 300, 0.9),
        };
        var s = SaturationSummary.Of(points);
        Assert.Equal(["none", "BatchNorm"], s.Select(x => x.Arm));
        Assert.Equal(0.3, s[0].FirstTestAccuracy, 12);
        Assert.Equal(0.7, s[0].TestAccuracy, 12);
        Assert.Equal(-2, s[0].FirstP15, 12);
        Assert.Equal(2, s[0].FirstLayerGradNorm, 12);
        Assert.Equal(0.9, s[1].TestAccuracy, 12);
    }

    [Fact]
    public void Vision_and_language_summaries_are_per_arm()
    {
        var vision = VisionSummary.Of([new("none", 1, 0, 0.8, 0), new("none", 2, 0, 0.9, 0), new("BatchNorm", 1, 0, 0.95, 0.5)]);
        Assert.Equal(0.85, vision[0].TestAccuracy.Mean, 12);
        Assert.Equal(Math.Sqrt(0.005), vision[0].TestAccuracy.Sd, 12);
        Assert.Equal(5, vision[1].TestErrorPercent, 9);
        var language = LanguageSummary.Of([new("BatchNorm", 1, 0, double.NaN, 0.1), new("BatchNorm", 2, 0, 2.0, 0.3)]);
        Assert.Equal(new LanguageSummary("BatchNorm", 2.0, 1, 2, 0.2), language.Single() with { BatchMeanFluctuation = 0.2 });
        Assert.Equal(0.2, language.Single().BatchMeanFluctuation, 12);
    }

    [Fact]
    public void Batch_size_summary_has_one_error_per_arm_in_arm_order_smallest_batch_first()
    {
        var points = BatchSize.Arms.SelectMany((arm, i) => new[] { new BatchSize.Point(arm, 32, 1, 0, 0.1 * i, 0.5), new BatchSize.Point(arm, 2, 1, 0, 0.2 * i, 0.7) }).ToList();
        var s = BatchSizeSummary.Of(points);
        Assert.Equal([2, 32], s.Select(x => x.Batch));
        Assert.Equal(BatchSize.Arms.Select((_, i) => 0.2 * i), s[0].TestError);
        Assert.Equal(0.7, s[0].BatchNormTrainModeError, 12);
    }
}
