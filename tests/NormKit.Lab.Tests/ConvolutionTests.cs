using NormKit.Kernels;
using NormKit.Lab.Training;

namespace NormKit.Lab.Tests;

/// <summary>Tests that set NormKitThreading.MaxDegreeOfParallelism or count allocations: run alone.</summary>
[CollectionDefinition("Lab threading", DisableParallelization = true)]
public class LabThreadingCollection;

/// <summary>Conv2d (stride, padding, bias) and GlobalAvgPool against direct loops and finite differences, in double.</summary>
public class ConvolutionLayerTests
{
    private const int Batch = 2, In = 2, Out = 3, Height = 5, Width = 6;

    // kernel, stride, padding, bias; 5 x 6 inputs, so stride 2 also floors an odd size.
    public static TheoryData<int, int, int, bool> Shapes() => new()
    {
        { 1, 1, 0, true }, { 1, 2, 0, false }, { 1, 1, 1, true },
        { 3, 1, 1, true }, { 3, 1, 0, false }, { 3, 2, 1, false }, { 3, 2, 0, true },
    };

    private static double[] Normal(Rng rng, int n) => Enumerable.Range(0, n).Select(_ => rng.Normal()).ToArray();

    /// <summary>y[n, o, r, c] = b[o] + sum over (i, u, v) of w[o, i, u, v] x[n, i, r s + u - p, c s + v - p].</summary>
    internal static double[] DirectConvolution(double[] x, ReadOnlySpan<double> w, ReadOnlySpan<double> b, int batch, int cin, int h, int wd, int cout, int k, int s, int p)
    {
        int oh = (h + 2 * p - k) / s + 1, ow = (wd + 2 * p - k) / s + 1;
        var y = new double[batch * cout * oh * ow];
        for (int n = 0; n < batch; n++)
            for (int o = 0; o < cout; o++)
                for (int r = 0; r < oh; r++)
                    for (int c = 0; c < ow; c++)
                    {
                        double sum = b.IsEmpty ? 0 : b[o];
                        for (int i = 0; i < cin; i++)
                            for (int u = 0; u < k; u++)
                                for (int v = 0; v < k; v++)
                                {
                                    int rr = r * s + u - p, cc = c * s + v - p;
                                    if (rr >= 0 && rr < h && cc >= 0 && cc < wd)
                                        sum += w[((o * cin + i) * k + u) * k + v] * x[((n * cin + i) * h + rr) * wd + cc];
                                }
                        y[((n * cout + o) * oh + r) * ow + c] = sum;
                    }
        return y;
    }

    private static Conv2d<double> Layer(int k, int s, int p, bool bias, Rng rng)
    {
        var conv = new Conv2d<double>(In, Out, k, s, p, Height, Width, bias, rng);
        // Nonzero biases, so a bias that is dropped or misplaced shows.
        if (conv.Bias is { } b) for (int o = 0; o < Out; o++) b.Value[o] = rng.Normal();
        return conv;
    }

    [Theory, MemberData(nameof(Shapes))]
    public void Forward_matches_a_direct_convolution(int k, int s, int p, bool bias)
    {
        var rng = new Rng(10);
        var conv = Layer(k, s, p, bias, rng);
        Assert.Equal((Height + 2 * p - k) / s + 1, conv.OutHeight);
        Assert.Equal((Width + 2 * p - k) / s + 1, conv.OutWidth);
        // Batch 2, then 3 (new buffers), then 2 again: each against the direct loop.
        foreach (int batch in new[] { Batch, Batch + 1, Batch })
        {
            var x = Normal(rng, batch * In * Height * Width);
            var expected = DirectConvolution(x, conv.Weight.Value, conv.Bias is null ? default : conv.Bias.Value, batch, In, Height, Width, Out, k, s, p);
            var y = conv.Forward(x, batch, training: true);
            Assert.Equal(expected.Length, y.Length);
            // Sums of at most 18 products of O(1) terms in another order: rounding differences ~1e-15.
            for (int i = 0; i < y.Length; i++) Assert.Equal(expected[i], y[i], 1e-12);
        }
    }

