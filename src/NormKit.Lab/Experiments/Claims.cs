namespace NormKit.Lab.Experiments;

/// <summary>
/// One case of a claim's part decided by the lab's verdict rule, e.g. the case "BatchNorm vs none,
/// Glorot" of the part "fewer saturated sigmoid inputs at the end".
/// </summary>
/// <param name="Part">What the claim says, in short; findings of one part share it.</param>
/// <param name="Case">What is compared, e.g. "BatchNorm vs none": the claim says the first side is higher or lower than the second.</param>
/// <param name="Comparison">The rule's decision from the per-seed values.</param>
/// <param name="HigherIsClaimed">Whether the first side is claimed higher (accuracy) rather than lower (error, saturation).</param>
/// <param name="Format">How the values print ("F3", "0.00e+0").</param>
/// <param name="Note">Shown with the values: where they were measured, or a mechanism's numbers.</param>
public sealed record Finding(string Part, string Case, Comparison Comparison, bool HigherIsClaimed, string Format = "F3", string? Note = null)
{
    /// <summary>The first side's values over seeds.</summary>
    public SeedStats First => HigherIsClaimed ? Comparison.Higher : Comparison.Lower;

    /// <summary>The second side's values over seeds.</summary>
    public SeedStats Second => HigherIsClaimed ? Comparison.Lower : Comparison.Higher;

    /// <summary>The verdict in words: holds, reversed, not separated, or "indicative: one seed".</summary>
    public string Verdict => Comparison.Verdict;

    /// <summary>
    /// The values as the case names them, e.g. "0.019 +- 0.004 vs 0.264 +- 0.011; difference
    /// +0.245, 2 SE = 0.013" (a positive difference goes the claimed way).
    /// </summary>
    public string Values
    {
        get
        {
            string F(double v) => v.ToString(Format, System.Globalization.CultureInfo.InvariantCulture);
            string S(SeedStats s) => s.Count > 1 ? $"{F(s.Mean)} +- {F(s.Sd)}" : F(s.Mean);
            string difference = (Comparison.Difference >= 0 ? "+" : "") + F(Comparison.Difference);
            return Comparison.Outcome == Outcome.TooFewSeeds
                ? $"{S(First)} vs {S(Second)}; difference {difference} ({(Comparison.Difference > 0 ? "the claimed way" : Comparison.Difference < 0 ? "the other way" : "none")})"
                : $"{S(First)} vs {S(Second)}; difference {difference}, {Comparison.Margin / Comparison.StandardError:G2} SE = {F(Comparison.Margin)}";
        }
    }
}

/// <summary>
/// The seed article's claims, split into parts, decided by the lab's rule (<see cref="Verdict"/>)
/// from any run's results: the quick tour's and the full-mode results committed in docs/lab go
/// through the same code. Each function returns one <see cref="Finding"/> per case; a case whose
/// arms the results lack is left out.
/// </summary>
public static class Claims
{
    /// <summary>The parts of claim (a) (saturation, speed, final accuracy), each norm arm against none under each initialization.</summary>
    public static List<Finding> Saturation(IReadOnlyList<Experiments.Saturation.Point> points)
    {
        ArgumentNullException.ThrowIfNull(points);
        var findings = new List<Finding>();
        // Per seed, the run's first or last evaluation.
        List<Experiments.Saturation.Point> At(string init, string arm, bool last) =>
            points.Where(p => p.Init == init && p.Arm == arm).GroupBy(p => p.Seed).OrderBy(g => g.Key)
                .Select(g => last ? g.MaxBy(p => p.Step)! : g.MinBy(p => p.Step)!).ToList();
        var parts = new (string Part, bool Last, bool Higher, Func<Experiments.Saturation.Point, double> Value)[]
        {
            ("fewer saturated sigmoid inputs (|x| > 4) at the end", true, false, p => p.SaturatedFraction),
            ("faster start: higher test accuracy at the first evaluation", false, true, p => p.TestAccuracy),
            ("higher test accuracy at the end", true, true, p => p.TestAccuracy),
        };
        foreach (var part in parts)
            foreach (string init in Experiments.Saturation.Inits)
            {
                var none = At(init, "none", part.Last);
                foreach (string arm in Experiments.Saturation.Arms.Where(a => a != "none"))
                {
                    var normed = At(init, arm, part.Last);
                    if (none.Count == 0 || normed.Count == 0) continue;
                    string steps = string.Join("/", normed.Concat(none).Select(p => p.Step).Distinct());
                    findings.Add(Decide(part.Part, $"{arm} vs none, {init} init", part.Higher, normed.Select(part.Value), none.Select(part.Value), "F3", $"at step {steps}"));
                }
            }
        return findings;
    }

