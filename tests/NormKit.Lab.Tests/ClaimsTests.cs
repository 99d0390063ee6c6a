using NormKit.Lab.Results;
using NormKit.Lab.Experiments;

namespace NormKit.Lab.Tests;

/// <summary>The claims' parts decided by the verdict rule from numbers worked out by hand.</summary>
public class ClaimsTests
{
    private static Saturation.Point P(string arm, int seed, int step, double accuracy, double saturated) =>
        new(arm, "Glorot", seed, step, 1, accuracy, -1, 0, 1, saturated, 0.1, [0.1, 0.1, 0.1, 0.1]);

    // Three seeds per arm, evaluated at steps 500 and 8000.
    private static List<Saturation.Point> Runs(string arm, double[] firstAccuracy, double[] lastAccuracy, double[] lastSaturated) =>
        Enumerable.Range(0, 3).SelectMany(i => new[] { P(arm, i + 1, 500, firstAccuracy[i], 0), P(arm, i + 1, 8000, lastAccuracy[i], lastSaturated[i]) }).ToList();

    [Fact]
    public void Claim_a_splits_into_saturation_speed_and_final_accuracy_each_with_its_own_verdict()
    {
        var points = Runs("none", [0.20, 0.22, 0.24], [0.87, 0.88, 0.86], [0.25, 0.26, 0.24])
            .Concat(Runs("BatchNorm", [0.80, 0.81, 0.82], [0.87, 0.86, 0.88], [0.02, 0.03, 0.01]))
            .Concat(Runs("LayerNorm", [0.19, 0.21, 0.23], [0.90, 0.91, 0.92], [0.35, 0.36, 0.34])).ToList();
        var findings = Claims.Saturation(points);
        Finding F(string part, string arm) => findings.Single(f => f.Part.StartsWith(part) && f.Case.StartsWith(arm));
        // Saturation at the end: BatchNorm 0.02 vs none 0.25 (sd 0.01 each; 2 SE = 0.0163): holds.
        var bnSaturation = F("fewer saturated", "BatchNorm");
        Assert.Equal(Outcome.Holds, bnSaturation.Comparison.Outcome);
        Assert.Equal(0.23, bnSaturation.Comparison.Difference, 12);
        Assert.Equal("BatchNorm vs none, Glorot init", bnSaturation.Case);
        Assert.Equal("at step 8000", bnSaturation.Note);
        Assert.Equal("0.020 +- 0.010 vs 0.250 +- 0.010; difference +0.230, 2 SE = 0.016", bnSaturation.Values);
        // LayerNorm saturates more than none here: the part is reversed for it, not "holds partly".
        Assert.Equal(Outcome.Reversed, F("fewer saturated", "LayerNorm").Comparison.Outcome);
        // Speed: accuracy at the first evaluation, BatchNorm 0.81 vs none 0.22: holds; LayerNorm 0.21 vs 0.22: not separated.
        Assert.Equal(Outcome.Holds, F("faster start", "BatchNorm").Comparison.Outcome);
        Assert.Equal("at step 500", F("faster start", "BatchNorm").Note);
        Assert.Equal(Outcome.NotSeparated, F("faster start", "LayerNorm").Comparison.Outcome);
        // Final accuracy: BatchNorm 0.87 vs 0.87 not separated; LayerNorm 0.91 vs 0.87 holds.
        Assert.Equal(Outcome.NotSeparated, F("higher test accuracy at the end", "BatchNorm").Comparison.Outcome);
        Assert.Equal(Outcome.Holds, F("higher test accuracy at the end", "LayerNorm").Comparison.Outcome);
        Assert.Equal(6, findings.Count);   // 3 parts x 2 arms; N(0, 0.01^2) is absent
        Assert.Equal("mixed: 1 holds, 1 reversed", Claims.Summary(findings.Where(f => f.Part.StartsWith("fewer saturated")).ToList()));
        Assert.Equal("holds", Claims.Summary([bnSaturation]));
        Assert.Equal("holds (2 of 2)", Claims.Summary([bnSaturation, F("faster start", "BatchNorm")]));
    }

