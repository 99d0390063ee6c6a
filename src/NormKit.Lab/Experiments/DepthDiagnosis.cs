using System.Globalization;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using NormKit.Lab.Data;
using NormKit.Lab.Results;
using NormKit.Lab.Training;

namespace NormKit.Lab.Experiments;

/// <summary>
/// Why LayerNorm does not train claim (a)'s deep network (<see cref="Saturation.Config.Deep"/>: 10
/// hidden layers of 100 sigmoid units, Linear -> norm -> sigmoid, batch 60) where BatchNorm does.
/// Each run trains the same network (<see cref="Saturation.Model"/>) with one arm and optimizer and,
/// at fixed steps, runs a probe batch (the first training images, training mode) forward and
/// backward: per hidden layer, the spread of the Linear output z (the norm's input), of the sigmoid
/// input s (the norm's output) and of the sigmoid output h, over features within a sample and over
/// samples, and the gradient norms ||dL/dz||, ||dL/ds||, ||dL/dh|| and ||dL/dW||. The arm
/// "LayerNorm, centred sigmoid" is the LayerNorm network with sigmoid(x) - 1/2 as its activation:
/// the same derivative, only the output's offset of 1/2 removed (a change of the next layer's bias),
/// the control for what the measurements point at.
/// </summary>
public static class DepthDiagnosis
{
    public const string CentredArm = "LayerNorm, centred sigmoid";

    /// <summary>The arms: the saturation experiment's three and the centred-sigmoid control.</summary>
    public static readonly string[] Arms = ["none", "BatchNorm", "LayerNorm", CentredArm];

    /// <summary>One arm trained with one optimizer.</summary>
    public sealed record Setting(string Arm, OptimizerSettings Optimizer)
    {
        /// <summary>e.g. "SGD 0.1" (momentum as configured) or "Adam 0.0001" (AdamW without weight decay is Adam).</summary>
        public string OptimizerName => Optimizer.Kind == OptimizerKind.Sgd
            ? string.Create(CultureInfo.InvariantCulture, $"SGD {Optimizer.LearningRate:G}")
            : string.Create(CultureInfo.InvariantCulture, $"Adam{(Optimizer.WeightDecay != 0 ? "W" : "")} {Optimizer.LearningRate:G}");
        public string Name => $"{Arm}, {OptimizerName}";
    }

    /// <summary>The settings of the saturation experiment's deep run: SGD at lr 0.1, momentum 0.9.</summary>
    public static OptimizerSettings Baseline => OptimizerSettings.Sgd(0.1, 0.9);

    /// <summary>
    /// The four arms at the baseline optimizer first (the charts' colours follow this order), then
    /// LayerNorm with SGD at lr 0.01 and 1 and with Adam at 1e-4 (REFERENCE.md's pilot) and 1e-3.
    /// </summary>
    public static Setting[] AllSettings =>
    [
        .. Arms.Select(a => new Setting(a, Baseline)),
        new("LayerNorm", OptimizerSettings.Sgd(0.01, 0.9)),
        new("LayerNorm", OptimizerSettings.Sgd(1, 0.9)),
        new("LayerNorm", OptimizerSettings.AdamW(1e-4)),
        new("LayerNorm", OptimizerSettings.AdamW(1e-3)),
    ];