    /// <summary>
    /// The batch-size claim on eval-mode test error: BatchNorm is worse at the smallest batch than at
    /// the largest, LayerNorm and GroupNorm beat it at the smallest, and it is best at the largest.
    /// BatchNorm's error with batch statistics at test (the mechanism) is given as a note.
    /// </summary>
    public static List<Finding> BatchSize(IReadOnlyList<Experiments.BatchSize.Point> points)
    {
        ArgumentNullException.ThrowIfNull(points);
        var findings = new List<Finding>();
        if (points.Count == 0) return findings;
        int small = points.Min(p => p.Batch), large = points.Max(p => p.Batch);
        double[] E(string arm, int batch) => points.Where(p => p.Arm == arm && p.Batch == batch).OrderBy(p => p.Seed).Select(p => p.TestError).ToArray();
        string Mechanism(int batch)
        {
            var bn = points.Where(p => p.Arm == "BatchNorm" && p.Batch == batch && !double.IsNaN(p.TestErrorTrainMode)).Select(p => p.TestErrorTrainMode).ToList();
            return bn.Count == 0 ? "" : $"BatchNorm with batch statistics at test: {bn.Average():F3}";
        }
        void Add(string part, string @case, bool higher, double[] first, double[] second, int batch)
        {
            if (first.Length > 0 && second.Length > 0)
                findings.Add(Decide(part, @case, higher, first, second, "F3", Mechanism(batch) is { Length: > 0 } m ? m : null));
        }
        if (small == large) return findings;
        Add("BatchNorm's error grows at small batches", $"BatchNorm, batch {small} vs batch {large}", true, E("BatchNorm", small), E("BatchNorm", large), small);
        foreach (string arm in (string[])["LayerNorm", "GroupNorm"])
            Add("LayerNorm and GroupNorm beat BatchNorm at the smallest batch", $"{arm} vs BatchNorm, batch {small}", false, E(arm, small), E("BatchNorm", small), small);
        foreach (string arm in (string[])["LayerNorm", "GroupNorm"])
            Add("BatchNorm is best at the largest batch", $"BatchNorm vs {arm}, batch {large}", false, E("BatchNorm", large), E(arm, large), large);
        // BatchNorm's fixes, each against what its paper claims to beat (arms a run lacks are left out).
        Add("Batch Renormalization recovers BatchNorm's loss at the smallest batch (Ioffe 2017)", $"BatchRenorm vs BatchNorm, batch {small}", false,
            E("BatchRenorm", small), E("BatchNorm", small), small);
        foreach (string arm in (string[])["BatchNorm", "GroupNorm"])
            Add("FRN beats BatchNorm and GroupNorm at the smallest batch (Singh & Krishnan 2020)", $"FRN vs {arm}, batch {small}", false,
                E("FRN", small), E(arm, small), small);
        Add("ghost batches beat BatchNorm at the largest batch (Hoffer et al. 2017)", $"GhostBatchNorm vs BatchNorm, batch {large}", false,
            E("GhostBatchNorm", large), E("BatchNorm", large), large);
        return findings;
    }

