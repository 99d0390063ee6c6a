using NormKit.Lab.Data;
using NormKit.Lab.Results;
using NormKit.Lab.Training;
using NormKit.Layers;

namespace NormKit.Lab.Experiments;

/// <summary>
/// Language: a tiny pre-norm Transformer (2 blocks, width 64, 4 heads, context 32) trained on
/// characters of text with LayerNorm, RMSNorm, BatchNorm (statistics over batch x time) or no
/// normalization, AdamW. Reports validation bits per character, and for BatchNorm how far each
/// batch's mean strays from the running mean, (1/d) ||mu_B - mu||, to set beside the same measure
/// in the vision CNN (Shen et al. 2020, PowerNorm, Fig. 2): the seed article's claim (c),
/// "LayerNorm suits language".
/// </summary>
public static class Language
{
    /// <param name="Arms">The arms to train (null: <see cref="Arms"/>, every arm).</param>
    public sealed record Config(int Steps, int Seeds, int Dim = 64, int Heads = 4, int Length = 32, int Sequences = 16, int Blocks = 2,
        double LearningRate = 2e-3, int ValidationSequences = 256, string[]? Arms = null)
    {
        /// <summary>The quick tour's: the four arms of the seed article's claim.</summary>
        public static Config Quick => new(Steps: 300, Seeds: 1, ValidationSequences: 128, Arms: Classic);
        public static Config Full => new(Steps: 1500, Seeds: 3);

        /// <summary>The arms this run trains.</summary>
        public IReadOnlyList<string> ArmList => Arms ?? Language.Arms;

        /// <summary>PowerNorm's warm-up: the official code ties it to the learning-rate warm-up; this run has none, so the first tenth of the steps.</summary>
        public int PowerNormWarmup => Math.Max(1, Steps / 10);
    }

    /// <summary>The arms of the seed article's claim: no normalization, LayerNorm, RMSNorm and BatchNorm.</summary>
    public static readonly string[] Classic = ["none", "LayerNorm", "RMSNorm", "BatchNorm"];

    /// <summary>
    /// Every arm: <see cref="Classic"/>, then PowerNorm (Shen et al. 2020) and Dynamic Tanh (Zhu et
    /// al. 2025), also with the embedding output multiplied by a learnable scalar initialised to
    /// sqrt(d_model), as the paper's LLaMA code does, so that tanh sees values of unit scale.
    /// </summary>
    public static readonly string[] Arms = [.. Classic, "PowerNorm", "DynamicTanh", ScaledDynamicTanh];

    /// <summary>The Dynamic Tanh arm with the scaled embedding.</summary>
    public const string ScaledDynamicTanh = "DynamicTanh (scaled embedding)";

    /// <param name="BatchMeanFluctuation">Mean over training of (1/d) ||mu_B - mu|| at the first BatchNorm (NaN for other arms).</param>
    /// <param name="BatchFluctuationScaleFree">The same batch mean's deviation in units of the running standard deviation (<see cref="Fluctuation.MeanScaleFree"/>).</param>
    /// <param name="BatchVarianceFluctuationScaleFree">The batch variance's relative deviation from the running one (<see cref="Fluctuation.VarianceScaleFree"/>).</param>
    public sealed record Result(string Arm, int Seed, double FinalTrainLoss, double ValidationBitsPerChar, double BatchMeanFluctuation,
        double BatchFluctuationScaleFree = double.NaN, double BatchVarianceFluctuationScaleFree = double.NaN);

    public static Sequential<float> Model(string arm, Config c, int vocabulary, Rng rng)
    {
        ILayer<float>[] N() => arm switch
        {
            "LayerNorm" => [new Norm<float>(new LayerNorm<float>(c.Dim), c.Dim)],
            "RMSNorm" => [new Norm<float>(new RMSNorm<float>(c.Dim, eps: 1e-6), c.Dim)],
            "BatchNorm" => [new Norm<float>(new BatchNorm1d<float>(c.Dim), c.Dim)],
            "PowerNorm" => [new Norm<float>(new PowerNorm<float>(c.Dim, warmupIters: c.PowerNormWarmup), c.Dim)],
            "DynamicTanh" or ScaledDynamicTanh => [new Norm<float>(new DynamicTanh<float>(c.Dim), c.Dim)],
            "none" => [],
            _ => throw new ArgumentException($"arm must be one of {string.Join(", ", Arms)} but was '{arm}'.", nameof(arm)),
        };
        var layers = new List<ILayer<float>> { new Embedding<float>(vocabulary, c.Dim, c.Length, rng) };
        if (arm == ScaledDynamicTanh) layers.Add(new Scale<float>(Math.Sqrt(c.Dim)));
        for (int b = 0; b < c.Blocks; b++)
        {
            layers.Add(new Residual<float>([.. N(), new CausalSelfAttention<float>(c.Dim, c.Heads, c.Length, rng)]));
            layers.Add(new Residual<float>([.. N(), new Linear<float>(c.Dim, 4 * c.Dim, Init.Glorot, rng), new Activation<float>(Activation<float>.Kind.GELU),
                new Linear<float>(4 * c.Dim, c.Dim, Init.Glorot, rng)]));
        }
        layers.AddRange(N());
        layers.Add(new Linear<float>(c.Dim, vocabulary, Init.Glorot, rng));
        return new Sequential<float>(layers);
    }

