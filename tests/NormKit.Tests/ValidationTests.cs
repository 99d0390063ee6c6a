using System.Numerics.Tensors;
using NormKit.Layers;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>Bad input: a clear exception naming the argument, expected and actual value, and no change of state.</summary>
public class ValidationTests
{
    private static T Throws<T>(Action a, string param, params string[] fragments) where T : ArgumentException
    {
        var e = Assert.Throws<T>(a);
        Assert.Equal(param, e.ParamName);
        foreach (var f in fragments) Assert.Contains(f, e.Message);
        return e;
    }

    [Fact]
    public void Constructor_hyperparameters_are_checked()
    {
        Throws<ArgumentOutOfRangeException>(() => new BatchNorm2d<float>(0), "numFeatures", "must be > 0 but was 0");
        Throws<ArgumentOutOfRangeException>(() => new BatchNorm2d<float>(4, eps: 0), "eps", "> 0 but was 0");
        Throws<ArgumentOutOfRangeException>(() => new BatchNorm2d<float>(4, eps: -1e-5), "eps", "-1E-05");
        Throws<ArgumentOutOfRangeException>(() => new BatchNorm2d<float>(4, eps: double.NaN), "eps", "NaN");
        Throws<ArgumentOutOfRangeException>(() => new BatchNorm2d<float>(4, eps: double.PositiveInfinity), "eps", "finite");
        Throws<ArgumentOutOfRangeException>(() => new BatchNorm2d<float>(4, momentum: 1.5), "momentum", "[0, 1]", "1.5");
        Throws<ArgumentOutOfRangeException>(() => new BatchNorm2d<float>(4, momentum: -0.1), "momentum", "-0.1");
        Throws<ArgumentException>(() => new LayerNorm<float>(Array.Empty<int>()), "normalizedShape", "at least one dimension");
        Throws<ArgumentException>(() => new LayerNorm<float>([3, 0]), "normalizedShape", "[3, 0]");
        Throws<ArgumentOutOfRangeException>(() => new LayerNorm<float>(4, eps: 0), "eps");
        Assert.Throws<NotSupportedException>(() => Functional.LayerNorm<Half>(new Half[4], [1, 4], [4], new Half[4]));
    }

    [Fact]
    public void Wrong_rank_and_wrong_channel_count_name_both_values()
    {
        var bn = new BatchNorm2d<float>(64);
        Throws<ArgumentException>(() => bn.Forward(Tensor.Create(new float[64 * 2], [2, 64])), "input", "4D (N, C, H, W)", "[2, 64]", "rank 2");
        Throws<ArgumentException>(() => bn.Forward(Tensor.Create(new float[2 * 63 * 4], [2, 63, 2, 2])), "input", "63 channels", "NumFeatures = 64");
        var bn1 = new BatchNorm1d<float>(8, channelsLast: true);
        Throws<ArgumentException>(() => bn1.Forward(Tensor.Create(new float[2 * 8 * 3], [2, 8, 3])), "input", "3 channels", "NumFeatures = 8");
        Throws<ArgumentException>(() => new BatchNorm3d<float>(2).Forward(Tensor.Create(new float[8], [2, 2, 2])), "input", "5D");
    }

    [Fact]
    public void Trailing_dims_must_equal_normalized_shape()
    {
        var ln = new LayerNorm<float>([2, 3]);
        Throws<ArgumentException>(() => ln.Forward(Tensor.Create(new float[12], [3, 4])), "inputShape",
            "Given normalizedShape=[2, 3], expected input with shape [*, 2, 3], but got input of size [3, 4]");
        Throws<ArgumentException>(() => ln.Forward(Tensor.Create(new float[3], [3])), "inputShape", "[3]");
    }

    [Fact]
    public void Buffers_of_the_wrong_length_are_named()
    {
        var x = new float[24];
        Throws<ArgumentException>(() => Functional.LayerNorm<float>(x, [4, 6], [6], new float[24], new float[5]), "weight",
            "weight has length 5 but normalizedShape [6] needs 6");
        Throws<ArgumentException>(() => Functional.LayerNorm<float>(x, [4, 6], [6], new float[24], default, new float[7]), "bias", "length 7");
        Throws<ArgumentException>(() => Functional.LayerNorm<float>(x, [4, 6], [6], new float[23]), "output", "output has length 23 but inputShape [4, 6] needs 24");
        Throws<ArgumentException>(() => Functional.LayerNorm<float>(x, [4, 5], [5], new float[20]), "input", "input has length 24 but inputShape [4, 5] needs 20");
        Throws<ArgumentException>(() => Functional.BatchNorm<float>(x, [4, 6], new float[24], new float[5], new float[6], default, default, true), "runningMean",
            "runningMean has length 5 but one value per channel needs 6");
        Throws<ArgumentException>(() => Functional.BatchNorm<float>(x, [4, 6], new float[24], new float[6], new float[7], default, default, true), "runningVar", "length 7");
        Throws<ArgumentException>(() => Functional.BatchNorm<float>(x, [4, 6], new float[24], new float[6], default, default, default, true), "runningVar", "together");
        Throws<ArgumentException>(() => Functional.BatchNorm<float>(x, [4, 6], new float[24], default, default, new float[3], default, true), "weight", "length 3");
        Throws<ArgumentException>(() => Functional.BatchNorm<float>(x, [4, 6], new float[24], default, default, default, new float[2], true), "bias", "length 2");
        Throws<ArgumentException>(() => Functional.BatchNorm<float>(x, [24], new float[24], default, default, default, default, true), "inputShape", "rank >= 2");
        Throws<ArgumentOutOfRangeException>(() => Functional.BatchNorm<float>(x, [4, 6], new float[24], default, default, default, default, true, momentum: 2), "momentum");
        Throws<ArgumentOutOfRangeException>(() => Functional.BatchNorm<float>(x, [4, 6], new float[24], default, default, default, default, true, eps: 0), "eps");
    }