    /// <param name="MeasureAt">Updates done when the probe runs: 0 is the initialization; each in 0..Steps, ascending.</param>
    /// <param name="ProbeImages">The first training images, one batch, the probe's forward and backward (training mode).</param>
    public sealed record Config(int Steps, int Seeds, int[] MeasureAt, Setting[] Settings, string Init = "Glorot", int HiddenLayers = 10,
        int Hidden = 100, int Batch = 60, int ProbeImages = 500, int TestImages = 2000)
    {
        public static Config Quick => new(Steps: 300, Seeds: 1, MeasureAt: [0, 100, 300], Settings: AllSettings, TestImages: 1000);
        public static Config Full => new(Steps: 2000, Seeds: 3, MeasureAt: [0, 100, 500, 1000, 2000], Settings: AllSettings);

        /// <summary>Throws for a setting the experiment cannot run, naming it, what it must be and what it was.</summary>
        public void Validate()
        {
            static void AtLeast(int value, int min, string name)
            {
                if (value < min) throw new ArgumentOutOfRangeException(name, value, $"{name} must be >= {min} but was {value}.");
            }
            AtLeast(Steps, 0, nameof(Steps));
            AtLeast(Seeds, 1, nameof(Seeds));
            AtLeast(HiddenLayers, 1, nameof(HiddenLayers));
            AtLeast(Hidden, 2, nameof(Hidden));            // a LayerNorm over one feature outputs only its bias
            AtLeast(Batch, 2, nameof(Batch));              // BatchNorm needs two samples for a variance
            AtLeast(ProbeImages, 2, nameof(ProbeImages));  // the spread over samples needs two
            AtLeast(TestImages, 1, nameof(TestImages));
            if (MeasureAt is null || MeasureAt.Length == 0)
                throw new ArgumentException("MeasureAt must name at least one step but was empty.", nameof(MeasureAt));
            for (int i = 0; i < MeasureAt.Length; i++)
                if (MeasureAt[i] < 0 || MeasureAt[i] > Steps || (i > 0 && MeasureAt[i] <= MeasureAt[i - 1]))
                    throw new ArgumentOutOfRangeException(nameof(MeasureAt), string.Join(", ", MeasureAt),
                        $"MeasureAt must be ascending steps in 0..{Steps} but was [{string.Join(", ", MeasureAt)}].");
            if (Settings is null || Settings.Length == 0)
                throw new ArgumentException("Settings must name at least one arm and optimizer but was empty.", nameof(Settings));
            foreach (var s in Settings)
                if (!Arms.Contains(s.Arm))
                    throw new ArgumentOutOfRangeException(nameof(Settings), s.Arm, $"every setting's arm must be one of {string.Join(", ", Arms)} but one was '{s.Arm}'.");
            if (!Saturation.Inits.Contains(Init))
                throw new ArgumentOutOfRangeException(nameof(Init), Init, $"Init must be one of {string.Join(", ", Saturation.Inits)} but was '{Init}'.");
        }
    }

