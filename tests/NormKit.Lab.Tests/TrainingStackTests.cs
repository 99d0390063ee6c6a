using NormKit.Lab.Data;
using NormKit.Lab.Experiments;
using NormKit.Layers;
using NormKit.Lab.Training;

namespace NormKit.Lab.Tests;

/// <summary>The training stack's gradients against central finite differences, in double.</summary>
public class TrainingStackTests
{
    private static Sequential<double> Model(Rng rng) => new(
    [
        new Linear<double>(5, 6, Init.Glorot, rng),
        new Norm<double>(new BatchNorm1d<double>(6), 6),
        new Activation<double>(Activation<double>.Kind.Sigmoid),
        new Linear<double>(6, 6, Init.Kaiming, rng),
        new Norm<double>(new LayerNorm<double>(6), 6),
        new Activation<double>(Activation<double>.Kind.GELU),
        new Linear<double>(6, 4, Init.SmallNormal, rng, std: 0.5),
        new Norm<double>(new GroupNorm<double>(2, 4), 4),
        new Activation<double>(Activation<double>.Kind.Tanh),
        new Linear<double>(4, 3, Init.Glorot, rng),
    ]);

    [Fact]
    public void Every_parameter_gradient_matches_finite_differences()
    {
        var rng = new Rng(1);
        var model = Model(rng);
        // Random affine parameters, so the norms' weights and biases are not at their defaults.
        foreach (var p in model.Parameters) for (int i = 0; i < p.Value.Length; i++) p.Value[i] += 0.3 * rng.Normal();
        const int batch = 7;
        var x = Enumerable.Range(0, batch * 5).Select(_ => rng.Normal()).ToArray();
        var labels = Enumerable.Range(0, batch).Select(i => (byte)(i % 3)).ToArray();
        double Loss()
        {
            var z = model.Forward(x, batch, training: true);
            return CrossEntropy.LossAndGradient<double>(z, labels, batch, 3, new double[z.Length]);
        }
        var logits = model.Forward(x, batch, training: true);
        var g = new double[logits.Length];
        CrossEntropy.LossAndGradient<double>(logits, labels, batch, 3, g);
        model.Backward(g);
        Assert.True(GradCheck.Parameters(model, Loss, "MLP") > 100);
    }

    [Fact]
    public void ReLU_and_input_gradients_match_finite_differences()
    {
        var rng = new Rng(2);
        var model = new Sequential<double>([new Linear<double>(4, 5, Init.Glorot, rng), new Activation<double>(Activation<double>.Kind.ReLU), new Linear<double>(5, 3, Init.Glorot, rng)]);
        var x = Enumerable.Range(0, 3 * 4).Select(_ => rng.Normal()).ToArray();
        var labels = new byte[] { 0, 2, 1 };
        var z = model.Forward(x, 3, true);
        var g = new double[z.Length];
        CrossEntropy.LossAndGradient<double>(z, labels, 3, 3, g);
        var dx = model.Layers.Reverse().Aggregate(g, (d, l) => l.Backward(d));
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + 1e-6; var zu = model.Forward(x, 3, true);
            double up = CrossEntropy.LossAndGradient<double>(zu, labels, 3, 3, new double[9]);
            x[i] = keep - 1e-6; var zd = model.Forward(x, 3, true);
            double down = CrossEntropy.LossAndGradient<double>(zd, labels, 3, 3, new double[9]);
            x[i] = keep;
            Assert.Equal((up - down) / 2e-6, dx[i], 5);
        }
    }

    [Fact]
    public void Optimizers_reduce_a_simple_loss()
    {
        foreach (var opt in new IOptimizer<double>[] { new Sgd<double>(0.5, 0.9), new AdamW<double>(0.05) })
        {
            var rng = new Rng(3);
            var model = new Sequential<double>([new Linear<double>(2, 2, Init.Glorot, rng)]);
            var x = new double[] { 1, 0, 0, 1, 1, 1, -1, 0 };
            var labels = new byte[] { 0, 1, 0, 1 };
            double first = 0, last = 0;
            for (int step = 0; step < 50; step++)
            {
                var z = model.Forward(x, 4, true);
                var g = new double[z.Length];
                last = CrossEntropy.LossAndGradient<double>(z, labels, 4, 2, g);
                if (step == 0) first = last;
                model.Backward(g);
                opt.Step(model.Parameters.ToList());
            }
            Assert.True(last < first / 4, $"{opt.GetType().Name}: loss {first} -> {last}");
        }
    }
}

public class ConvolutionTests
{
    public static TheoryData<string> Norms() => new(["none", "BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm"]);

