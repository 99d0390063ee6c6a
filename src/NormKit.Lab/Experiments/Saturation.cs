using NormKit.Lab.Data;
using NormKit.Lab.Results;
using NormKit.Lab.Training;
using NormKit.Layers;

namespace NormKit.Lab.Experiments;

/// <summary>
/// The BatchNorm paper's Figure 1 on Fashion-MNIST: an MLP of sigmoid layers (3 x 100 by
/// default) trained with SGD at batch 60, with no normalization, BatchNorm or LayerNorm before
/// each sigmoid, under two initializations (N(0, 0.01^2) and Glorot). It records test accuracy,
/// the 15th/50th/85th percentiles of one last-layer sigmoid input over the test set, the fraction
/// of saturated sigmoid inputs (|x| &gt; 4), the mean sigmoid derivative and each layer's weight
/// gradient norm: the seed article's claim (a) measured, not assumed.
/// </summary>
public static class Saturation
{
    public sealed record Config(int Steps, int EvalEvery, int Seeds, int HiddenLayers = 3, int Hidden = 100, int Batch = 60,
        double LearningRate = 0.1, double Momentum = 0.9, int TestImages = 2000)
    {
        public static Config Quick => new(Steps: 1000, EvalEvery: 100, Seeds: 1, TestImages: 1000);
        public static Config Full => new(Steps: 8000, EvalEvery: 500, Seeds: 3);
        public static Config Deep => new(Steps: 6000, EvalEvery: 500, Seeds: 1, HiddenLayers: 10);
    }

    public static readonly string[] Arms = ["none", "BatchNorm", "LayerNorm"];
    public static readonly string[] Inits = ["N(0,0.01^2)", "Glorot"];

    /// <summary>One evaluation point of one run.</summary>
    public sealed record Point(string Arm, string Init, int Seed, int Step, double TrainLoss, double TestAccuracy,
        double P15, double P50, double P85, double SaturatedFraction, double MeanSigmoidDerivative, double[] GradNorms);

    public static Sequential<float> Model(string arm, string init, Config c, Rng rng)
    {
        var layers = new List<ILayer<float>>();
        int inputs = 784;
        for (int l = 0; l < c.HiddenLayers; l++)
        {
            layers.Add(NewLinear(inputs, c.Hidden, init, rng));
            if (arm == "BatchNorm") layers.Add(new Norm<float>(new BatchNorm1d<float>(c.Hidden), c.Hidden));
            if (arm == "LayerNorm") layers.Add(new Norm<float>(new LayerNorm<float>(c.Hidden), c.Hidden));
            layers.Add(new Activation<float>(Activation<float>.Kind.Sigmoid));
            inputs = c.Hidden;
        }
        layers.Add(NewLinear(inputs, 10, init, rng));
        return new Sequential<float>(layers);
    }

    private static Linear<float> NewLinear(int i, int o, string init, Rng rng) =>
        init == "Glorot" ? new Linear<float>(i, o, Init.Glorot, rng) : new Linear<float>(i, o, Init.SmallNormal, rng, std: 0.01);

    /// <summary>What one run trains: the settings the trainer takes.</summary>
    public static TrainSettings Training(Config c) => new(c.Steps, OptimizerSettings.Sgd(c.LearningRate, c.Momentum));

    /// <summary>Training steps of a whole <see cref="Run"/>, for progress.</summary>
    public static long TotalSteps(Config c) => (long)Inits.Length * Arms.Length * c.Seeds * c.Steps;

    /// <summary>Runs every arm and initialization for each seed; reports each finished run.</summary>
    public static List<Point> Run(Config c, FashionMnist.Split train, FashionMnist.Split test, Action<string>? progress = null, ProgressMeter? meter = null)
    {
        var points = new List<Point>();
        foreach (string init in Inits)
            foreach (string arm in Arms)
                for (int seed = 1; seed <= c.Seeds; seed++)
                {
                    points.AddRange(RunOne(arm, init, seed, c, train, test, meter));
                    progress?.Invoke($"{arm}, {init}, seed {seed}");
                }
        return points;
    }