    [Fact]
    public void One_seed_gives_an_indicative_difference_not_a_verdict()
    {
        var points = new List<Saturation.Point>
        {
            P("none", 1, 100, 0.5, 0.000), P("none", 1, 1000, 0.8, 0.000),
            P("BatchNorm", 1, 100, 0.7, 0.000), P("BatchNorm", 1, 1000, 0.8, 0.001),
            P("LayerNorm", 1, 100, 0.6, 0.000), P("LayerNorm", 1, 1000, 0.8, 0.031),
        };
        var saturation = Claims.Saturation(points).Where(f => f.Part.StartsWith("fewer saturated")).ToList();
        Assert.All(saturation, f => Assert.Equal("indicative: one seed", f.Verdict));
        Assert.Equal("0.031 vs 0.000; difference -0.031 (the other way)", saturation.Single(f => f.Case.StartsWith("LayerNorm")).Values);
        Assert.Equal("indicative: one seed, 0 of 2 the claimed way", Claims.Summary(saturation));
        var speed = Claims.Saturation(points).Where(f => f.Part.StartsWith("faster start")).ToList();
        Assert.Equal("indicative: one seed, 2 of 2 the claimed way", Claims.Summary(speed));
    }

    [Fact]
    public void The_batch_size_claim_is_decided_on_eval_mode_error_with_the_batch_statistics_beside_it()
    {
        var points = new List<BatchSize.Point>();
        void Add(string arm, int batch, double[] errors, double trainMode = double.NaN)
        {
            for (int s = 0; s < errors.Length; s++) points.Add(new(arm, batch, s + 1, 0, errors[s], trainMode));
        }
        Add("BatchNorm", 2, [0.38, 0.39], trainMode: 0.61);
        Add("LayerNorm", 2, [0.17, 0.18]);
        Add("GroupNorm", 2, [0.16, 0.17]);
        Add("BatchNorm", 128, [0.148, 0.150], trainMode: 0.14);
        Add("LayerNorm", 128, [0.149, 0.151]);
        Add("GroupNorm", 128, [0.155, 0.157]);
        var findings = Claims.BatchSize(points);
        var grows = findings.Single(f => f.Part == "BatchNorm's error grows at small batches");
        Assert.Equal("BatchNorm, batch 2 vs batch 128", grows.Case);
        Assert.Equal(Outcome.Holds, grows.Comparison.Outcome);
        Assert.Equal(0.385, grows.First.Mean, 12);   // eval mode, not the batch statistics' 0.61
        Assert.Equal("BatchNorm with batch statistics at test: 0.610", grows.Note);
        Assert.All(findings.Where(f => f.Part.StartsWith("LayerNorm and GroupNorm beat")), f => Assert.Equal(Outcome.Holds, f.Comparison.Outcome));
        var large = findings.Where(f => f.Part == "BatchNorm is best at the largest batch").ToDictionary(f => f.Case, f => f.Comparison.Outcome);
        Assert.Equal(Outcome.NotSeparated, large["BatchNorm vs LayerNorm, batch 128"]);   // 0.149 vs 0.150, sd 0.0014
        Assert.Equal(Outcome.Holds, large["BatchNorm vs GroupNorm, batch 128"]);         // 0.149 vs 0.156
    }

    [Fact]
    public void BatchNorms_fixes_are_decided_against_what_each_paper_claims_to_beat()
    {
        var points = new List<BatchSize.Point>();
        void Add(string arm, int batch, params double[] errors)
        {
            for (int s = 0; s < errors.Length; s++) points.Add(new(arm, batch, s + 1, 0, errors[s], double.NaN));
        }
        Add("BatchNorm", 2, 0.38, 0.39, 0.40);
        Add("GroupNorm", 2, 0.17, 0.18, 0.19);
        Add("BatchRenorm", 2, 0.20, 0.21, 0.22);     // 0.21 vs 0.39, sd 0.01: 2 SE = 0.016, holds
        Add("FRN", 2, 0.37, 0.39, 0.41);            // vs BatchNorm 0.39 vs 0.39: not separated; vs GroupNorm 0.39 vs 0.18: reversed
        Add("BatchNorm", 128, 0.150, 0.151, 0.152);
        Add("GhostBatchNorm", 128, 0.140, 0.141, 0.142);   // 0.141 vs 0.151, 2 SE = 0.0016: holds
        var findings = Claims.BatchSize(points).ToDictionary(f => f.Case);
        Assert.Equal(Outcome.Holds, findings["BatchRenorm vs BatchNorm, batch 2"].Comparison.Outcome);
        Assert.StartsWith("Batch Renormalization recovers", findings["BatchRenorm vs BatchNorm, batch 2"].Part);
        Assert.Equal(Outcome.NotSeparated, findings["FRN vs BatchNorm, batch 2"].Comparison.Outcome);
        Assert.Equal(Outcome.Reversed, findings["FRN vs GroupNorm, batch 2"].Comparison.Outcome);
        Assert.Equal(Outcome.Holds, findings["GhostBatchNorm vs BatchNorm, batch 128"].Comparison.Outcome);
        Assert.Equal(0.010, findings["GhostBatchNorm vs BatchNorm, batch 128"].Comparison.Difference, 12);
        // Arms a run lacks are left out: no LayerNorm here, so no LayerNorm comparison.
        Assert.DoesNotContain(findings.Keys, k => k.Contains("LayerNorm"));
    }