    [Theory, MemberData(nameof(Norms))]
    public void Cnn_gradients_match_finite_differences(string norm)
    {
        var rng = new Rng(4);
        ILayer<double>? Norm(int c, int h) => norm switch
        {
            "BatchNorm" => new Norm<double>(new BatchNorm2d<double>(c), c, h, h),
            "LayerNorm" => new Norm<double>(new LayerNorm<double>([c, h, h]), c, h, h),
            "GroupNorm" => new Norm<double>(new GroupNorm<double>(2, c), c, h, h),
            "InstanceNorm" => new Norm<double>(new InstanceNorm2d<double>(c, affine: true), c, h, h),
            _ => null,
        };
        var layers = new List<ILayer<double>> { new Conv2d<double>(2, 4, 3, 1, 4, 4, rng) };
        if (Norm(4, 4) is { } n1) layers.Add(n1);
        layers.AddRange([new Activation<double>(Activation<double>.Kind.ReLU), new MaxPool2<double>(4, 4, 4), new Conv2d<double>(4, 2, 3, 1, 2, 2, rng)]);
        if (Norm(2, 2) is { } n2) layers.Add(n2);
        layers.Add(new Linear<double>(2 * 2 * 2, 3, Init.Glorot, rng));
        var model = new Sequential<double>(layers);
        foreach (var p in model.Parameters) for (int i = 0; i < p.Value.Length; i++) p.Value[i] += 0.2 * rng.Normal();
        const int batch = 3;
        var x = Enumerable.Range(0, batch * 2 * 4 * 4).Select(_ => rng.Normal()).ToArray();
        var labels = new byte[] { 0, 2, 1 };
        double Loss() => CrossEntropy.LossAndGradient<double>(model.Forward(x, batch, true), labels, batch, 3, new double[batch * 3]);
        var z = model.Forward(x, batch, true);
        var g = new double[z.Length];
        CrossEntropy.LossAndGradient<double>(z, labels, batch, 3, g);
        model.Backward(g);
        GradCheck.Parameters(model, Loss, norm);
    }
}

/// <summary>Central differences (step 1e-6, atol 1e-5, rtol 1e-3) of a loss against every parameter's accumulated gradient.</summary>
internal static class GradCheck
{
    public static int Parameters(Sequential<double> model, Func<double> loss, string what)
    {
        int count = 0;
        foreach (var p in model.Parameters)
        {
            var analytic = p.Grad.ToArray();
            for (int i = 0; i < p.Value.Length; i++, count++)
            {
                double keep = p.Value[i];
                p.Value[i] = keep + 1e-6; double up = loss();
                p.Value[i] = keep - 1e-6; double down = loss();
                p.Value[i] = keep;
                double numeric = (up - down) / 2e-6;
                Assert.True(Math.Abs(numeric - analytic[i]) <= 1e-5 + 1e-3 * Math.Abs(numeric),
                    $"{what}: {p.Name}[{i}] backward {analytic[i]}, finite differences {numeric}");
            }
        }
        return count;
    }
}

public class TransformerTests
{
    // PowerNorm is left out: its backward is the paper's approximation, not the forward's derivative.
    public static TheoryData<string> Norms() => new(["none", "LayerNorm", "RMSNorm", "BatchNorm", "DynamicTanh", Language.ScaledDynamicTanh]);

    internal static Sequential<double> Tiny(string norm, Rng rng, int vocab, int dim, int heads, int length)
    {
        ILayer<double>[] N() => norm switch
        {
            "LayerNorm" => [new Norm<double>(new LayerNorm<double>(dim), dim)],
            "RMSNorm" => [new Norm<double>(new RMSNorm<double>(dim, eps: 1e-5), dim)],
            "BatchNorm" => [new Norm<double>(new BatchNorm1d<double>(dim), dim)],
            "DynamicTanh" or Language.ScaledDynamicTanh => [new Norm<double>(new DynamicTanh<double>(dim), dim)],
            _ => [],
        };
        return new Sequential<double>([
            new Embedding<double>(vocab, dim, length, rng),
            .. norm == Language.ScaledDynamicTanh ? [new Scale<double>(Math.Sqrt(dim))] : Array.Empty<ILayer<double>>(),
            new Residual<double>([.. N(), new CausalSelfAttention<double>(dim, heads, length, rng)]),
            new Residual<double>([.. N(), new Linear<double>(dim, 2 * dim, Init.Glorot, rng), new Activation<double>(Activation<double>.Kind.GELU), new Linear<double>(2 * dim, dim, Init.Glorot, rng)]),
            .. N(),
            new Linear<double>(dim, vocab, Init.Glorot, rng),
        ]);
    }