    /// <summary>
    /// Claim (c) for vision: BatchNorm's test error is lower than every other arm's. Runs as (arm,
    /// seed, test error): the small CNN's (1 - accuracy) and the residual CNN's go through this one function.
    /// </summary>
    public static List<Finding> BatchNormBest(IEnumerable<(string Arm, int Seed, double Error)> runs, string part)
    {
        ArgumentNullException.ThrowIfNull(runs);
        var list = runs.ToList();
        double[] E(string arm) => list.Where(r => r.Arm == arm && double.IsFinite(r.Error)).OrderBy(r => r.Seed).Select(r => r.Error).ToArray();
        var bn = E("BatchNorm");
        if (bn.Length == 0) return [];
        return list.Select(r => r.Arm).Distinct().Where(a => a != "BatchNorm" && E(a).Length > 0)
            .Select(arm => Decide(part, $"BatchNorm vs {arm}", false, bn, E(arm), "F4")).ToList();
    }

    /// <summary>
    /// Claim (c) for language: LayerNorm and RMSNorm beat BatchNorm, LayerNorm beats no
    /// normalization (validation bits per character; diverged runs left out and counted in a note),
    /// and PowerNorm's mechanism: BatchNorm's batch means fluctuate more on text than in the CNN on
    /// images (given <paramref name="vision"/>).
    /// </summary>
    public static List<Finding> Language(IReadOnlyList<Experiments.Language.Result> results, IReadOnlyList<Vision.Result>? vision)
    {
        ArgumentNullException.ThrowIfNull(results);
        var findings = new List<Finding>();
        double[] B(string arm) => results.Where(r => r.Arm == arm && double.IsFinite(r.ValidationBitsPerChar)).OrderBy(r => r.Seed).Select(r => r.ValidationBitsPerChar).ToArray();
        string? Diverged(params string[] arms)
        {
            var notes = arms.Select(a => (Arm: a, Stats: Experiments.Language.BitsPerChar(results.Where(r => r.Arm == a))))
                .Where(a => a.Stats.Diverged > 0).Select(a => $"{a.Arm}: {a.Stats.Diverged} of {a.Stats.Runs} runs diverged (left out)").ToList();
            return notes.Count == 0 ? null : string.Join("; ", notes);
        }
        void Add(string part, string better, string worse)
        {
            if (B(better).Length > 0 && B(worse).Length > 0)
                findings.Add(Decide(part, $"{better} vs {worse}", false, B(better), B(worse), "F3", Diverged(better, worse)));
        }
        Add("LayerNorm and RMSNorm beat BatchNorm", "LayerNorm", "BatchNorm");
        Add("LayerNorm and RMSNorm beat BatchNorm", "RMSNorm", "BatchNorm");
        Add("LayerNorm beats no normalization", "LayerNorm", "none");
        Add("PowerNorm beats LayerNorm and BatchNorm (Shen et al. 2020)", "PowerNorm", "LayerNorm");
        Add("PowerNorm beats LayerNorm and BatchNorm (Shen et al. 2020)", "PowerNorm", "BatchNorm");
        // A claim of a match: "holds" or "not separated" agree with it, "reversed" contradicts it.
        Add("Dynamic Tanh matches LayerNorm (Zhu et al. 2025; only \"reversed\" contradicts a match)", "DynamicTanh", "LayerNorm");
        Add("Dynamic Tanh matches LayerNorm (Zhu et al. 2025; only \"reversed\" contradicts a match)", Experiments.Language.ScaledDynamicTanh, "LayerNorm");
        if (vision != null)
        {
            // The scale-free measure where both runs recorded it (older files lack it), else the paper's form.
            bool scaleFree = results.Where(r => r.Arm == "BatchNorm").All(r => double.IsFinite(r.BatchFluctuationScaleFree)) &&
                vision.Where(r => r.Arm == "BatchNorm").All(r => double.IsFinite(r.BatchFluctuationScaleFree));
            double[] F(IEnumerable<(int Seed, double Value)> runs) => runs.Where(r => double.IsFinite(r.Value)).OrderBy(r => r.Seed).Select(r => r.Value).ToArray();
            var text = F(results.Where(r => r.Arm == "BatchNorm").Select(r => (r.Seed, scaleFree ? r.BatchFluctuationScaleFree : r.BatchMeanFluctuation)));
            var images = F(vision.Where(r => r.Arm == "BatchNorm").Select(r => (r.Seed, scaleFree ? r.BatchFluctuationScaleFree : r.BatchMeanFluctuation)));
            if (text.Length > 0 && images.Length > 0)
                findings.Add(Decide("mechanism (PowerNorm): BatchNorm's batch means fluctuate more on text than on images", "Transformer on text vs CNN on images",
                    true, text, images, scaleFree ? "F4" : "0.00e+0", scaleFree
                        ? "RMS over channels of (mu_B - mu) / running sd at the first BatchNorm, averaged over training (scale-free)"
                        : "(1/d) ||mu_B - mu|| at the first BatchNorm, averaged over training; not scale-free"));
        }
        return findings;
    }