    [Fact]
    public void PowerNorm_and_Dynamic_Tanh_are_decided_against_LayerNorm()
    {
        Language.Result R(string arm, int seed, double bpc) => new(arm, seed, 1, bpc, double.NaN);
        var findings = Claims.Language([R("LayerNorm", 1, 1.88), R("LayerNorm", 2, 1.89), R("LayerNorm", 3, 1.90),
            R("BatchNorm", 1, 1.95), R("BatchNorm", 2, 1.96), R("BatchNorm", 3, 1.97),
            R("PowerNorm", 1, 1.94), R("PowerNorm", 2, 1.95), R("PowerNorm", 3, 1.96),
            R("DynamicTanh", 1, 1.87), R("DynamicTanh", 2, 1.90), R("DynamicTanh", 3, 1.93)], null).ToDictionary(f => f.Case);
        Assert.Equal(Outcome.Reversed, findings["PowerNorm vs LayerNorm"].Comparison.Outcome);   // 1.95 vs 1.89, 2 SE = 0.016
        Assert.Equal(Outcome.NotSeparated, findings["PowerNorm vs BatchNorm"].Comparison.Outcome);  // 1.95 vs 1.96, 2 SE = 0.016
        var dyt = findings["DynamicTanh vs LayerNorm"];
        Assert.Equal(Outcome.NotSeparated, dyt.Comparison.Outcome);   // 1.90 vs 1.89: a match
        Assert.Contains("only \"reversed\" contradicts a match", dyt.Part);
    }

    [Fact]
    public void Vision_and_language_use_errors_and_leave_diverged_runs_out()
    {
        var vision = Claims.BatchNormBest([("none", 1, 0.11), ("none", 2, 0.12), ("BatchNorm", 1, 0.08), ("BatchNorm", 2, 0.09), ("LayerNorm", 1, 0.10)], "BatchNorm has the lowest test error");
        Assert.Equal(["BatchNorm vs none", "BatchNorm vs LayerNorm"], vision.Select(f => f.Case));
        Assert.Equal(Outcome.Holds, vision[0].Comparison.Outcome);            // 0.085 vs 0.115, 2 SE = 0.014
        Assert.Equal(Outcome.TooFewSeeds, vision[1].Comparison.Outcome);      // LayerNorm has one seed

        Language.Result R(string arm, int seed, double bpc, double fluctuation = double.NaN) => new(arm, seed, 1, bpc, fluctuation);
        var language = Claims.Language([R("none", 1, double.NaN), R("none", 2, 2.08), R("LayerNorm", 1, 1.87), R("LayerNorm", 2, 1.871),
            R("RMSNorm", 1, 1.866), R("RMSNorm", 2, 1.868), R("BatchNorm", 1, 1.93, 5e-4), R("BatchNorm", 2, 1.94, 6e-4)],
            [new Vision.Result("BatchNorm", 1, 0, 0.9, 9e-3), new Vision.Result("BatchNorm", 2, 0, 0.9, 1e-2)]);
        Assert.Equal(Outcome.Holds, language.Single(f => f.Case == "LayerNorm vs BatchNorm").Comparison.Outcome);
        var versusNone = language.Single(f => f.Case == "LayerNorm vs none");
        Assert.Equal(Outcome.TooFewSeeds, versusNone.Comparison.Outcome);    // one of none's two runs diverged
        Assert.Equal("none: 1 of 2 runs diverged (left out)", versusNone.Note);
        var mechanism = language.Single(f => f.Part.StartsWith("mechanism"));
        Assert.Equal(Outcome.Reversed, mechanism.Comparison.Outcome);        // text 5.5e-4 < images 9.5e-3
        Assert.StartsWith("5.50e-4 +- 7.07e-5 vs 9.50e-3 +- 7.07e-4; difference -8.95e-3, 2 SE = ", mechanism.Values);
        Assert.Contains("not scale-free", mechanism.Note);

        // With the scale-free measure in both runs the mechanism is decided on it instead.
        Language.Result S(int seed, double scaleFree) => new("BatchNorm", seed, 1, 1.9, 1e-4, scaleFree);
        var scaleFreeMechanism = Claims.Language([S(1, 0.30), S(2, 0.32), S(3, 0.31)],
            [new Vision.Result("BatchNorm", 1, 0, 0.9, 9e-3, 0.10), new Vision.Result("BatchNorm", 2, 0, 0.9, 1e-2, 0.11), new Vision.Result("BatchNorm", 3, 0, 0.9, 1e-2, 0.12)])
            .Single(f => f.Part.StartsWith("mechanism"));
        Assert.Equal(Outcome.Holds, scaleFreeMechanism.Comparison.Outcome);   // 0.31 vs 0.11 on the scale-free measure (the raw one goes the other way)
        Assert.Equal(0.31, scaleFreeMechanism.First.Mean, 12);
        Assert.Contains("scale-free", scaleFreeMechanism.Note);
        Assert.DoesNotContain("not scale-free", scaleFreeMechanism.Note);
    }