    [Theory, MemberData(nameof(Norms))]
    public void Transformer_gradients_match_finite_differences(string norm)
    {
        var rng = new Rng(5);
        const int vocab = 5, dim = 8, heads = 2, length = 4, sequences = 2, rows = sequences * length;
        var model = Tiny(norm, rng, vocab, dim, heads, length);
        foreach (var p in model.Parameters) for (int i = 0; i < p.Value.Length; i++) p.Value[i] += 0.2 * rng.Normal();
        var tokens = Enumerable.Range(0, rows).Select(i => (double)((i * 3 + 1) % vocab)).ToArray();
        var targets = Enumerable.Range(0, rows).Select(i => (byte)((i * 2 + 3) % vocab)).ToArray();
        double Loss() => CrossEntropy.LossAndGradient<double>(model.Forward(tokens, rows, true), targets, rows, vocab, new double[rows * vocab]);
        var z = model.Forward(tokens, rows, true);
        var g = new double[z.Length];
        CrossEntropy.LossAndGradient<double>(z, targets, rows, vocab, g);
        model.Backward(g);
        Assert.True(GradCheck.Parameters(model, Loss, norm) > 300);
    }
}

/// <summary>Data-parallel training with threads as ranks (no MPI): the same run as one process on the whole batch.</summary>
public class DataParallelInProcessTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void Ranks_as_threads_train_like_one_process(int k)
    {
        var train = FashionMnist.TrainAndTest(null).Train;
        var config = new NormKit.Lab.Experiments.DataParallelVision.Config(Steps: 8, Batch: 16);
        var reference = NormKit.Lab.Experiments.DataParallelVision.Run<double>(config, train);
        var group = new NormKit.Distributed.InProcessGroup(k);
        var results = new NormKit.Lab.Experiments.DataParallelVision.Result<double>[k];
        Parallel.For(0, k, new ParallelOptions { MaxDegreeOfParallelism = k }, r => results[r] = NormKit.Lab.Experiments.DataParallelVision.Run<double>(config, train, group[r]));
        foreach (var r in results)
        {
            Assert.True(r.SameOnEveryRank);
            Assert.Equal(results[0].Weights, r.Weights);   // bit-identical on every rank
            var (dl, dw) = NormKit.Lab.Experiments.DataParallelVision.Difference(r, reference);
            Assert.True(dl <= 1e-12 && dw <= 1e-12, $"loss {dl:E2}, weights {dw:E2}");
        }
        Assert.True(reference.Losses[^1] < reference.Losses[0], "training did not lower the loss");
    }

    [Fact]
    public void A_batch_smaller_than_the_group_is_refused_by_name()
    {
        var dp = new NormKit.Lab.Training.DataParallel<float>(new NormKit.Distributed.InProcessGroup(4)[0]);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => dp.Shard(3));
        Assert.Equal("batch", e.ParamName);
        Assert.Contains("(4)", e.Message);
        var three = new NormKit.Distributed.InProcessGroup(3);
        Assert.Equal([(0, 3), (3, 2), (5, 2)], Enumerable.Range(0, 3).Select(r => new NormKit.Lab.Training.DataParallel<float>(three[r]).Shard(7)));
    }
}

public class DataParallelCheckChartTests
{
    [Fact]
    public void The_check_writes_its_data_and_one_chart_for_both_types()
    {
        string dir = Directory.CreateTempSubdirectory("normkit-dp-chart-").FullName;
        double[] a = [2.0, 1.5, 1.0], b = [2.0, 1.5 + 1e-7, 1.0 - 2e-6];
        NormKit.Lab.Experiments.DataParallelVision.PlotCheck(a, b, 2, "float32", dir);
        string path = NormKit.Lab.Experiments.DataParallelVision.PlotCheck(a, a, 2, "float64", dir);
        var rows = File.ReadAllLines(Path.Combine(dir, "data-parallel-np2-float32-check.csv"));
        Assert.Equal("step,loss_distributed,loss_one_process,abs_difference", rows[0]);
        Assert.Equal(4, rows.Length);
        Assert.Equal(2e-6, double.Parse(rows[3].Split(',')[3], System.Globalization.CultureInfo.InvariantCulture), 1e-12);
        Assert.True(new FileInfo(path + ".png").Length > 1000);
        string svg = File.ReadAllText(path + ".svg");
        Assert.Contains("float32", svg);
        Assert.Contains("float64", svg);
        Directory.Delete(dir, true);
    }
}
