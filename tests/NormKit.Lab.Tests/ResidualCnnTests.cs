using NormKit.Kernels;
using NormKit.Lab.Training;

namespace NormKit.Lab.Tests;

/// <summary>The residual CNN: its shape, its init per arm, and its gradients in double.</summary>
public class ResidualCnnTests
{
    public static TheoryData<string> Arms() => new(NormArms.Names);

    // 6 x 6 images: the stride-2 stages give 3 x 3 (flooring the 1x1 projection's (6 - 1) / 2) and 2 x 2.
    internal static readonly ResidualCnn.Config Tiny = new(Width: 4, Blocks: 1, ImageHeight: 6, ImageWidth: 6, Classes: 3);

    [Theory, MemberData(nameof(Arms))]
    public void Parameter_and_input_gradients_match_finite_differences(string arm) =>
        GradientsMatch(ResidualCnn.Build<double>(Tiny, arm, new Rng(20)), new Rng(20), [0, 2, 1], arm, 1000);

    // Moves the weights away from the init (so Fixup's zeros and the norms' unit weights cannot hide
    // an error), then checks every parameter's and the input's gradient against finite differences.
    private static void GradientsMatch(Sequential<double> model, Rng rng, byte[] labels, string arm, int minChecked)
    {
        // Batch Renormalization's backward holds r and d constant (the paper's stop-gradient), so it is
        // not the derivative of its forward unless they are clipped to r = 1, d = 0 (BatchNorm); the
        // check then covers the arm's wiring, and the layer's own tests cover r and d.
        foreach (var brn in BatchStatistics.NormLayers(model).OfType<NormKit.Layers.BatchRenorm<double>>()) (brn.RMax, brn.DMax) = (1, 0);
        foreach (var p in model.Parameters) for (int i = 0; i < p.Value.Length; i++) p.Value[i] += 0.2 * rng.Normal();
        int batch = labels.Length;
        var x = Enumerable.Range(0, batch * 6 * 6).Select(_ => rng.Normal()).ToArray();
        double Loss() => CrossEntropy.LossAndGradient<double>(model.Forward(x, batch, true), labels, batch, 3, new double[batch * 3]);
        var z = model.Forward(x, batch, true);
        var g = new double[z.Length];
        CrossEntropy.LossAndGradient<double>(z, labels, batch, 3, g);
        var dx = model.Layers.Reverse().Aggregate(g, (d, l) => l.Backward(d)).ToArray();
        Assert.True(GradCheck.Parameters(model, Loss, arm) > minChecked);
        ConvolutionLayerTests.InputGradient(x, dx, Loss, arm);
    }

    [Theory, MemberData(nameof(Arms))]
    public void The_plain_network_has_no_shortcuts_and_its_gradients_match_finite_differences(string arm)
    {
        var rng = new Rng(23);
        var model = ResidualCnn.Build<double>(Tiny with { Shortcuts = false }, arm, rng);
        Assert.All(ResidualCnn.Blocks(model), b => { Assert.False(b.HasShortcut); Assert.Null(b.ShortcutConv); Assert.Null(b.ShortcutNorm); });
        // Without shortcuts Fixup's zero convs would cut the signal: every arm keeps the standard init.
        Assert.All(ResidualCnn.Blocks(model), b => Assert.Contains(b.Conv2.Weight.Value.ToArray(), w => w != 0));
        GradientsMatch(model, rng, [1, 0, 2], arm, 500);
        // The same draws with shortcuts give another function: the shortcut really is gone.
        var residual = ResidualCnn.Build<double>(Tiny, arm, new Rng(23));
        Assert.Equal("plain CNN-8", (Tiny with { Shortcuts = false }).Name);
        Assert.Equal("ResNet-8", Tiny.Name);
        // Two projection shortcuts: a conv with a bias (none), or a conv and a norm of 2 parameters (3 for FRN's tau).
        Assert.Equal(residual.Parameters.Count(), model.Parameters.Count() + arm switch { "none" => 4, "FRN" => 8, _ => 6 });
    }

    [Fact]
    public void The_default_network_has_14_weight_layers_and_maps_28x28_images_to_10_logits()
    {
        var c = new ResidualCnn.Config();
        var model = ResidualCnn.Build<float>(c, "BatchNorm", new Rng(21));
        var blocks = ResidualCnn.Blocks(model).ToList();
        Assert.Equal(14, c.WeightLayers);
        Assert.Equal(c.WeightLayers, 1 + 2 * blocks.Count + model.Layers.OfType<Linear<float>>().Count());
        Assert.Equal(["stage1.block1", "stage1.block2", "stage2.block1", "stage2.block2", "stage3.block1", "stage3.block2"], blocks.Select(b => b.Name));
        Assert.Equal([(16, 28, false), (16, 28, false), (32, 14, true), (32, 14, false), (64, 7, true), (64, 7, false)],
            blocks.Select(b => (b.OutChannels, b.OutHeight, b.ShortcutConv is not null)));
        Assert.All(blocks, b => Assert.Null(b.Conv1.Bias));   // a norm follows every conv
        Assert.Equal(1 + 6 * 2 + 2, ResidualCnn.Norms(model).Count());
        Assert.Equal("stem.norm", ResidualCnn.Norms(model).First().Name);
        Assert.Contains(ResidualCnn.Norms(model), n => n.Name == "stage3.block1.shortcut.norm");
        Assert.Equal(2 * 10, model.Forward(new float[2 * 28 * 28], 2, training: false).Length);
    }