    /// <summary>
    /// Claim (a)'s speed by its mechanism (Bjorck et al. 2018): each norm arm's best test accuracy
    /// over the learning rates, within the fixed step budget, against no normalization's, per
    /// network; the note gives the largest rate at which every seed trained.
    /// </summary>
    public static List<Finding> LearningRate(IReadOnlyList<LearningRateSweep.Result> results)
    {
        ArgumentNullException.ThrowIfNull(results);
        var summaries = LearningRateSweep.Summaries(results);
        static string Rate(double r) => double.IsNaN(r) ? "none" : r.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var findings = new List<Finding>();
        foreach (var s in summaries.Where(s => s.Arm != "none"))
        {
            var none = summaries.FirstOrDefault(x => x.Network == s.Network && x.Arm == "none");
            if (none is null) continue;
            findings.Add(Decide("higher best test accuracy within the step budget", $"{s.Network}: {s.Arm} vs none", true, s.Best, none.Best, "F3",
                $"best rate {Rate(s.BestRate)} vs {Rate(none.BestRate)}; largest rate at which every seed reached {LearningRateSweep.TrainedAccuracy}: {Rate(s.LargestTrainedRate)} vs {Rate(none.LargestTrainedRate)}; diverged runs {s.DivergedRuns} of {s.Runs} vs {none.DivergedRuns} of {none.Runs}"));
        }
        return findings;
    }

    /// <summary>
    /// The depth diagnosis (<see cref="DepthDiagnosis.Verdicts"/>): every setting's final test accuracy
    /// against LayerNorm with SGD, and, where the per-layer statistics are there, BatchNorm's
    /// first-layer gradient and layer gain at initialization against LayerNorm's.
    /// </summary>
    public static List<Finding> Depth(IReadOnlyList<DepthDiagnosis.Point> points)
    {
        ArgumentNullException.ThrowIfNull(points);
        return DepthDiagnosis.Verdicts(points).Select(c =>
        {
            int colon = c.Claim.IndexOf(": ", StringComparison.Ordinal);
            string @case = colon > 0 ? c.Claim[..colon] : c.Claim, part = colon > 0 ? c.Claim[(colon + 2)..] : c.Claim;
            bool accuracy = part.StartsWith("test accuracy", StringComparison.Ordinal);
            return new Finding(accuracy ? "trains where LayerNorm with SGD does not (test accuracy at the end)" : part, @case, c, true, "F3");
        }).ToList();
    }

    /// <summary>The shift claim per change (<see cref="Shift.Verdicts"/>): each normalized arm's error on the changed images against no normalization's.</summary>
    public static List<Finding> Shift(IReadOnlyList<Experiments.Shift.Point> points)
    {
        ArgumentNullException.ThrowIfNull(points);
        return Experiments.Shift.Verdicts(points).Select(v => new Finding($"lower error than no normalization on {v.Change} images", $"{v.Arm} vs none",
            v.VersusNone, false, "F3", $"the change raised {v.Arm}'s error by {v.Increase:F3}")).ToList();
    }