    /// <summary>What one run trains: the settings the trainer takes.</summary>
    public static TrainSettings Training(Config c, TextCorpus corpus) => new(c.Steps, OptimizerSettings.AdamW(c.LearningRate), Classes: corpus.Vocabulary);

    /// <summary>Training steps of a whole <see cref="Run"/>, for progress.</summary>
    public static long TotalSteps(Config c) => (long)c.ArmList.Count * c.Seeds * c.Steps;

    public static List<Result> Run(Config c, TextCorpus corpus, Action<string>? progress = null, ProgressMeter? meter = null)
    {
        var results = new List<Result>();
        foreach (string arm in c.ArmList)
            for (int seed = 1; seed <= c.Seeds; seed++)
            {
                results.Add(RunOne(arm, seed, c, corpus, meter));
                progress?.Invoke($"{arm}, seed {seed}");
            }
        return results;
    }

    public static Result RunOne(string arm, int seed, Config c, TextCorpus corpus, ProgressMeter? meter = null)
    {
        var rng = new Rng(seed);
        var model = Model(arm, c, corpus.Vocabulary, rng);
        var trainer = new Trainer<float>(model, TextWindows.Random<float>(corpus, c.Sequences, c.Length), Training(c, corpus), rng);
        var firstNorm = model.Layers.OfType<Residual<float>>().First().Inner.OfType<Norm<float>>().FirstOrDefault();
        var fluctuation = arm == "BatchNorm" ? BatchStatistics.FluctuationAfter(trainer, firstNorm!, c.Steps / 10) : null;
        double finalLoss = trainer.Run(meter);
        // Validation: consecutive windows of the held-out tenth, in eval mode.
        var validation = Evaluation.Run(model, TextWindows.Validation<float>(corpus, c.Sequences, c.Length, c.ValidationSequences), corpus.Vocabulary);
        return new Result(arm, seed, finalLoss, validation.Loss / Math.Log(2), fluctuation?.Mean.Mean ?? double.NaN,
            fluctuation?.Mean.MeanScaleFree ?? double.NaN, fluctuation?.Mean.VarianceScaleFree ?? double.NaN);
    }

    public static ResultTable Table(IEnumerable<Result> results)
    {
        var t = new ResultTable("arm", "seed", "final_train_loss", "validation_bits_per_char", "batch_mean_fluctuation", "batch_fluctuation_scale_free", "batch_variance_fluctuation_scale_free");
        foreach (var r in results) t.Add(r.Arm, r.Seed, r.FinalTrainLoss, r.ValidationBitsPerChar, r.BatchMeanFluctuation, r.BatchFluctuationScaleFree, r.BatchVarianceFluctuationScaleFree);
        return t;
    }

    public static string Csv(IEnumerable<Result> results) => Table(results).ToCsv();

    /// <summary>Reads the results back from what <see cref="Csv"/> wrote (columns by name; extra columns are ignored).</summary>
    public static List<Result> Parse(string csv) => ResultTable.Parse(csv).Records.Select(r => new Result(r.Text("arm"), r.Integer("seed"),
        r.Number("final_train_loss"), r.Number("validation_bits_per_char"), r.Number("batch_mean_fluctuation"),
        // Files written before the scale-free measures existed lack their columns.
        r.Has("batch_fluctuation_scale_free") ? r.Number("batch_fluctuation_scale_free") : double.NaN,
        r.Has("batch_variance_fluctuation_scale_free") ? r.Number("batch_variance_fluctuation_scale_free") : double.NaN)).ToList();

    /// <summary>Mean validation bits per character over the runs that did not diverge (NaN), and how many did.</summary>
    public static (double Mean, int Diverged, int Runs) BitsPerChar(IEnumerable<Result> arm)
    {
        var all = arm.ToList();
        var finite = all.Where(r => double.IsFinite(r.ValidationBitsPerChar)).ToList();
        return (finite.Count > 0 ? finite.Average(r => r.ValidationBitsPerChar) : double.NaN, all.Count - finite.Count, all.Count);
    }

    /// <summary>Validation bits per character per arm as a bar chart; diverged runs are named in the label.</summary>
    public static string Plot(IReadOnlyList<Result> results, string dir)
    {
        var arms = results.GroupBy(r => r.Arm).Select(g => (g.Key, Stats: BitsPerChar(g))).ToList();
        string path = Path.Combine(dir, "language");
        Plots.Charts.Bars(path, "Tiny Transformer on characters: validation bits per character (lower is better)", "bits per character",
            arms.Select(a => a.Stats.Diverged > 0 ? $"{a.Key} ({a.Stats.Diverged} of {a.Stats.Runs} diverged)" : a.Key).ToArray(),
            arms.Select(a => double.IsNaN(a.Stats.Mean) ? 0 : a.Stats.Mean).ToArray());
        return path;
    }
}
