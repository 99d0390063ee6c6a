using NormKit.Lab.Experiments;

namespace NormKit.Lab.Tests;

/// <summary>The verdict rule: a difference beyond two Welch standard errors, by hand.</summary>
public class VerdictTests
{
    [Fact]
    public void A_difference_beyond_two_standard_errors_holds()
    {
        // a: 0.10, 0.12, 0.11 (mean 0.11, sd 0.01); b: 0.14, 0.15, 0.16 (mean 0.15, sd 0.01)
        // SE = sqrt(0.0001/3 + 0.0001/3) = 0.0081650; 2 SE = 0.016330 < 0.04.
        var c = Verdict.Lower("BN below LN", [0.10, 0.12, 0.11], [0.14, 0.15, 0.16]);
        Assert.Equal(Outcome.Holds, c.Outcome);
        Assert.Equal(0.04, c.Difference, 12);
        Assert.Equal(0.0081649658, c.StandardError, 9);
        Assert.Equal(0.0163299316, c.Margin, 9);
        Assert.Equal("holds", c.Verdict);
    }

    [Fact]
    public void The_other_way_is_reversed_and_inside_the_margin_is_not_separated()
    {
        Assert.Equal(Outcome.Reversed, Verdict.Lower("x", [0.14, 0.15, 0.16], [0.10, 0.12, 0.11]).Outcome);
        // means 0.11 and 0.12, sds 0.01: 2 SE = 0.0163 > 0.01
        var c = Verdict.Lower("x", [0.10, 0.12, 0.11], [0.11, 0.13, 0.12]);
        Assert.Equal(Outcome.NotSeparated, c.Outcome);
        Assert.Equal("not separated", c.Verdict);
    }

    [Fact]
    public void Welch_uses_each_sides_own_count_and_spread()
    {
        // a = 0.08, 0.12 (mean 0.10, variance 0.0008); b = 0.15, 0.16, 0.16, 0.17 (mean 0.16, variance 0.0002 / 3)
        // SE = sqrt(0.0008/2 + 0.0000666667/4) = 0.020412; 2 SE = 0.040825 < 0.06: holds; 3 SE = 0.061237 > 0.06.
        var c = Verdict.Lower("x", [0.08, 0.12], [0.15, 0.16, 0.16, 0.17]);
        Assert.Equal(0.06, c.Difference, 12);
        Assert.Equal(Math.Sqrt(0.0008 / 2 + 0.0002 / 3 / 4), c.StandardError, 9);
        Assert.Equal(Outcome.Holds, c.Outcome);
        Assert.Equal(Outcome.NotSeparated, Verdict.Lower("x", [0.08, 0.12], [0.15, 0.16, 0.16, 0.17], k: 3).Outcome);   // 3 SE = 0.0612
    }

    [Fact]
    public void Higher_is_the_mirror_and_one_seed_gives_no_verdict()
    {
        Assert.Equal(Outcome.Holds, Verdict.Higher("acc", [0.90, 0.91, 0.92], [0.80, 0.81, 0.82]).Outcome);
        var one = Verdict.Lower("x", [0.1], [0.2, 0.3]);
        Assert.Equal(Outcome.TooFewSeeds, one.Outcome);
        Assert.Contains("one seed", one.Numbers());
        Assert.Throws<ArgumentException>("expectedLower", () => Verdict.Lower("x", [], [0.1]));
        Assert.Throws<ArgumentOutOfRangeException>("k", () => Verdict.Lower("x", [0.1], [0.2], k: 0));
    }
}