    public static List<Point> RunOne(string arm, string init, int seed, Config c, FashionMnist.Split train, FashionMnist.Split test, ProgressMeter? meter = null)
    {
        var rng = new Rng(seed);
        var model = Model(arm, init, c, rng);
        var trainer = new Trainer<float>(model, Images.Random<float>(train, c.Batch), Training(c), rng);
        var linears = model.Layers.OfType<Linear<float>>().ToList();
        var evaluation = Images.InOrder<float>(test, c.TestImages, 500);
        var points = new List<Point>();
        double lossSum = 0; int lossCount = 0;
        trainer.AfterBackward += s =>
        {
            lossSum += s.Loss; lossCount++;
            if (s.Step % c.EvalEvery != 0 && s.Step != s.Steps) return;
            double[] norms = linears.Select(l => Math.Sqrt(l.Weight.Grad.ToArray().Sum(v => (double)v * v))).ToArray();
            var (acc, p15, p50, p85, sat, deriv) = Evaluate(model, evaluation);
            points.Add(new Point(arm, init, seed, s.Step, lossSum / lossCount, acc, p15, p50, p85, sat, deriv, norms));
            lossSum = 0; lossCount = 0;
        };
        trainer.Run(meter);
        return points;
    }

    // Test accuracy in eval mode, and the statistics of the last hidden layer's sigmoid inputs.
    private static (double Acc, double P15, double P50, double P85, double Saturated, double Derivative) Evaluate(Sequential<float> model, IEvaluationBatches<float> test)
    {
        var lastSigmoid = model.Layers.OfType<Activation<float>>().Last();
        var unit0 = new List<double>();
        long saturated = 0, total = 0;
        double derivative = 0;
        var result = Evaluation.Run(model, test, 10, afterBatch: rows =>
        {
            var inputs = lastSigmoid.LastInput;
            int h = inputs.Length / rows;
            for (int i = 0; i < inputs.Length; i++)
            {
                double v = inputs[i], s = 1 / (1 + Math.Exp(-v));
                if (Math.Abs(v) > 4) saturated++;
                derivative += s * (1 - s);
                if (i % h == 0) unit0.Add(v);
            }
            total += inputs.Length;
        });
        unit0.Sort();
        double P(double q) => unit0[(int)Math.Clamp(Math.Round(q * (unit0.Count - 1)), 0, unit0.Count - 1)];
        return (result.Accuracy, P(0.15), P(0.50), P(0.85), (double)saturated / total, derivative / total);
    }

    public static ResultTable Table(IEnumerable<Point> points)
    {
        var t = new ResultTable("arm", "init", "seed", "step", "train_loss", "test_accuracy", "p15", "p50", "p85", "saturated_fraction", "mean_sigmoid_derivative", "grad_norms");
        foreach (var p in points)
            t.Add(p.Arm, p.Init, p.Seed, p.Step, p.TrainLoss, p.TestAccuracy, p.P15, p.P50, p.P85, p.SaturatedFraction, p.MeanSigmoidDerivative, p.GradNorms);
        return t;
    }

    public static string Csv(IEnumerable<Point> points) => Table(points).ToCsv();

    /// <summary>Reads the points back from what <see cref="Csv"/> wrote (columns by name; extra columns are ignored).</summary>
    public static List<Point> Parse(string csv) => ResultTable.Parse(csv).Records.Select(r => new Point(r.Text("arm"), r.Text("init"),
        r.Integer("seed"), r.Integer("step"), r.Number("train_loss"), r.Number("test_accuracy"), r.Number("p15"), r.Number("p50"), r.Number("p85"),
        r.Number("saturated_fraction"), r.Number("mean_sigmoid_derivative"), r.Numbers("grad_norms"))).ToList();

    /// <summary>The number of hidden layers the points were measured on (one weight-gradient norm per Linear layer, the output layer's included).</summary>
    /// <exception cref="ArgumentException">There are no points, or they disagree.</exception>
    public static int HiddenLayersOf(IReadOnlyList<Point> points)
    {
        var counts = points.Select(p => p.GradNorms.Length).Distinct().ToList();
        if (counts.Count != 1 || counts[0] < 2)
            throw new ArgumentException($"points must come from one network with at least one hidden layer; their gradient-norm counts are [{string.Join(", ", counts)}].", nameof(points));
        return counts[0] - 1;
    }

    /// <summary>
    /// The configuration <paramref name="points"/> were most likely run with: the full mode's (the
    /// deep mode's for its depth), with the depth, the steps, the evaluation interval and the seeds
    /// the points show. For results read from a CSV, which records no configuration.
    /// </summary>
    public static Config ConfigOf(IReadOnlyList<Point> points)
    {
        int layers = HiddenLayersOf(points);
        var mode = layers == Config.Deep.HiddenLayers ? Config.Deep : Config.Full;
        return mode with
        {
            HiddenLayers = layers, Steps = points.Max(p => p.Step), EvalEvery = points.Min(p => p.Step),
            Seeds = points.GroupBy(p => (p.Arm, p.Init)).Max(g => g.Select(p => p.Seed).Distinct().Count()),
        };
    }

