namespace NormKit.Lab.Experiments;

/// <summary>The mean and the sample standard deviation (n - 1) of one quantity over seeds; the deviation is 0 for one seed.</summary>
public readonly record struct SeedStats(double Mean, double Sd, int Count)
{
    public static SeedStats Of(IEnumerable<double> values)
    {
        var v = values.ToList();
        if (v.Count == 0) return new(double.NaN, double.NaN, 0);
        double mean = v.Average();
        double sd = v.Count > 1 ? Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / (v.Count - 1)) : 0;
        return new(mean, sd, v.Count);
    }
}

/// <summary>
/// One (init, arm) of <see cref="Saturation"/>: the values at the first and at the last evaluation
/// step, each averaged over the seeds.
/// </summary>
public sealed record SaturationSummary(string Init, string Arm, double TestAccuracy, double FirstTestAccuracy,
    double SaturatedFraction, double MeanSigmoidDerivative, double FirstP15, double FirstP85, double P15, double P85, double FirstLayerGradNorm)
{
    /// <summary>One summary per (init, arm), in the order the points first name them.</summary>
    public static List<SaturationSummary> Of(IEnumerable<Saturation.Point> points) =>
        points.GroupBy(p => (p.Init, p.Arm)).Select(g =>
        {
            int firstStep = g.Min(p => p.Step), lastStep = g.Max(p => p.Step);
            var first = g.Where(p => p.Step == firstStep).ToList();
            var last = g.Where(p => p.Step == lastStep).ToList();
            return new SaturationSummary(g.Key.Init, g.Key.Arm, last.Average(p => p.TestAccuracy), first.Average(p => p.TestAccuracy),
                last.Average(p => p.SaturatedFraction), last.Average(p => p.MeanSigmoidDerivative),
                first.Average(p => p.P15), first.Average(p => p.P85), last.Average(p => p.P15), last.Average(p => p.P85),
                last.Average(p => p.GradNorms[0]));
        }).ToList();
}

/// <summary>
/// One batch size of <see cref="BatchSize"/>: the test error (eval mode) of each arm in
/// the given arms' order, and BatchNorm's with batch statistics, averaged over seeds.
/// </summary>
public sealed record BatchSizeSummary(int Batch, IReadOnlyList<double> TestError, double BatchNormTrainModeError)
{
    /// <summary>One summary per batch size, smallest first, with the arms <paramref name="arms"/> (default every arm) in that order; NaN where an arm did not run.</summary>
    public static List<BatchSizeSummary> Of(IEnumerable<BatchSize.Point> points, IReadOnlyList<string>? arms = null) =>
        points.GroupBy(p => p.Batch).OrderBy(g => g.Key).Select(g => new BatchSizeSummary(g.Key,
            (arms ?? BatchSize.Arms).Select(a => g.Where(p => p.Arm == a).Select(p => p.TestError).DefaultIfEmpty(double.NaN).Average()).ToList(),
            g.Where(p => p.Arm == "BatchNorm").Select(p => p.TestErrorTrainMode).DefaultIfEmpty(double.NaN).Average())).ToList();
}

/// <summary>One arm of <see cref="Vision"/>: test accuracy over seeds and BatchNorm's mean batch-mean fluctuation.</summary>
public sealed record VisionSummary(string Arm, SeedStats TestAccuracy, double BatchMeanFluctuation)
{
    /// <summary>The mean test error in percent.</summary>
    public double TestErrorPercent => 100 * (1 - TestAccuracy.Mean);

    /// <summary>One summary per arm, in the order the results first name them.</summary>
    public static List<VisionSummary> Of(IEnumerable<Vision.Result> results) =>
        results.GroupBy(r => r.Arm).Select(g => new VisionSummary(g.Key, SeedStats.Of(g.Select(r => r.TestAccuracy)),
            g.Average(r => r.BatchMeanFluctuation))).ToList();
}

/// <summary>
/// One arm of <see cref="Language"/>: validation bits per character over the runs that did not
/// diverge (see <see cref="Language.BitsPerChar"/>) and the mean batch-mean fluctuation.
/// </summary>
public sealed record LanguageSummary(string Arm, double BitsPerChar, int Diverged, int Runs, double BatchMeanFluctuation)
{
    /// <summary>One summary per arm, in the order the results first name them.</summary>
    public static List<LanguageSummary> Of(IEnumerable<Language.Result> results) =>
        results.GroupBy(r => r.Arm).Select(g =>
        {
            var (mean, diverged, runs) = Language.BitsPerChar(g);
            return new LanguageSummary(g.Key, mean, diverged, runs, g.Average(r => r.BatchMeanFluctuation));
        }).ToList();
}