    [Theory, MemberData(nameof(Shapes))]
    public void Input_and_parameter_gradients_match_finite_differences(int k, int s, int p, bool bias)
    {
        var rng = new Rng(11);
        var conv = Layer(k, s, p, bias, rng);
        var x = Normal(rng, Batch * In * Height * Width);
        var r = Normal(rng, Batch * Out * conv.OutHeight * conv.OutWidth);
        // L = sum r * y, so dL/dy = r.
        double Loss() => conv.Forward(x, Batch, true).Zip(r, (y, ri) => y * ri).Sum();
        conv.Forward(x, Batch, true);
        var dx = conv.Backward(r).ToArray();
        InputGradient(x, dx, Loss, $"k {k} s {s} p {p}");
        Assert.Equal(conv.Weight.Value.Length + (bias ? Out : 0), GradCheck.Parameters(new Sequential<double>([conv]), Loss, $"k {k} s {s} p {p}"));
    }

    /// <summary>Central differences of <paramref name="loss"/> against dx, with GradCheck's step and tolerance.</summary>
    internal static void InputGradient(double[] x, double[] dx, Func<double> loss, string what)
    {
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + 1e-6; double up = loss();
            x[i] = keep - 1e-6; double down = loss();
            x[i] = keep;
            double numeric = (up - down) / 2e-6;
            Assert.True(Math.Abs(numeric - dx[i]) <= 1e-5 + 1e-3 * Math.Abs(numeric), $"{what}: dx[{i}] backward {dx[i]}, finite differences {numeric}");
        }
    }

    [Fact]
    public void Parameter_gradients_accumulate_over_backward_calls_and_the_input_gradient_does_not()
    {
        var rng = new Rng(12);
        var conv = Layer(3, 2, 1, true, rng);
        var x = Normal(rng, Batch * In * Height * Width);
        var r = Normal(rng, Batch * Out * conv.OutHeight * conv.OutWidth);
        conv.Forward(x, Batch, true);
        var dx = conv.Backward(r).ToArray();
        var once = conv.Parameters.Select(q => q.Grad.ToArray()).ToList();
        conv.Forward(x, Batch, true);
        Assert.Equal(dx, conv.Backward(r));   // the input gradient is rewritten, not accumulated
        foreach (var (q, first) in conv.Parameters.Zip(once))
            for (int i = 0; i < first.Length; i++) Assert.Equal(2 * first[i], q.Grad[i], 1e-12);   // two equal sums, rounding apart
    }

    [Fact]
    public void The_stride_1_constructor_is_a_biased_stride_1_convolution_with_the_same_weights()
    {
        var old = new Conv2d<double>(In, Out, 3, 1, Height, Width, new Rng(13));
        var general = new Conv2d<double>(In, Out, 3, stride: 1, padding: 1, Height, Width, bias: true, new Rng(13));
        Assert.Equal(general.Weight.Value.ToArray(), old.Weight.Value.ToArray());
        Assert.NotNull(old.Bias);
        Assert.Equal((1, Height, Width), (old.Stride, old.OutHeight, old.OutWidth));
    }

    [Fact]
    public void Arguments_are_checked_by_name()
    {
        var rng = new Rng(14);
        void Throws(string name, string text, Action a)
        {
            var e = Assert.ThrowsAny<ArgumentException>(a);
            Assert.Equal(name, e.ParamName);
            Assert.Contains(text, e.Message);
        }
        Throws("inChannels", ">= 1 but was 0", () => new Conv2d<double>(0, 2, 3, 1, 1, 4, 4, true, rng));
        Throws("outChannels", ">= 1 but was -1", () => new Conv2d<double>(1, -1, 3, 1, 1, 4, 4, true, rng));
        Throws("kernel", ">= 1 but was 0", () => new Conv2d<double>(1, 2, 0, 1, 0, 4, 4, true, rng));
        Throws("stride", ">= 1 but was 0", () => new Conv2d<double>(1, 2, 3, 0, 1, 4, 4, true, rng));
        Throws("padding", ">= 0 but was -1", () => new Conv2d<double>(1, 2, 3, 1, -1, 4, 4, true, rng));
        Throws("height", ">= 1 but was 0", () => new Conv2d<double>(1, 2, 3, 1, 1, 0, 4, true, rng));
        Throws("kernel", "but was 5", () => new Conv2d<double>(1, 2, 5, 1, 0, 4, 4, true, rng));
        var conv = new Conv2d<double>(2, 3, 3, 1, 1, 4, 4, true, rng);
        Throws("x", "2 x 2 x 4 x 4 = 64 values (batch 2) but had 63", () => conv.Forward(new double[63], 2, true));
        Throws("batch", ">= 1 but was 0", () => conv.Forward([], 0, true));
        Assert.Throws<InvalidOperationException>(() => conv.Backward(new double[48]));
        conv.Forward(new double[64], 2, true);
        Throws("dy", "= 96 values (batch 2) but had 95", () => conv.Backward(new double[95]));
        Throws("channels", ">= 1 but was 0", () => new GlobalAvgPool<double>(0, 2, 2));
        Throws("x", "1 x 3 x 2 x 2 = 12 values (batch 1) but had 11", () => new GlobalAvgPool<double>(3, 2, 2).Forward(new double[11], 1, true));
    }

    [Fact]
    public void GlobalAvgPool_averages_each_plane_and_spreads_the_gradient()
    {
        var rng = new Rng(15);
        const int c = 3, h = 2, w = 5, batch = 2;
        var pool = new GlobalAvgPool<double>(c, h, w);
        var x = Normal(rng, batch * c * h * w);
        var y = pool.Forward(x, batch, true);
        // A sum of 10 O(1) values, in another order than the SIMD sum: rounding ~1e-16.
        for (int i = 0; i < batch * c; i++) Assert.Equal(x.Skip(i * h * w).Take(h * w).Average(), y[i], 1e-13);
        var r = Normal(rng, batch * c);
        double Loss() => pool.Forward(x, batch, true).Zip(r, (a, b) => a * b).Sum();
        InputGradient(x, pool.Backward(r).ToArray(), Loss, "GlobalAvgPool");
    }

    internal static (Conv2d<double> Conv, double[] X, double[] Dy) StepData(int batch)
    {
        var rng = new Rng(16);
        var conv = new Conv2d<double>(4, 8, 3, stride: 2, padding: 1, 12, 12, bias: true, rng);
        return (conv, Normal(rng, batch * 4 * 12 * 12), Normal(rng, batch * 8 * 6 * 6));
    }
}