    /// <summary>The network in words, e.g. "3 x 100 sigmoid".</summary>
    public static string Network(Config c) => $"{c.HiddenLayers} x {c.Hidden} sigmoid";
}

/// <summary>
/// The saturation experiment's charts: accuracy, last-layer input percentiles and saturation
/// against steps, one colour per norm arm (the lab's colours, <see cref="Plots.Charts.ArmColor"/>);
/// the percentile chart tells p15, p50 and p85 apart by line style and marker.
/// </summary>
public static class SaturationPlots
{
    private static readonly (string Name, Func<Saturation.Point, double> Of, Plots.Charts.Pattern Pattern, ScottPlot.MarkerShape Marker)[] Percentiles =
    [
        ("p15", p => p.P15, Plots.Charts.Pattern.Dashed, ScottPlot.MarkerShape.FilledTriangleDown),
        ("p50", p => p.P50, Plots.Charts.Pattern.Solid, ScottPlot.MarkerShape.FilledCircle),
        ("p85", p => p.P85, Plots.Charts.Pattern.Dotted, ScottPlot.MarkerShape.FilledTriangleUp),
    ];

    /// <summary>
    /// Writes three charts per initialization into <paramref name="dir"/> (PNG and SVG); returns their
    /// paths without extension. <paramref name="config"/> names the network in the titles and must
    /// match the points' depth.
    /// </summary>
    public static List<string> Write(IReadOnlyList<Saturation.Point> points, string dir, string prefix, Saturation.Config config)
    {
        ArgumentNullException.ThrowIfNull(config);
        int layers = Saturation.HiddenLayersOf(points);
        if (layers != config.HiddenLayers)
            throw new ArgumentException($"config has {config.HiddenLayers} hidden layers but the points come from a network of {layers}.", nameof(config));
        int seeds = points.Select(p => p.Seed).Distinct().Count();
        string network = Saturation.Network(config), mean = seeds == 1 ? "1 seed" : $"mean of {seeds} seeds";
        var written = new List<string>();
        foreach (string init in points.Select(p => p.Init).Distinct())
        {
            string tag = init.StartsWith("Glorot") ? "glorot" : "small-init";
            var arms = points.Where(p => p.Init == init).GroupBy(p => p.Arm).ToList();
            // Means over seeds, per step.
            (double[] X, double[] Y) Mean(IGrouping<string, Saturation.Point> arm, Func<Saturation.Point, double> f)
            {
                var steps = arm.GroupBy(p => p.Step).OrderBy(g => g.Key).ToList();
                return (steps.Select(g => (double)g.Key).ToArray(), steps.Select(g => g.Average(f)).ToArray());
            }
            string path = Path.Combine(dir, $"{prefix}-{tag}-accuracy");
            Plots.Charts.Lines(path, $"Test accuracy\n{network}, {init} init, {mean}", "training step", "test accuracy",
                arms.Select(a => { var (x, y) = Mean(a, p => p.TestAccuracy); return new Plots.Charts.Series(a.Key, x, y); }));
            written.Add(path);
            path = Path.Combine(dir, $"{prefix}-{tag}-percentiles");
            Plots.Charts.Lines(path, $"One last-layer sigmoid input: 15th, 50th and 85th percentiles\n{network}, {init} init, {mean}", "training step", "input to the sigmoid",
                arms.SelectMany(a => Percentiles.Select(q =>
                {
                    var (x, y) = Mean(a, q.Of);
                    return new Plots.Charts.Series($"{a.Key} {q.Name}", x, y, Arm: a.Key, Line: q.Pattern, Marker: q.Marker);
                })));
            written.Add(path);
            path = Path.Combine(dir, $"{prefix}-{tag}-saturation");
            Plots.Charts.Lines(path, $"Saturated last-layer sigmoid inputs (|x| > 4)\n{network}, {init} init, {mean}", "training step", "fraction saturated",
                arms.Select(a => { var (x, y) = Mean(a, p => p.SaturatedFraction); return new Plots.Charts.Series(a.Key, x, y); }));
            written.Add(path);
        }
        return written;
    }
}
