using NormKit.Lab.Data;
using NormKit.Lab.Experiments;
using NormKit.Lab.Training;
using NormKit.Layers;

namespace NormKit.Lab.Tests;

/// <summary>
/// The depth diagnosis: its probe's gradient norms against finite differences, its spread
/// statistics on hand-computed matrices, the collapse it measures at initialization, and a short
/// run's shape, finiteness and independence of when it probes.
/// </summary>
public sealed class DepthDiagnosisTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("normkit-depth-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // Blocks: Linear 0 -> LayerNorm 1 -> sigmoid 2; Linear 3 -> BatchNorm 4 -> centred sigmoid 5;
    // Linear 6 -> sigmoid 7 (no norm); classifier 8.
    private static Sequential<double> Model(Rng rng) => new(
    [
        new Linear<double>(6, 5, Init.Glorot, rng),
        new Norm<double>(new LayerNorm<double>(5), 5),
        new Activation<double>(Activation<double>.Kind.Sigmoid),
        new Linear<double>(5, 5, Init.Glorot, rng),
        new Norm<double>(new BatchNorm1d<double>(5), 5),
        new DepthDiagnosis.CentredSigmoid<double>(),
        new Linear<double>(5, 4, Init.Glorot, rng),
        new Activation<double>(Activation<double>.Kind.Sigmoid),
        new Linear<double>(4, 3, Init.Glorot, rng),
    ]);

    [Fact]
    public void Probe_gradient_norms_match_finite_differences()
    {
        var rng = new Rng(11);
        var model = Model(rng);
        foreach (var p in model.Parameters) for (int i = 0; i < p.Value.Length; i++) p.Value[i] += 0.3 * rng.Normal();
        const int rows = 4, classes = 3;
        var x = Enumerable.Range(0, rows * 6).Select(_ => rng.Normal()).ToArray();
        var labels = new byte[] { 0, 2, 1, 2 };
        var outputs = new double[model.Layers.Count][];
        model.Forward(x, rows, training: true, (i, y) => outputs[i] = y.ToArray());
        var (loss, layers) = DepthDiagnosis.Measure(model, x, labels, rows, classes);

        Assert.Equal(3, layers.Count);
        Assert.Equal([1, 2, 3], layers.Select(l => l.Layer));
        // ||dL/d(input of layer k)|| by central differences through the layers from k on.
        double Numeric(int k)
        {
            var rest = new Sequential<double>(model.Layers.Skip(k));
            var a = outputs[k - 1].ToArray();
            double Loss() => CrossEntropy.LossAndGradient<double>(rest.Forward(a, rows, true), labels, rows, classes, new double[rows * classes]);
            double squares = 0;
            for (int i = 0; i < a.Length; i++)
            {
                double keep = a[i];
                a[i] = keep + 1e-6; double up = Loss();
                a[i] = keep - 1e-6; double down = Loss();
                a[i] = keep;
                squares += Math.Pow((up - down) / 2e-6, 2);
            }
            return Math.Sqrt(squares);
        }
        double WholeLoss() => CrossEntropy.LossAndGradient<double>(model.Forward(x, rows, true), labels, rows, classes, new double[rows * classes]);
        double NumericWeight(int k)
        {
            var w = ((Linear<double>)model.Layers[k]).Weight.Value;
            double squares = 0;
            for (int i = 0; i < w.Length; i++)
            {
                double keep = w[i];
                w[i] = keep + 1e-6; double up = WholeLoss();
                w[i] = keep - 1e-6; double down = WholeLoss();
                w[i] = keep;
                squares += Math.Pow((up - down) / 2e-6, 2);
            }
            return Math.Sqrt(squares);
        }
        // Central differences at step 1e-6 in double are good to about 1e-9 of a gradient of this
        // size; 1e-6 relative still tells every position apart (they differ by far more).
        void Near(double numeric, double measured, string what) =>
            Assert.True(Math.Abs(numeric - measured) <= 1e-6 * numeric, $"{what}: probe {measured}, finite differences {numeric}");
        (int Linear, int Norm, int Activation)[] blocks = [(0, 1, 2), (3, 4, 5), (6, -1, 7)];
        foreach (var ((linear, norm, activation), l) in blocks.Select((b, l) => (b, l)))
        {
            Near(Numeric(linear + 1), layers[l].GradLinearOut, $"layer {l + 1} dL/dz");
            Near(Numeric(activation), layers[l].GradSigmoidIn, $"layer {l + 1} dL/ds");
            Near(Numeric(activation + 1), layers[l].GradSigmoidOut, $"layer {l + 1} dL/dh");
            Near(NumericWeight(linear), layers[l].GradWeight, $"layer {l + 1} dL/dW");
            if (norm < 0) Assert.Equal(layers[l].GradLinearOut, layers[l].GradSigmoidIn);
            Assert.Equal(DepthDiagnosis.Spread.Of<double>(outputs[activation - 1], rows, layers[l].Layer == 3 ? 4 : 5), layers[l].SigmoidIn);
        }
        Assert.Equal(WholeLoss(), loss, 12);
        Assert.NotEqual(layers[0].GradLinearOut, layers[0].GradSigmoidIn);   // the LayerNorm's Jacobian is measured, not skipped
    }

    [Fact]
    public void The_probe_leaves_the_model_as_it_found_it()
    {
        var rng = new Rng(12);
        var model = Model(rng);
        var x = Enumerable.Range(0, 4 * 6).Select(_ => rng.Normal()).ToArray();
        var labels = new byte[] { 0, 1, 2, 0 };
        var bn = (BatchNorm1d<double>)((Norm<double>)model.Layers[4]).Layer;
        var before = (bn.RunningMean!.ToArray(), bn.RunningVar!.ToArray());
        var first = DepthDiagnosis.Measure(model, x, labels, 4, 3);
        Assert.Equal(before.Item1, bn.RunningMean!.ToArray());
        Assert.Equal(before.Item2, bn.RunningVar!.ToArray());
        Assert.All(model.Parameters, p => Assert.All(p.Grad.ToArray(), g => Assert.Equal(0.0, g)));
        var second = DepthDiagnosis.Measure(model, x, labels, 4, 3);
        Assert.Equal(first.Loss, second.Loss);
        Assert.Equal(first.Layers, second.Layers);
    }

    [Fact]
    public void Spread_of_hand_computed_matrices()
    {
        // Two samples that are each other's negative: the mean sample is 0 (nothing shared), the
        // spreads over features and over samples are both 1, the cosine is -1.
        var opposite = DepthDiagnosis.Spread.Of<double>([1, -1, -1, 1], 2, 2);
        Assert.Equal(1, opposite.WithinSd, 12);
        Assert.Equal(1, opposite.BetweenSd, 12);
        Assert.Equal(0, opposite.SharedShare, 12);
        Assert.Equal(-1, opposite.Cosine, 12);
        // Three equal samples: all of each sample's spread is shared, none between samples.
        var same = DepthDiagnosis.Spread.Of<float>([1, 3, 1, 3, 1, 3], 3, 2);
        Assert.Equal(1, same.WithinSd, 12);
        Assert.Equal(0, same.BetweenSd, 12);
        Assert.Equal(1, same.SharedShare, 12);
        Assert.Equal(1, same.Cosine, 12);
        Assert.Equal(0, same.Separation, 12);
        // Samples [0, 2] and [2, 4]: within variance 1 each; the mean sample [1, 3] has variance 1
        // over its features (all shared); over samples each feature has variance 1.
        var shifted = DepthDiagnosis.Spread.Of<double>([0, 2, 2, 4], 2, 2);
        Assert.Equal(1, shifted.SharedShare, 12);
        Assert.Equal(1, shifted.BetweenSd, 12);
        Assert.Equal((0 * 2 + 2 * 4) / (2 * Math.Sqrt(20)), shifted.Cosine, 12);
        // Percentiles at the nearest rank of 100 values 0..99.
        var ramp = DepthDiagnosis.Spread.Of<double>(Enumerable.Range(0, 100).Select(i => (double)i).ToArray(), 50, 2);
        Assert.Equal((15, 50, 84), (ramp.P15, ramp.P50, ramp.P85));

        Assert.Equal("rows", Assert.Throws<ArgumentOutOfRangeException>(() => DepthDiagnosis.Spread.Of<double>([1, 2], 1, 2)).ParamName);
        Assert.Equal("features", Assert.Throws<ArgumentOutOfRangeException>(() => DepthDiagnosis.Spread.Of<double>([1, 2], 2, 1)).ParamName);
        var wrong = Assert.Throws<ArgumentException>(() => DepthDiagnosis.Spread.Of<double>([1, 2, 3], 2, 2));
        Assert.Equal("values", wrong.ParamName);
        Assert.Contains("held 3", wrong.Message);
    }

    [Fact]
    public void The_centred_sigmoid_is_the_sigmoid_less_a_half_with_the_same_derivative()
    {
        var x = new double[] { -5, -1, 0, 0.5, 3, 8 };
        var centred = new DepthDiagnosis.CentredSigmoid<double>();
        var sigmoid = new Activation<double>(Activation<double>.Kind.Sigmoid);
        var y = centred.Forward(x, 2, true);
        var s = sigmoid.Forward(x, 2, true);
        for (int i = 0; i < x.Length; i++) Assert.Equal(1 / (1 + Math.Exp(-x[i])) - 0.5, y[i], 15);
        var dy = new double[] { 1, -2, 0.5, 3, -1, 2 };
        Assert.Equal(sigmoid.Backward(dy), centred.Backward(dy));
        Assert.NotEqual(s, y);
    }

    private static readonly DepthDiagnosis.Config Start = new(Steps: 0, Seeds: 1, MeasureAt: [0],
        Settings: [new("BatchNorm", DepthDiagnosis.Baseline), new("LayerNorm", DepthDiagnosis.Baseline), new(DepthDiagnosis.CentredArm, DepthDiagnosis.Baseline)],
        ProbeImages: 200, TestImages: 100);

    [Fact]
    public void At_initialization_LayerNorm_maps_every_sample_to_one_vector_and_BatchNorm_does_not()
    {
        // Stated: 10 x 100 sigmoid, Glorot, the first 200 training images of the shipped batch. At
        // the last layer LayerNorm's sigmoid inputs differ between samples by less than 1% of
        // their spread over features (the full set measured 1e-4), BatchNorm's by more than 90%;
        // per layer LayerNorm passes less than half of the gradient back (measured 0.38),
        // BatchNorm more than 0.9 (measured 1.05), so its first layer's weight gradient is over
        // 100 times smaller. With the centred sigmoid LayerNorm keeps more than 30% (measured 0.72).
        var (train, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var points = DepthDiagnosis.Run(Start, train, test);
        var (bn, ln, centred) = (points[0].Layers, points[1].Layers, points[2].Layers);
        Assert.True(ln[^1].SigmoidIn.Separation < 0.01, $"LayerNorm separation {ln[^1].SigmoidIn.Separation}");
        Assert.True(ln[^1].LinearOut.SharedShare > 0.99, $"LayerNorm shared share {ln[^1].LinearOut.SharedShare}");
        Assert.True(bn[^1].SigmoidIn.Separation > 0.9, $"BatchNorm separation {bn[^1].SigmoidIn.Separation}");
        Assert.True(centred[^1].SigmoidIn.Separation > 0.3, $"centred separation {centred[^1].SigmoidIn.Separation}");
        double Gain(IReadOnlyList<DepthDiagnosis.LayerStats> l) => DepthDiagnosis.GeometricMean(DepthDiagnosis.LayerGains(l));
        Assert.InRange(Gain(ln), 0.1, 0.5);
        Assert.True(Gain(bn) > 0.9, $"BatchNorm gain {Gain(bn)}");
        Assert.True(ln[0].GradWeight * 100 < bn[0].GradWeight, $"first-layer weight gradients {ln[0].GradWeight} vs {bn[0].GradWeight}");
        Assert.All(points, p => Assert.True(double.IsNaN(p.TrainLoss)));
    }

    private static readonly DepthDiagnosis.Config Short = new(Steps: 20, Seeds: 1, MeasureAt: [0, 10, 20],
        Settings: [new("BatchNorm", DepthDiagnosis.Baseline), new("LayerNorm", OptimizerSettings.AdamW(1e-3))],
        HiddenLayers: 3, ProbeImages: 60, TestImages: 100);

    [Fact]
    public void A_short_run_has_a_point_per_probe_finite_values_tables_and_charts()
    {
        var (train, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var points = DepthDiagnosis.Run(Short, train, test);
        Assert.Equal(6, points.Count);
        Assert.Equal([0, 10, 20, 0, 10, 20], points.Select(p => p.Step));
        Assert.Equal(["SGD 0.1", "Adam 0.001"], points.Select(p => p.Optimizer).Distinct());
        foreach (var p in points)
        {
            Assert.Equal(3, p.Layers.Count);
            Assert.True(double.IsFinite(p.ProbeLoss) && double.IsFinite(p.TestAccuracy));
            Assert.Equal(p.Step == 0, double.IsNaN(p.TrainLoss));
            foreach (var l in p.Layers)
                foreach (double v in new[] { l.GradLinearOut, l.GradSigmoidIn, l.GradSigmoidOut, l.GradWeight, l.Saturated,
                    l.LinearOut.WithinSd, l.LinearOut.BetweenSd, l.LinearOut.SharedShare, l.SigmoidIn.Cosine, l.SigmoidOut.P85 })
                    Assert.True(double.IsFinite(v), $"{p.Setting} step {p.Step} layer {l.Layer}");
        }
        var runs = DepthDiagnosis.Table(points).ToCsv().TrimEnd().Split('\n');
        Assert.Equal("arm,optimizer,seed,step,test_accuracy,train_loss,probe_loss", runs[0]);
        Assert.Equal(7, runs.Length);
        var layers = DepthDiagnosis.LayerTable(points).ToCsv().TrimEnd().Split('\n');
        Assert.StartsWith("arm,optimizer,seed,step,layer,z_p15,", layers[0]);
        Assert.EndsWith(",saturated_fraction,grad_z,grad_s,grad_h,grad_weight", layers[0]);
        Assert.Equal(1 + 6 * 3, layers.Length);
        Assert.All(layers.Skip(1), row => Assert.Equal(layers[0].Split(',').Length, row.Split(',').Length));

        var charts = DepthDiagnosisPlots.Write(points, _dir);
        Assert.Equal(12, charts.Count);
        foreach (var c in charts)
        {
            Assert.True(new FileInfo(c + ".png").Length > 5000, c);
            Assert.Contains("LayerNorm", File.ReadAllText(c + ".svg"));   // every chart's legend or labels name the arms
        }
        var s = DepthSummary.Of(points);
        Assert.Equal(["BatchNorm, SGD 0.1", "LayerNorm, Adam 0.001"], s.Select(x => x.Setting));
        Assert.Equal(points[2].TestAccuracy, s[0].TestAccuracy.Mean);
    }

    [Fact]
    public void Probing_does_not_change_the_training()
    {
        // The probes draw no random numbers and restore BatchNorm's running statistics: a run
        // probed three times ends exactly where one probed only at its end does.
        var (train, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var setting = new DepthDiagnosis.Setting("BatchNorm", DepthDiagnosis.Baseline);
        var often = DepthDiagnosis.RunOne(setting, 3, Short, train, test);
        var once = DepthDiagnosis.RunOne(setting, 3, Short with { MeasureAt = [20] }, train, test);
        Assert.Equal(DepthDiagnosis.LayerTable([often[^1]]).ToCsv(), DepthDiagnosis.LayerTable([once[^1]]).ToCsv());
        Assert.Equal(often[^1].TestAccuracy, once[^1].TestAccuracy);
        Assert.Equal(often[^1].ProbeLoss, once[^1].ProbeLoss);
        var other = DepthDiagnosis.RunOne(setting, 4, Short with { MeasureAt = [20] }, train, test);
        Assert.NotEqual(once[^1].ProbeLoss, other[^1].ProbeLoss);
    }

    private static DepthDiagnosis.Point P(string arm, int seed, int step, double accuracy, params double[] gradH)
    {
        var spread = new DepthDiagnosis.Spread(0, 0, 0, 1, 0.5, 0.2, 0);
        return new(arm, "SGD 0.1", seed, step, accuracy, 1, 1,
            gradH.Select((g, i) => new DepthDiagnosis.LayerStats(i + 1, spread, spread, spread, 0, g, g, g, 10 * g)).ToList());
    }

    [Fact]
    public void Layer_gains_summaries_and_verdicts()
    {
        Assert.Equal([2.0, 4.0], DepthDiagnosis.LayerGains(P("none", 1, 0, 0, 8, 4, 1).Layers));
        Assert.Equal(4, DepthDiagnosis.GeometricMean([2, 8]), 12);
        var points = new[]
        {
            P("LayerNorm", 1, 0, 0.10, 0.001, 1), P("LayerNorm", 2, 0, 0.10, 0.002, 1), P("LayerNorm", 3, 0, 0.10, 0.001, 1),
            P("LayerNorm", 1, 50, 0.10, 0.001, 1), P("LayerNorm", 2, 50, 0.11, 0.002, 1), P("LayerNorm", 3, 50, 0.09, 0.001, 1),
            P("BatchNorm", 1, 0, 0.10, 1, 1), P("BatchNorm", 2, 0, 0.10, 2, 1), P("BatchNorm", 3, 0, 0.10, 1, 1),
            P("BatchNorm", 1, 50, 0.80, 1, 1), P("BatchNorm", 2, 50, 0.82, 2, 1), P("BatchNorm", 3, 50, 0.84, 1, 1),
        };
        var s = DepthSummary.Of(points);
        Assert.Equal(0.82, s[1].TestAccuracy.Mean, 12);
        Assert.Equal(0.02, s[1].TestAccuracy.Sd, 12);
        Assert.Equal(Math.Log10(10 * 0.001), s[0].Log10FirstGradEnd.Mean - (Math.Log10(2) / 3), 12);
        var v = DepthDiagnosis.Verdicts(points);
        Assert.Equal(3, v.Count);
        Assert.Equal(Outcome.Holds, v[0].Outcome);   // BatchNorm's accuracy
        Assert.Equal(Outcome.Holds, v[1].Outcome);   // its first-layer weight gradient
        Assert.Equal(Outcome.Holds, v[2].Outcome);   // its layer gain: 1, 2, 1 vs 0.001, 0.002, 0.001
        Assert.Contains("BatchNorm, SGD 0.1", v[0].Claim);
    }

    [Fact]
    public void Bad_configurations_name_the_setting_expected_and_actual()
    {
        var ok = Short;
        ok.Validate();
        void Rejects<TException>(DepthDiagnosis.Config c, string parameter, string text) where TException : ArgumentException
        {
            var e = Assert.Throws<TException>(c.Validate);
            Assert.Equal(parameter, e.ParamName);
            Assert.Contains(text, e.Message);
        }
        Rejects<ArgumentOutOfRangeException>(ok with { Steps = -1 }, "Steps", "must be >= 0 but was -1");
        Rejects<ArgumentOutOfRangeException>(ok with { Seeds = 0 }, "Seeds", "must be >= 1 but was 0");
        Rejects<ArgumentOutOfRangeException>(ok with { Hidden = 1 }, "Hidden", "must be >= 2 but was 1");
        Rejects<ArgumentOutOfRangeException>(ok with { MeasureAt = [0, 30] }, "MeasureAt", "ascending steps in 0..20 but was [0, 30]");
        Rejects<ArgumentOutOfRangeException>(ok with { MeasureAt = [10, 10] }, "MeasureAt", "but was [10, 10]");
        Rejects<ArgumentException>(ok with { MeasureAt = [] }, "MeasureAt", "was empty");
        Rejects<ArgumentOutOfRangeException>(ok with { Settings = [new("GroupNorm", DepthDiagnosis.Baseline)] }, "Settings", "one was 'GroupNorm'");
        Rejects<ArgumentOutOfRangeException>(ok with { Init = "Kaiming" }, "Init", "but was 'Kaiming'");
        var model = new Sequential<double>([new Linear<double>(2, 2, Init.Glorot, new Rng(1))]);
        Assert.Equal("model", Assert.Throws<ArgumentException>(() => DepthDiagnosis.Measure(model, new double[4], [0, 1], 2, 2)).ParamName);
    }
}