    [Fact]
    public void The_none_arm_has_Fixup_init_and_the_norm_arms_the_standard_one()
    {
        var none = ResidualCnn.Build<double>(new ResidualCnn.Config(), "none", new Rng(22));
        var bn = ResidualCnn.Build<double>(new ResidualCnn.Config(), "BatchNorm", new Rng(22));   // the same random draws
        Assert.Empty(ResidualCnn.Norms(none));
        double scale = 1 / Math.Sqrt(6);   // L^(-1/(2m-2)) for L = 6 blocks of m = 2 layers
        foreach (var (n, b) in ResidualCnn.Blocks(none).Zip(ResidualCnn.Blocks(bn)))
        {
            for (int i = 0; i < n.Conv1.Weight.Value.Length; i++) Assert.Equal(b.Conv1.Weight.Value[i] * scale, n.Conv1.Weight.Value[i], 1e-15);
            Assert.All(n.Conv2.Weight.Value.ToArray(), w => Assert.Equal(0.0, w));
            Assert.Equal(b.Conv2.Weight.Value.Length, n.Conv2.Weight.Value.Length);
            Assert.NotNull(n.Conv1.Bias);   // no norm follows: the conv has a bias
            if (n.ShortcutConv is { } s) Assert.Equal(b.ShortcutConv!.Weight.Value.ToArray(), s.Weight.Value.ToArray());
        }
        Assert.All(none.Layers.OfType<Linear<double>>().Single().Weight.Value.ToArray(), w => Assert.Equal(0.0, w));
        Assert.Contains(bn.Layers.OfType<Linear<double>>().Single().Weight.Value.ToArray(), w => w != 0);
        var bnWeights = ResidualCnn.Norms(bn).SelectMany(n => n.Norm.Parameters).Where(p => p.Name == "weight").SelectMany(p => p.Value.ToArray());
        Assert.All(bnWeights, w => Assert.Equal(1.0, w));
    }

    [Fact]
    public void GroupNorm_uses_32_groups_capped_at_two_channels_per_group()
    {
        Assert.Equal([1, 1, 2, 3, 5, 6, 8, 16, 32, 32], new[] { 1, 2, 4, 6, 10, 12, 16, 32, 64, 128 }.Select(NormArms.Groups));
        var gn = (Norm<float>)NormArms.Create<float>("GroupNorm", 16, 28, 28)!;
        Assert.Equal(8, ((NormKit.Layers.GroupNorm<float>)gn.Layer).NumGroups);
    }

    [Fact]
    public void An_unknown_arm_is_refused_with_the_valid_names()
    {
        var e = Assert.Throws<ArgumentException>(() => ResidualCnn.Build<float>(new ResidualCnn.Config(), "batchnorm", new Rng(23)));
        Assert.Equal("arm", e.ParamName);
        Assert.Contains("none, BatchNorm, GroupNorm, LayerNorm, InstanceNorm", e.Message);
        Assert.Contains("'batchnorm'", e.Message);
    }
}

/// <summary>Steady-state allocations of a ResidualCnn training step on one thread.</summary>
[Collection("Lab threading")]
public class ResidualCnnAllocationTests
{
    private static readonly ResidualCnn.Config Small = new(Width: 4, Blocks: 1, ImageHeight: 12, ImageWidth: 12, Classes: 3);

    /// <summary>
    /// Bytes allocated by two forward + backward steps after warm-up, per layer; the steps walk
    /// the layers themselves so that each layer's share is seen.
    /// </summary>
    private static List<(ILayer<float> Layer, long Bytes)> SteadyStateAllocations(string arm)
    {
        var rng = new Rng(24);
        var model = ResidualCnn.Build<float>(Small, arm, rng);
        const int batch = 2;
        var x = Enumerable.Range(0, batch * 12 * 12).Select(_ => (float)rng.Normal()).ToArray();
        var labels = new byte[] { 0, 2 };
        var g = new float[batch * 3];
        var bytes = new long[model.Layers.Count];
        void Step(bool count)
        {
            var a = x;
            for (int i = 0; i < model.Layers.Count; i++)
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                a = model.Layers[i].Forward(a, batch, true);
                if (count) bytes[i] += GC.GetAllocatedBytesForCurrentThread() - before;
            }
            CrossEntropy.LossAndGradient<float>(a, labels, batch, 3, g);
            var d = g;
            for (int i = model.Layers.Count - 1; i >= 0; i--)
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                d = model.Layers[i].Backward(d);
                if (count) bytes[i] += GC.GetAllocatedBytesForCurrentThread() - before;
            }
        }
        int threads = NormKitThreading.MaxDegreeOfParallelism;
        try
        {
            NormKitThreading.MaxDegreeOfParallelism = 1;
            for (int i = 0; i < 40; i++) Step(count: false);   // past tiered compilation's threshold
            Step(count: true); Step(count: true);
        }
        finally { NormKitThreading.MaxDegreeOfParallelism = threads; }
        return model.Layers.Select((l, i) => (l, bytes[i])).ToList();
    }

    private static string Describe(IEnumerable<(ILayer<float> Layer, long Bytes)> layers) =>
        string.Join(", ", layers.Where(l => l.Bytes != 0).Select(l => $"{l.Layer.GetType().Name}: {l.Bytes} B"));

    [Fact]
    public void The_none_arm_blocks_convs_and_pooling_allocate_nothing()
    {
        var ours = SteadyStateAllocations("none").Where(l => l.Layer is Conv2d<float> or ResidualBlock<float> or GlobalAvgPool<float>).ToList();
        Assert.Equal(1 + 3 + 1, ours.Count);
        Assert.True(ours.All(l => l.Bytes == 0), Describe(ours));
    }

    [Theory]
    [MemberData(nameof(ResidualCnnTests.Arms), MemberType = typeof(ResidualCnnTests))]
    public void A_whole_training_step_allocates_nothing(string arm)
    {
        var layers = SteadyStateAllocations(arm);
        Assert.True(layers.All(l => l.Bytes == 0), Describe(layers));
    }
}