    /// <summary>
    /// Every experiment's findings from the CSV files of <paramref name="source"/> (e.g. the results
    /// committed in docs/lab), by file name, in the order of the claims; null where the file is absent.
    /// </summary>
    public static List<(string File, List<Finding>? Findings)> Of(Results.LabResults source)
    {
        ArgumentNullException.ThrowIfNull(source);
        var vision = source.Read("vision.csv", Vision.Parse);
        List<Finding>? From<T>(string file, Func<string, List<T>> parse, Func<List<T>, List<Finding>> decide) =>
            source.Read(file, parse) is { } rows ? decide(rows) : null;
        return
        [
            ("saturation.csv", From("saturation.csv", Experiments.Saturation.Parse, Saturation)),
            ("saturation-10layers.csv", From("saturation-10layers.csv", Experiments.Saturation.Parse, Saturation)),
            ("depth.csv", From("depth.csv", DepthDiagnosis.Parse, Depth)),
            ("lr-sweep.csv", From("lr-sweep.csv", LearningRateSweep.Parse, LearningRate)),
            ("batch-size.csv", From("batch-size.csv", Experiments.BatchSize.Parse, BatchSize)),
            ("resnet-batch-size.csv", From("resnet-batch-size.csv", Experiments.BatchSize.Parse, BatchSize)),
            ("vision.csv", vision is null ? null : BatchNormBest(vision.Select(x => (x.Arm, x.Seed, 1 - x.TestAccuracy)), "BatchNorm has the lowest test error")),
            ("resnet.csv", From("resnet.csv", ResNetVision.Parse, r => BatchNormBest(r.Select(x => (x.Arm, x.Seed, x.TestError)), "BatchNorm has the lowest test error (residual CNN)"))),
            ("language.csv", From("language.csv", Experiments.Language.Parse, r => Language(r, vision))),
            ("shift.csv", From("shift.csv", Experiments.Shift.Parse, Shift)),
        ];
    }

    /// <summary>
    /// One part's findings summed up in words: the verdict they share ("holds", "holds (4 of 4)"), or
    /// "mixed: 2 hold, 1 reversed, 1 not separated"; with one seed "indicative: one seed, 3 of 4 the
    /// claimed way".
    /// </summary>
    public static string Summary(IReadOnlyCollection<Finding> part)
    {
        ArgumentNullException.ThrowIfNull(part);
        if (part.Count == 0) return "no comparison";
        int n = part.Count;
        int indicative = part.Count(f => f.Comparison.Outcome == Outcome.TooFewSeeds);
        if (indicative == n)
        {
            int claimed = part.Count(f => f.Comparison.Difference > 0);
            return $"indicative: one seed, {claimed} of {n} the claimed way";
        }
        var counts = new (Outcome Outcome, string One, string Many)[]
        {
            (Outcome.Holds, "holds", "hold"), (Outcome.Reversed, "reversed", "reversed"), (Outcome.NotSeparated, "not separated", "not separated"),
            (Outcome.TooFewSeeds, "indicative (one seed)", "indicative (one seed)"),
        }.Select(c => (c.One, c.Many, Count: part.Count(f => f.Comparison.Outcome == c.Outcome))).Where(c => c.Count > 0).ToList();
        if (counts.Count == 1) return n == 1 ? counts[0].One : $"{counts[0].One} ({n} of {n})";
        return "mixed: " + string.Join(", ", counts.Select(c => $"{c.Count} {(c.Count == 1 ? c.One : c.Many)}"));
    }

    private static Finding Decide(string part, string @case, bool higherIsClaimed, IEnumerable<double> first, IEnumerable<double> second, string format, string? note = null)
    {
        string claim = $"{part}: {@case}";
        var comparison = higherIsClaimed ? Verdict.Higher(claim, first, second) : Verdict.Lower(claim, first, second);
        return new Finding(part, @case, comparison, higherIsClaimed, format, note);
    }
}