    /// <summary>
    /// Statistics of one activation matrix (probe samples x features): percentiles of all its
    /// values; the standard deviation over the features of a sample (root mean over samples of the
    /// biased variance: what LayerNorm divides by) and over the samples of a feature (root mean
    /// over features: what BatchNorm divides by); the share of the per-sample variance that is
    /// the same for every sample (the variance over features of the mean sample); and the mean
    /// cosine similarity over pairs of different samples.
    /// </summary>
    public readonly record struct Spread(double P15, double P50, double P85, double WithinSd, double BetweenSd, double SharedShare, double Cosine)
    {
        /// <summary>Between-sample over within-sample spread: 0 when every sample is mapped to the same vector.</summary>
        public double Separation => BetweenSd / WithinSd;

        public static Spread Of<T>(ReadOnlySpan<T> values, int rows, int features) where T : unmanaged, INumberBase<T>
        {
            if (rows < 2) throw new ArgumentOutOfRangeException(nameof(rows), rows, $"rows must be >= 2 (a spread over samples) but was {rows}.");
            if (features < 2) throw new ArgumentOutOfRangeException(nameof(features), features, $"features must be >= 2 but was {features}.");
            if (values.Length != rows * features)
                throw new ArgumentException($"values must hold rows x features = {rows} x {features} = {rows * features} numbers but held {values.Length}.", nameof(values));
            var v = new double[values.Length];
            for (int i = 0; i < v.Length; i++) v[i] = double.CreateTruncating(values[i]);
            var columnMean = new double[features];
            double within = 0;
            var sum = new double[features];   // the sum of the samples scaled to unit length, for the cosines
            int unitRows = 0;
            for (int n = 0; n < rows; n++)
            {
                var row = v.AsSpan(n * features, features);
                double mean = 0, squares = 0;
                foreach (double x in row) { mean += x; squares += x * x; }
                mean /= features;
                double variance = 0;
                for (int d = 0; d < features; d++) { variance += (row[d] - mean) * (row[d] - mean); columnMean[d] += row[d]; }
                within += variance / features;
                if (squares > 0)
                {
                    double scale = 1 / Math.Sqrt(squares);
                    for (int d = 0; d < features; d++) sum[d] += row[d] * scale;
                    unitRows++;
                }
            }
            within /= rows;
            for (int d = 0; d < features; d++) columnMean[d] /= rows;
            double between = 0;
            for (int n = 0; n < rows; n++)
                for (int d = 0; d < features; d++) { double e = v[n * features + d] - columnMean[d]; between += e * e; }
            between /= (double)rows * features;
            double meanOfMeans = columnMean.Average(), shared = columnMean.Sum(m => (m - meanOfMeans) * (m - meanOfMeans)) / features;
            // Sum over pairs n != m of u_n . u_m = |sum of u|^2 - (number of u), each u of unit length.
            double cosine = unitRows < 2 ? double.NaN : (sum.Sum(s => s * s) - unitRows) / ((double)unitRows * (unitRows - 1));
            Array.Sort(v);
            double P(double q) => v[(int)Math.Round(q * (v.Length - 1))];
            return new(P(0.15), P(0.50), P(0.85), Math.Sqrt(within), Math.Sqrt(between), shared / within, cosine);
        }
    }

    /// <summary>
    /// One hidden layer (1-based) at one probe: the spread of z (Linear output = norm input), s
    /// (norm output = sigmoid input; z itself without a norm) and h (sigmoid output), the fraction of
    /// saturated sigmoid inputs (|s| &gt; 4), and the Frobenius norms over the probe batch of the
    /// mean loss's gradients with respect to z, s, h and the Linear's weight.
    /// </summary>
    public sealed record LayerStats(int Layer, Spread LinearOut, Spread SigmoidIn, Spread SigmoidOut, double Saturated,
        double GradLinearOut, double GradSigmoidIn, double GradSigmoidOut, double GradWeight)
    {
        /// <summary>||dL/dz|| / ||dL/ds||: how the norm's backward scales the gradient (1 without a norm).</summary>
        public double NormGain => GradLinearOut / GradSigmoidIn;
    }

    /// <summary>One probe of one run: the test accuracy, the mean training loss since the last probe (NaN at step 0), the probe batch's loss, every hidden layer.</summary>
    public sealed record Point(string Arm, string Optimizer, int Seed, int Step, double TestAccuracy, double TrainLoss, double ProbeLoss, IReadOnlyList<LayerStats> Layers)
    {
        public string Setting => $"{Arm}, {Optimizer}";
    }

    /// <summary>
    /// The whole layer's backward gain ||dL/dh_(l-1)|| / ||dL/dh_l|| for layers 2..L (index 0 is
    /// layer 2): what one Linear -> norm -> sigmoid block does to the gradient passing through it.
    /// </summary>
    public static double[] LayerGains(IReadOnlyList<LayerStats> layers) =>
        Enumerable.Range(1, layers.Count - 1).Select(l => layers[l - 1].GradSigmoidOut / layers[l].GradSigmoidOut).ToArray();

    /// <summary>σ(x) - 1/2: the sigmoid's derivative, with the output centred for a symmetric input.</summary>
    public sealed class CentredSigmoid<T> : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        private readonly Activation<T> _sigmoid = new(Activation<T>.Kind.Sigmoid);
        private T[] _y = [];
        private static readonly T Half = T.CreateTruncating(0.5);

        public IEnumerable<Param<T>> Parameters => [];