/// <summary>Conv2d's steady-state allocations and its results across thread counts.</summary>
[Collection("Lab threading")]
public class ConvolutionThreadingTests
{
    [Fact]
    public void A_training_step_allocates_nothing_in_steady_state_on_one_thread()
    {
        var (conv, x, dy) = ConvolutionLayerTests.StepData(batch: 4);
        int threads = NormKitThreading.MaxDegreeOfParallelism;
        try
        {
            NormKitThreading.MaxDegreeOfParallelism = 1;
            // Past tiered compilation's call-count threshold first.
            for (int i = 0; i < 40; i++) { conv.Forward(x, 4, true); conv.Backward(dy); }
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 2; i++) { conv.Forward(x, 4, true); conv.Backward(dy); }
            Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        finally { NormKitThreading.MaxDegreeOfParallelism = threads; }
    }

    [Fact]
    public void Results_are_bitwise_identical_on_one_and_two_threads()
    {
        (double[] Y, double[] Dx, double[] DW, double[] Db) Run(int threads)
        {
            var (conv, x, dy) = ConvolutionLayerTests.StepData(batch: 5);
            int keep = NormKitThreading.MaxDegreeOfParallelism;
            try
            {
                NormKitThreading.MaxDegreeOfParallelism = threads;
                var y = conv.Forward(x, 5, true).ToArray();
                var dx = conv.Backward(dy).ToArray();
                return (y, dx, conv.Weight.Grad.ToArray(), conv.Bias!.Grad.ToArray());
            }
            finally { NormKitThreading.MaxDegreeOfParallelism = keep; }
        }
        var one = Run(1);
        var two = Run(2);
        Assert.Equal(one.Y, two.Y);
        Assert.Equal(one.Dx, two.Dx);
        Assert.Equal(one.DW, two.DW);
        Assert.Equal(one.Db, two.Db);
    }
}
