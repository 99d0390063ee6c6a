using System.Numerics.Tensors;
using NormKit.Layers;

namespace NormKit.Tests;

/// <summary>The README's example, as written there, runs.</summary>
public class ReadmeExampleTests
{
    [Fact]
    public void Readme_example_runs()
    {
        var bn = new BatchNorm2d<float>(64);
        var x = Tensor.Create(new float[32 * 64 * 8 * 8], [32, 64, 8, 8]);
        Tensor<float> y = bn.Forward(x);
        var dy = Tensor.Create(new float[x.FlattenedLength], x.Lengths);
        Tensor<float> dx = bn.Backward(dy);
        bn.Eval();

        var ln = new LayerNorm<float>(768);
        var h = new float[16 * 768];
        var o = new float[h.Length];
        ln.Forward(h, [16, 768], o);

        var w = new double[768]; var b = new double[768]; var z = new double[h.Length];
        Functional.LayerNorm<double>(new double[h.Length], [16, 768], [768], z, w, b, eps: 1e-5);

        Assert.Equal(x.FlattenedLength, y.FlattenedLength);
        Assert.Equal(x.FlattenedLength, dx.FlattenedLength);
        Assert.Equal(1, bn.NumBatchesTracked);
        Assert.False(bn.Training);
    }
}