        public T[] Forward(T[] x, int batch, bool training)
        {
            var s = _sigmoid.Forward(x, batch, training);
            var y = Training.Buffer.Sized(ref _y, s.Length);
            TensorPrimitives.Subtract(s, Half, y);
            return y;
        }

        public T[] Backward(T[] dy) => _sigmoid.Backward(dy);
    }

    /// <summary>The saturation experiment's network for the arm (the centred arm: its LayerNorm network with <see cref="CentredSigmoid{T}"/>).</summary>
    public static Sequential<float> Model(string arm, Config c, Rng rng)
    {
        var shape = new Saturation.Config(Steps: c.Steps, EvalEvery: 1, Seeds: 1, HiddenLayers: c.HiddenLayers, Hidden: c.Hidden);
        var model = Saturation.Model(arm == CentredArm ? "LayerNorm" : arm, c.Init, shape, rng);
        return arm == CentredArm
            ? new Sequential<float>(model.Layers.Select(l => l is Activation<float> ? new CentredSigmoid<float>() : l))
            : model;
    }

    /// <summary>Training steps of a whole <see cref="Run"/>, for progress.</summary>
    public static long TotalSteps(Config c) => (long)c.Settings.Length * c.Seeds * c.Steps;

    /// <summary>Runs every setting for each seed; reports each finished run.</summary>
    public static List<Point> Run(Config c, FashionMnist.Split train, FashionMnist.Split test, Action<string>? progress = null, ProgressMeter? meter = null)
    {
        c.Validate();
        var points = new List<Point>();
        foreach (var s in c.Settings)
            for (int seed = 1; seed <= c.Seeds; seed++)
            {
                points.AddRange(RunOne(s, seed, c, train, test, meter));
                progress?.Invoke($"{s.Name}, seed {seed}");
            }
        return points;
    }

    /// <summary>
    /// One run. The seed draws the weights and then the batches, as in <see cref="Saturation.RunOne"/>,
    /// so the baseline arms train exactly as there; the probes draw nothing and leave the model as they found it.
    /// </summary>
    public static List<Point> RunOne(Setting setting, int seed, Config c, FashionMnist.Split train, FashionMnist.Split test, ProgressMeter? meter = null)
    {
        c.Validate();
        var rng = new Rng(seed);
        var model = Model(setting.Arm, c, rng);
        var trainer = new Trainer<float>(model, Images.Random<float>(train, c.Batch), new TrainSettings(c.Steps, setting.Optimizer), rng);
        var probeBatch = Images.InOrder<float>(train, c.ProbeImages, c.ProbeImages);
        var probeX = new float[probeBatch.Inputs];
        var probeY = new byte[probeBatch.Rows];
        probeBatch.Get(0, probeX, probeY);
        var evaluation = Images.InOrder<float>(test, c.TestImages, Math.Min(500, c.TestImages));
        var points = new List<Point>();
        int last = 0;
        void Probe(int step)
        {
            var (loss, layers) = Measure(model, probeX, probeY, probeBatch.Rows, 10);
            double train = step == 0 ? double.NaN : trainer.Losses.AsSpan(last, step - last).ToArray().Average();
            points.Add(new Point(setting.Arm, setting.OptimizerName, seed, step, Evaluation.Run(model, evaluation, 10).Accuracy, train, loss, layers));
            last = step;
        }
        if (c.MeasureAt[0] == 0) Probe(0);
        for (int step = 1; step <= c.Steps; step++)
        {
            double loss = trainer.Step(step);
            meter?.Advance(loss, c.Batch);
            if (Array.BinarySearch(c.MeasureAt, step) >= 0) Probe(step);
        }
        return points;
    }

    // The positions in the model of one hidden layer: its Linear, its norm (-1 without one), its
    // activation, and the layer after the activation (whose input gradient is dL/dh).
    private readonly record struct Block(int Linear, int Norm, int Activation);

    private static List<Block> Blocks<T>(Sequential<T> model) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var blocks = new List<Block>();
        var layers = model.Layers;
        for (int i = 0; i < layers.Count; i++)
        {
            if (layers[i] is not (Activation<T> or CentredSigmoid<T>)) continue;
            int linear = i - 1;
            while (linear >= 0 && layers[linear] is not Linear<T>) linear--;
            int norm = Enumerable.Range(linear + 1, Math.Max(0, i - linear - 1)).Where(k => layers[k] is Norm<T>).DefaultIfEmpty(-1).First();
            if (linear < 0 || i == layers.Count - 1 || (blocks.Count > 0 && linear <= blocks[^1].Activation))
                throw new ArgumentException($"the model must be blocks of Linear -> [norm] -> activation followed by a layer; the activation at layer {i} is not.", nameof(model));
            blocks.Add(new Block(linear, norm, i));
        }
        if (blocks.Count == 0) throw new ArgumentException("the model must have at least one activation; it had none.", nameof(model));
        return blocks;
    }

    /// <summary>
    /// One probe: the batch forward in training mode and backward from the mean cross-entropy,
    /// recording every hidden layer. The norms' buffers (BatchNorm's running statistics) are put
    /// back and the parameter gradients cleared afterwards, so training goes on as without the
    /// probe (BatchNorm's NumBatchesTracked still counts the probe; at momentum 0.1 it is unused).
    /// The parameter gradients must be clear before (as after an optimizer step).
    /// </summary>
    public static (double Loss, List<LayerStats> Layers) Measure<T>(Sequential<T> model, T[] x, byte[] labels, int rows, int classes)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var blocks = Blocks(model);
        var buffers = model.Layers.OfType<Norm<T>>().SelectMany(n => n.Layer.Tensors).Where(t => !t.IsParameter)
            .Select(t => (Tensor: t, Saved: Span(t.Value).ToArray())).ToList();
        var outputs = new T[model.Layers.Count][];
        var logits = model.Forward(x, rows, training: true, (i, y) => outputs[i] = y.ToArray());
        var lossGradient = new T[logits.Length];
        double loss = CrossEntropy.LossAndGradient<T>(logits, labels, rows, classes, lossGradient);
        var inputGradients = new double[model.Layers.Count];   // ||dL/d(input of layer i)||
        model.Backward(lossGradient, (i, dx) => inputGradients[i] = Math.Sqrt(double.CreateTruncating(TensorPrimitives.SumOfSquares<T>(dx))));
        var stats = new List<LayerStats>();
        foreach (var (b, l) in blocks.Select((b, l) => (b, l)))
        {
            var weight = ((Linear<T>)model.Layers[b.Linear]).Weight.Grad;
            int features = outputs[b.Linear].Length / rows;
            var s = outputs[b.Activation - 1];
            int saturated = 0;
            foreach (T v in s) if (T.Abs(v) > T.CreateTruncating(4)) saturated++;
            stats.Add(new LayerStats(l + 1, Spread.Of<T>(outputs[b.Linear], rows, features), Spread.Of<T>(s, rows, features),
                Spread.Of<T>(outputs[b.Activation], rows, features), (double)saturated / s.Length,
                inputGradients[b.Linear + 1], inputGradients[b.Activation], inputGradients[b.Activation + 1],
                Math.Sqrt(double.CreateTruncating(TensorPrimitives.SumOfSquares<T>(weight)))));
        }
        foreach (var p in model.Parameters) p.Grad.Clear();
        foreach (var (t, saved) in buffers) saved.CopyTo(Span(t.Value));
        return (loss, stats);
    }

    private static Span<T> Span<T>(System.Numerics.Tensors.Tensor<T> t) where T : unmanaged =>
        MemoryMarshal.CreateSpan(ref t.GetPinnableReference(), (int)t.FlattenedLength);

    /// <summary>One row per probe: the run's accuracy and losses.</summary>
    public static ResultTable Table(IEnumerable<Point> points)
    {
        var t = new ResultTable("arm", "optimizer", "seed", "step", "test_accuracy", "train_loss", "probe_loss");
        foreach (var p in points) t.Add(p.Arm, p.Optimizer, p.Seed, p.Step, p.TestAccuracy, p.TrainLoss, p.ProbeLoss);
        return t;
    }

    /// <summary>
    /// Reads the probes back from what <see cref="Table"/> wrote (columns by name): accuracy and
    /// losses only; the per-layer statistics stay in their own file, so <see cref="Point.Layers"/> is empty.
    /// </summary>
    public static List<Point> Parse(string csv) => ResultTable.Parse(csv).Records.Select(r => new Point(r.Text("arm"), r.Text("optimizer"), r.Integer("seed"),
        r.Integer("step"), r.Number("test_accuracy"), r.Number("train_loss"), r.Number("probe_loss"), [])).ToList();

    /// <summary>One row per probe and hidden layer: the spreads of z, s and h and the gradient norms.</summary>
    public static ResultTable LayerTable(IEnumerable<Point> points)
    {
        string[] spread = ["p15", "p50", "p85", "within_sd", "between_sd", "shared_share", "cosine"];
        var t = new ResultTable([
            "arm", "optimizer", "seed", "step", "layer",
            .. new[] { "z", "s", "h" }.SelectMany(v => spread.Select(c => $"{v}_{c}")),
            "saturated_fraction", "grad_z", "grad_s", "grad_h", "grad_weight"]);
        static object[] Cells(Spread s) => [s.P15, s.P50, s.P85, s.WithinSd, s.BetweenSd, s.SharedShare, s.Cosine];
        foreach (var p in points)
            foreach (var l in p.Layers)
                t.Add([p.Arm, p.Optimizer, p.Seed, p.Step, l.Layer, .. Cells(l.LinearOut), .. Cells(l.SigmoidIn), .. Cells(l.SigmoidOut),
                    l.Saturated, l.GradLinearOut, l.GradSigmoidIn, l.GradSigmoidOut, l.GradWeight]);
        return t;
    }

    /// <summary>
    /// The claimed differences, by the lab's rule (<see cref="Verdict"/>): every other setting's
    /// final test accuracy against LayerNorm at the baseline optimizer, and BatchNorm's first-layer
    /// weight gradient (log10) and mean layer gain at step 0 against LayerNorm's.
    /// </summary>
    public static List<Comparison> Verdicts(IReadOnlyList<Point> points)
    {
        var result = new List<Comparison>();
        string baseline = new Setting("LayerNorm", Baseline).Name;
        var runs = points.GroupBy(p => p.Setting).ToDictionary(g => g.Key, g => g.ToList());
        if (!runs.TryGetValue(baseline, out var ln)) return result;
        int end = ln.Max(p => p.Step);
        IEnumerable<double> Final(List<Point> r) => r.Where(p => p.Step == end).Select(p => p.TestAccuracy);
        foreach (var (name, r) in runs.Where(kv => kv.Key != baseline))
            result.Add(Verdict.Higher($"{name}: test accuracy at step {end} higher than {baseline}", Final(r), Final(ln)));
        string bn = new Setting("BatchNorm", Baseline).Name;
        if (runs.TryGetValue(bn, out var b) && ln.Any(p => p.Step == 0 && p.Layers.Count > 0))
        {
            IEnumerable<double> Start(List<Point> r, Func<Point, double> f) => r.Where(p => p.Step == 0).Select(f);
            result.Add(Verdict.Higher("BatchNorm: log10 first-layer weight gradient at step 0 higher than LayerNorm's",
                Start(b, p => Math.Log10(p.Layers[0].GradWeight)), Start(ln, p => Math.Log10(p.Layers[0].GradWeight))));
            result.Add(Verdict.Higher("BatchNorm: geometric-mean layer gain at step 0 higher than LayerNorm's",
                Start(b, p => GeometricMean(LayerGains(p.Layers))), Start(ln, p => GeometricMean(LayerGains(p.Layers)))));
        }
        return result;
    }

    public static double GeometricMean(IEnumerable<double> values)
    {
        var v = values.ToList();
        return v.Count == 0 ? double.NaN : Math.Exp(v.Average(Math.Log));
    }
}