    [Fact]
    public void Overlapping_input_and_output_are_rejected()
    {
        var buf = new float[30];
        Throws<ArgumentException>(() => Functional.LayerNorm<float>(buf.AsSpan(0, 20), [4, 5], [5], buf.AsSpan(10, 20)), "output", "overlaps input");
        Throws<ArgumentException>(() => Functional.BatchNorm<float>(buf.AsSpan(0, 20), [4, 5], buf.AsSpan(0, 20), default, default, default, default, true), "output", "overlaps");
        var mean = new double[4]; var rstd = new double[4];
        Throws<ArgumentException>(() => Functional.LayerNormBackward<float>(buf.AsSpan(0, 20), new float[20], [4, 5], [5], mean, rstd, default, buf.AsSpan(5, 20)),
            "gradInput", "overlaps gradOutput");
    }

    [Fact]
    public void Backward_needs_a_matching_forward()
    {
        var ln = new LayerNorm<float>(4);
        var e = Assert.Throws<InvalidOperationException>(() => ln.Backward(Tensor.Create(new float[8], [2, 4])));
        Assert.Contains("without a matching Forward", e.Message);
        ln.Forward(Tensor.Create(new float[8], [2, 4]));
        Throws<ArgumentException>(() => ln.Backward(Tensor.Create(new float[12], [3, 4])), "gradOutput", "shape [3, 4]", "shape [2, 4]");
        var bn = new BatchNorm1d<float>(4);
        Assert.Throws<InvalidOperationException>(() => bn.Backward(new float[8], new float[8], [2, 4], new float[8]));
        bn.Forward(new float[8], [2, 4], new float[8]);
        Assert.Throws<InvalidOperationException>(() => bn.Backward(Tensor.Create(new float[8], [2, 4])));   // span forward: pass the input
    }

    [Fact]
    public void A_throwing_call_leaves_the_layer_as_it_was()
    {
        var bn = new BatchNorm2d<float>(3);
        var x = Data.F(Data.Normal(1, 2 * 3 * 4, 2, 3));
        var dy = Data.F(Data.Normal(2, x.Length));
        bn.Forward(Tensor.Create(x, [2, 3, 2, 2]));
        var before = (Guard.Span(bn.RunningMean!).ToArray(), Guard.Span(bn.RunningVar!).ToArray(), bn.NumBatchesTracked);
        var dxBefore = new float[x.Length];
        bn.Backward(dy, x, [2, 3, 2, 2], dxBefore);

        Assert.ThrowsAny<ArgumentException>(() => bn.Forward(Tensor.Create(new float[3], [1, 3, 1, 1])));    // one value per channel
        Assert.ThrowsAny<ArgumentException>(() => bn.Forward(Data.F(Data.Normal(3, 24, 9)), [2, 3, 2, 2], new float[23]));
        Assert.Equal(before.Item1, Guard.Span(bn.RunningMean!).ToArray());
        Assert.Equal(before.Item2, Guard.Span(bn.RunningVar!).ToArray());
        Assert.Equal(before.NumBatchesTracked, bn.NumBatchesTracked);
        // The saved statistics are still those of the last good forward.
        var dxAfter = new float[x.Length];
        bn.Backward(dy, x, [2, 3, 2, 2], dxAfter);
        Check.BitEqual<float>(dxBefore, dxAfter, "dx after failed forwards");

        var ln = new LayerNorm<float>(4);
        var lx = Data.F(Data.Normal(4, 8, 1, 2));
        ln.Forward(lx, [2, 4], new float[8]);
        var ldx = new float[8];
        ln.Backward(new float[] { 1, 2, 3, 4, 5, 6, 7, 8 }, lx, [2, 4], ldx);
        Assert.ThrowsAny<ArgumentException>(() => ln.Forward(new float[40], [10, 4], new float[39]));   // would grow the buffers
        Assert.ThrowsAny<ArgumentException>(() => ln.Forward(new float[8], [2, 4], new float[7]));
        var ldx2 = new float[8];
        ln.Backward(new float[] { 1, 2, 3, 4, 5, 6, 7, 8 }, lx, [2, 4], ldx2);
        Check.BitEqual<float>(ldx, ldx2, "LayerNorm dx after failed forwards");
    }

    [Fact]
    public void Threading_setting_is_checked()
    {
        Throws<ArgumentOutOfRangeException>(() => NormKit.Kernels.NormKitThreading.MaxDegreeOfParallelism = 0, "value", ">= 1 but was 0");
    }
}
