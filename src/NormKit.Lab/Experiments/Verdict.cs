namespace NormKit.Lab.Experiments;

/// <summary>How a claimed difference between two arms came out.</summary>
public enum Outcome
{
    /// <summary>The difference goes the claimed way by more than the rule's margin.</summary>
    Holds,
    /// <summary>The difference goes the other way by more than the margin.</summary>
    Reversed,
    /// <summary>Within the margin: the seeds cannot tell the arms apart.</summary>
    NotSeparated,
    /// <summary>Fewer than two seeds on a side: no standard error, so no verdict; the difference is indicative only.</summary>
    TooFewSeeds,
}

/// <summary>
/// One claimed difference decided by the lab's rule: the claim holds when the difference of the
/// means goes the claimed way by more than <see cref="Margin"/> = k standard errors of the
/// difference (Welch: sqrt(sd_a^2 / n_a + sd_b^2 / n_b), k = 2 by default), is reversed when it goes
/// the other way by as much, and is not separated otherwise.
/// </summary>
public sealed record Comparison(string Claim, SeedStats Lower, SeedStats Higher, double Difference, double StandardError, double Margin, Outcome Outcome)
{
    /// <summary>The verdict in words.</summary>
    public string Verdict => Outcome switch
    {
        Outcome.Holds => "holds",
        Outcome.Reversed => "reversed",
        Outcome.NotSeparated => "not separated",
        _ => "indicative: one seed",
    };

    /// <summary>The rule's numbers, e.g. "0.112 +- 0.004 (3) vs 0.121 +- 0.003 (3): difference 0.009, 2 SE = 0.0058".</summary>
    public string Numbers(string format = "G3") => Outcome == Outcome.TooFewSeeds
        ? $"{Lower.Mean.ToString(format)} vs {Higher.Mean.ToString(format)}: difference {Difference.ToString(format)} (one seed: no standard error)"
        : $"{Lower.Mean.ToString(format)} +- {Lower.Sd.ToString(format)} ({Lower.Count}) vs {Higher.Mean.ToString(format)} +- {Higher.Sd.ToString(format)} ({Higher.Count}): " +
          $"difference {Difference.ToString(format)}, {Margin / StandardError:G2} SE = {Margin.ToString(format)}";
}

/// <summary>The lab's verdict rule, applied by code.</summary>
public static class Verdict
{
    /// <summary>
    /// Decides the claim "<paramref name="expectedLower"/> is lower than <paramref name="expectedHigher"/>"
    /// (e.g. BatchNorm's test error is lower than LayerNorm's) from per-seed values, by the rule of
    /// <see cref="Comparison"/> with <paramref name="k"/> standard errors.
    /// </summary>
    public static Comparison Lower(string claim, IEnumerable<double> expectedLower, IEnumerable<double> expectedHigher, double k = 2)
    {
        if (!(k > 0)) throw new ArgumentOutOfRangeException(nameof(k), k, $"k must be > 0 but was {k}.");
        var a = SeedStats.Of(expectedLower);
        var b = SeedStats.Of(expectedHigher);
        if (a.Count == 0 || b.Count == 0)
            throw new ArgumentException($"both sides need values; got {a.Count} and {b.Count}.", a.Count == 0 ? nameof(expectedLower) : nameof(expectedHigher));
        double difference = b.Mean - a.Mean;
        if (a.Count < 2 || b.Count < 2) return new(claim, a, b, difference, double.NaN, double.NaN, Outcome.TooFewSeeds);
        double se = Math.Sqrt(a.Sd * a.Sd / a.Count + b.Sd * b.Sd / b.Count);
        double margin = k * se;
        var outcome = difference > margin ? Outcome.Holds : -difference > margin ? Outcome.Reversed : Outcome.NotSeparated;
        return new(claim, a, b, difference, se, margin, outcome);
    }

    /// <summary>The claim "<paramref name="expectedHigher"/> is higher than <paramref name="expectedLower"/>" (e.g. accuracy).</summary>
    public static Comparison Higher(string claim, IEnumerable<double> expectedHigher, IEnumerable<double> expectedLower, double k = 2) =>
        Lower(claim, expectedLower, expectedHigher, k);
}