/// <summary>
/// One setting of <see cref="DepthDiagnosis"/> over its seeds: the final test accuracy and
/// training loss; at step 0 and at the last step the first layer's weight gradient (log10), the
/// geometric-mean layer gain (<see cref="DepthDiagnosis.LayerGains"/>), the last hidden layer's
/// sigmoid-input separation (between-sample over within-sample spread) and the shared share of its
/// Linear output; runs whose probe loss ended in NaN.
/// </summary>
public sealed record DepthSummary(string Setting, SeedStats TestAccuracy, SeedStats TrainLoss,
    SeedStats Log10FirstGradStart, SeedStats Log10FirstGradEnd, SeedStats GainStart, SeedStats GainEnd,
    SeedStats SeparationStart, SeedStats SeparationEnd, SeedStats SharedStart, SeedStats SharedEnd, int Diverged)
{
    /// <summary>One summary per setting, in the order the points first name them.</summary>
    public static List<DepthSummary> Of(IEnumerable<DepthDiagnosis.Point> points) =>
        points.GroupBy(p => p.Setting).Select(g =>
        {
            int first = g.Min(p => p.Step), last = g.Max(p => p.Step);
            var start = g.Where(p => p.Step == first).ToList();
            var end = g.Where(p => p.Step == last).ToList();
            SeedStats S(List<DepthDiagnosis.Point> at, Func<DepthDiagnosis.Point, double> f) => SeedStats.Of(at.Select(f));
            double Gain(DepthDiagnosis.Point p) => DepthDiagnosis.GeometricMean(DepthDiagnosis.LayerGains(p.Layers));
            return new DepthSummary(g.Key, S(end, p => p.TestAccuracy), S(end, p => p.TrainLoss),
                S(start, p => Math.Log10(p.Layers[0].GradWeight)), S(end, p => Math.Log10(p.Layers[0].GradWeight)),
                S(start, Gain), S(end, Gain),
                S(start, p => p.Layers[^1].SigmoidIn.Separation), S(end, p => p.Layers[^1].SigmoidIn.Separation),
                S(start, p => p.Layers[^1].LinearOut.SharedShare), S(end, p => p.Layers[^1].LinearOut.SharedShare),
                end.Count(p => !double.IsFinite(p.ProbeLoss)));
        }).ToList();
}