    [Fact]
    public void The_committed_depth_diagnosis_parses_and_its_accuracy_findings_are_decided()
    {
        var points = LabResults.Committed.Read("depth.csv", DepthDiagnosis.Parse)!;
        Assert.All(points, p => Assert.Empty(p.Layers));
        var findings = Claims.Depth(points);
        // Accuracy only (the per-layer file is not read): every other setting against LayerNorm with SGD 0.1.
        Assert.Equal(7, findings.Count);
        Assert.All(findings, f => Assert.StartsWith("trains where LayerNorm", f.Part));
        Assert.Equal(Outcome.Holds, findings.Single(f => f.Case == "BatchNorm, SGD 0.1").Comparison.Outcome);
        Assert.Equal(Outcome.NotSeparated, findings.Single(f => f.Case == "none, SGD 0.1").Comparison.Outcome);
    }

    [Fact]
    public void Every_committed_file_is_decided_and_an_absent_one_is_named()
    {
        var all = Claims.Of(LabResults.Committed);
        Assert.Contains(all, x => x.File == "shift.csv" && x.Findings is { Count: > 0 });
        Assert.Equal(Claims.Shift(LabResults.Committed.Read("shift.csv", Shift.Parse)!).Select(f => f.Values), all.Single(x => x.File == "shift.csv").Findings!.Select(f => f.Values));
        var empty = Claims.Of(LabResults.Folder(Directory.CreateTempSubdirectory().FullName));
        Assert.Equal(all.Select(x => x.File), empty.Select(x => x.File));
        Assert.All(empty, x => Assert.Null(x.Findings));
    }

    [Fact]
    public void Setups_are_read_from_the_configuration_and_the_model()
    {
        string sat = Setup.Saturation(Saturation.Config.Full, "60,000 images", 2000);
        Assert.Contains("3 x 100 sigmoid MLP (linear 784->100, norm, sigmoid, 2 x (linear 100->100, norm, sigmoid), linear 100->10)", sat);
        Assert.Contains("SGD lr 0.1 momentum 0.9 at batch 60, 8,000 steps, evaluated every 500 steps on 2,000 test images", sat);
        Assert.Contains("3 seeds per arm", sat);
        Assert.Contains("9 x (linear 100->100, norm, sigmoid)", Setup.Saturation(Saturation.Config.Deep, "x", 1));
        Assert.Contains("conv 3x3 1->8, norm, relu, 2x2 max-pool, conv 3x3 8->16, norm, relu, 2x2 max-pool, linear 784->10", Setup.Vision(Vision.Config.Quick, "x", 1000));
        Assert.Contains("batch size (2, 8, 32, 128)", Setup.BatchSize(BatchSize.Config.Quick, "x", 1000));
        Assert.Contains("with no normalization, BatchNorm, LayerNorm or GroupNorm as the norm. ", Setup.BatchSize(BatchSize.Config.Quick, "x", 1000));
        string full = Setup.BatchSize(BatchSize.Config.Full, "x", 1000);
        Assert.Contains("GroupNorm, BatchRenorm, GhostBatchNorm or FRN as the norm (Batch Renormalization", full);
        Assert.Contains("(ghost batches of 8, run only at larger batches)", full);
        string language = Setup.Language(Language.Config.Full, "t");
        Assert.Contains("PowerNorm, DynamicTanh or DynamicTanh with the embedding output multiplied by a learnable scalar (initialised to sqrt(d_model), the paper's LLaMA recipe) " +
            "(BatchNorm and PowerNorm with statistics over batch x time; PowerNorm's warm-up 150 steps)", language);
        Assert.Contains("no normalization, LayerNorm, RMSNorm or BatchNorm (BatchNorm with statistics over batch x time)", Setup.Language(Language.Config.Quick, "t"));
    }
}