/// <summary>The diagnosis's charts; series in the order of the settings, so each setting keeps its colour.</summary>
public static class DepthDiagnosisPlots
{
    /// <summary>Writes the charts into <paramref name="dir"/> (PNG and SVG); returns their paths without extension.</summary>
    public static List<string> Write(IReadOnlyList<DepthDiagnosis.Point> points, string dir, string prefix = "depth")
    {
        var written = new List<string>();
        var settings = points.GroupBy(p => p.Setting).ToList();
        int first = points.Min(p => p.Step), last = points.Max(p => p.Step);
        int layers = points[0].Layers.Count;
        // Layers as categories: x = l - 1 carries the label "l", so the axis shows whole layers only.
        double[] layerAxis = Enumerable.Range(0, layers).Select(l => (double)l).ToArray();
        string[] layerTicks = Enumerable.Range(1, layers).Select(l => l.ToString(CultureInfo.InvariantCulture)).ToArray();

        // Per layer, the mean over seeds at one step; log10 before the mean for gradients (a geometric mean).
        Plots.Charts.Series PerLayer(IGrouping<string, DepthDiagnosis.Point> s, int step, Func<IReadOnlyList<DepthDiagnosis.LayerStats>, double[]> f, bool arm = false)
        {
            var values = s.Where(p => p.Step == step).Select(p => f(p.Layers)).ToList();
            return new(arm ? s.First().Arm : s.Key, layerAxis[(layers - values[0].Length)..],
                Enumerable.Range(0, values[0].Length).Select(i => values.Average(v => v[i])).ToArray());
        }
        Func<IReadOnlyList<DepthDiagnosis.LayerStats>, double[]> Each(Func<DepthDiagnosis.LayerStats, double> f) => l => l.Select(f).ToArray();
        // At step 0 the optimizer has not acted: one series per arm (its first setting, so it keeps that setting's colour).
        var starts = settings.GroupBy(s => s.First().Arm).Select(a => a.First()).ToList();
        string When(int step) => step == 0 ? "at initialization" : $"after {step} steps";

        void Chart(string name, string title, string yLabel, IEnumerable<Plots.Charts.Series> series, string xLabel = "hidden layer (1 = next to the input)")
        {
            string path = Path.Combine(dir, $"{prefix}-{name}");
            Plots.Charts.Lines(path, title, xLabel, yLabel, series, width: 1000, xTicks: xLabel.StartsWith("hidden layer") ? Plots.Charts.Ticks.Categories(layerTicks) : null);
            written.Add(path);
        }

        foreach (var (step, tag, group) in new[] { (first, "start", starts), (last, "end", settings) })
        {
            bool arm = step == first;
            Chart($"weight-gradients-{tag}", $"Weight gradient per layer {When(step)} (mean of log10 over seeds)", "log10 ||dL/dW||",
                group.Select(s => PerLayer(s, step, Each(l => Math.Log10(l.GradWeight)), arm)));
            Chart($"gradients-{tag}", $"Gradient at each sigmoid output {When(step)} (mean of log10 over seeds)", "log10 ||dL/dh||",
                group.Select(s => PerLayer(s, step, Each(l => Math.Log10(l.GradSigmoidOut)), arm)));
            Chart($"separation-{tag}", $"How different the samples' sigmoid inputs are, {When(step)}", "between-sample sd / within-sample sd of s",
                group.Select(s => PerLayer(s, step, Each(l => l.SigmoidIn.Separation), arm)));
            Chart($"shared-{tag}", $"Linear output: share of a sample's spread common to all samples, {When(step)}", "shared share of the within-sample variance of z",
                group.Select(s => PerLayer(s, step, Each(l => l.LinearOut.SharedShare), arm)));
        }
        Chart("gain-start", "Backward gain of each Linear -> norm -> sigmoid block at initialization", "||dL/dh(l-1)|| / ||dL/dh(l)||",
            starts.Select(s => PerLayer(s, first, DepthDiagnosis.LayerGains, arm: true)));
        Chart("norm-gain-start", "Backward gain of the norm layer alone at initialization", "||dL/dz|| / ||dL/ds|| (1 without a norm)",
            starts.Select(s => PerLayer(s, first, Each(l => l.NormGain), arm: true)));
        Chart("accuracy-steps", "Test accuracy against training steps (mean over seeds)", "test accuracy",
            settings.Select(s =>
            {
                var steps = s.GroupBy(p => p.Step).OrderBy(g => g.Key).ToList();
                return new Plots.Charts.Series(s.Key, steps.Select(g => (double)g.Key).ToArray(), steps.Select(g => g.Average(p => p.TestAccuracy)).ToArray());
            }), xLabel: "training step");

        string bars = Path.Combine(dir, $"{prefix}-accuracy");
        var final = settings.Select(s => SeedStats.Of(s.Where(p => p.Step == last).Select(p => p.TestAccuracy))).ToList();
        Plots.Charts.Bars(bars, $"Test accuracy after {last} steps, {layers} hidden sigmoid layers (mean +- sd over seeds)", "test accuracy",
            settings.Select(s => s.Key.Replace(", ", "\n")).ToArray(), final.Select(f => f.Mean).ToArray(), final.Select(f => f.Sd).ToArray(), width: 1100);
        written.Add(bars);
        return written;
    }
}
