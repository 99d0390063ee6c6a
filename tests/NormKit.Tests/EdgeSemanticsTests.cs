using System.Numerics.Tensors;
using NormKit.Layers;
using NormKit.Serialization;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>Edge cases where NormKit must give what the math, or PyTorch's module, gives exactly.</summary>
[Trait("Category", "Kernel")]
public class EdgeSemanticsTests
{
    [Fact]
    public void GroupNorm_with_one_element_per_group_has_a_zero_input_gradient()
    {
        // The case as reported: x_hat is 0 and dy minus its group mean is 0, so dx is exactly 0.
        var gn = new GroupNorm<float>(2, 2);
        gn.Forward(Tensor.Create(new float[] { 0.5f, -1.25f }, [1, 2]));
        var dx = gn.Backward(Tensor.Create(new float[] { 0.7f, -0.3f }, [1, 2]));
        Check.BitEqual<float>(new float[] { 0, 0 }, Guard.Span(dx), "dx");
        Assert.Equal(new float[] { 0, 0 }, Guard.Span(gn.WeightGrad!).ToArray());   // dWeight = dy * x_hat = 0
        Assert.Equal(new float[] { 0.7f, -0.3f }, Guard.Span(gn.BiasGrad!).ToArray());
    }

    [Fact]
    public void Every_one_element_segment_gives_exactly_zero_on_every_path()
    {
        var x = Data.Normal(40, 6 * 4, 2, 3);
        var dy = Data.Normal(41, 6 * 4);
        var w = Data.Normal(42, 4, 1, 0.5);
        Paths.ForEach(p =>
        {
            One<float>(); One<double>();
            void One<T>() where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
            {
                var zero = new T[x.Length];
                // GroupNorm with C/G = 1 and no spatial size, and InstanceNorm's core (G = C) on 1x1 planes.
                foreach (int[] shape in new[] { new[] { 6, 4 }, new[] { 6, 4, 1, 1 } })
                {
                    var y = new T[x.Length]; var dx = new T[x.Length];
                    var mean = new double[24]; var rstd = new double[24];
                    Functional.GroupNorm<T>(Check.Arr<T>(x), shape, 4, y, Check.Arr<T>(w), default, 1e-5, false, mean, rstd);
                    Functional.GroupNormBackward<T>(Check.Arr<T>(dy), Check.Arr<T>(x), shape, 4, Check.Arr<T>(w), mean, rstd, dx);
                    Check.BitEqual<T>(zero, dx, $"{typeof(T).Name} GroupNorm {Guard.Shape(shape)} dx ({p})");
                }
                // LayerNorm over a length-1 shape.
                var ln = new LayerNorm<T>(1);
                Check.Arr<T>([1.75]).CopyTo(Guard.Span(ln.Weight!));
                var lx = Check.Arr<T>(x); var ly = new T[x.Length]; var ldx = new T[x.Length];
                ln.Forward(lx, [24, 1], ly);
                ln.Backward(Check.Arr<T>(dy), lx, [24, 1], ldx);
                Check.BitEqual<T>(zero, ldx, $"{typeof(T).Name} LayerNorm [24, 1] dx ({p})");
            }
        });
    }

    [Fact]
    public void InstanceNorm_momentum_null_keeps_the_running_statistics_and_never_counts_batches()
    {
        // PyTorch 2.x: _InstanceNorm.forward passes momentum 0.0 when momentum is None
        // (Debian's PyTorch 1.13 refuses None there); num_batches_tracked is never incremented.
        var inorm = new InstanceNorm1d<float>(3, momentum: null, trackRunningStats: true);
        Data.F(Data.Normal(50, 3)).CopyTo(Guard.Span(inorm.RunningMean!));
        Data.F(Data.Normal(51, 3, 2, 0.1)).CopyTo(Guard.Span(inorm.RunningVar!));
        float[] mean = Guard.Span(inorm.RunningMean!).ToArray(), var = Guard.Span(inorm.RunningVar!).ToArray();
        for (int step = 0; step < 3; step++)
            inorm.Forward(Tensor.Create(Data.F(Data.Normal(52 + step, 2 * 3 * 5, 4, 2)), [2, 3, 5]));
        Assert.Equal(RunningStatsUpdate.Updated, inorm.LastRunningStatsUpdate);
        Check.BitEqual<float>(mean, Guard.Span(inorm.RunningMean!), "running_mean");
        Check.BitEqual<float>(var, Guard.Span(inorm.RunningVar!), "running_var");
        Assert.Equal(0, inorm.NumBatchesTracked);

        // With a momentum the statistics move, and the count still stays 0 (saved as 0, as PyTorch saves it).
        var moving = new InstanceNorm1d<float>(3, momentum: 0.1, trackRunningStats: true);
        moving.Forward(Tensor.Create(Data.F(Data.Normal(55, 2 * 3 * 5, 4, 2)), [2, 3, 5]));
        Assert.NotEqual(0f, moving.RunningMean![0]);
        Assert.Equal(0, moving.NumBatchesTracked);
        string path = Path.Combine(Path.GetTempPath(), $"normkit-in-{Guid.NewGuid():N}.safetensors");
        try
        {
            StateDict.Save(path, ("", (NormLayer<float>)moving));
            Assert.Equal(0d, SafeTensors.Read(path)["num_batches_tracked"].ToDoubles()[0]);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void BatchNorm_counts_an_empty_training_batch_as_PyTorch_does()
    {
        // PyTorch 1.13 (checked): BatchNorm1d(3, momentum=None)(torch.empty(0, 3)) leaves the running
        // statistics and sets num_batches_tracked to 1, so the next batch enters with factor 1/2.
        var bn = new BatchNorm1d<double>(3, momentum: null);
        var empty = bn.Forward(Tensor.Create(Array.Empty<double>(), [0, 3]));
        Assert.Equal(0, empty.FlattenedLength);
        Assert.Equal(1, bn.NumBatchesTracked);
        Assert.Equal(RunningStatsUpdate.None, bn.LastRunningStatsUpdate);
        Assert.Equal(new double[] { 0, 0, 0 }, Guard.Span(bn.RunningMean!).ToArray());
        Assert.Equal(new double[] { 1, 1, 1 }, Guard.Span(bn.RunningVar!).ToArray());

        var x = Data.Normal(60, 5 * 3, 2, 3);
        bn.Forward(Tensor.Create(x, [5, 3]));
        Assert.Equal(2, bn.NumBatchesTracked);
        var (mean, biased) = Reference.Oracle.ChannelStats(x, 5, 3, 1, false);
        Check.Close(mean.Select(m => 0.5 * 0 + 0.5 * m).ToArray(), Guard.Span(bn.RunningMean!), Tol.F64, "running_mean");
        Check.Close(biased.Select(v => 0.5 * 1 + 0.5 * v * 5 / 4).ToArray(), Guard.Span(bn.RunningVar!), Tol.F64, "running_var");

        // Eval mode counts nothing.
        bn.Eval();
        bn.Forward(Tensor.Create(Array.Empty<double>(), [0, 3]));
        Assert.Equal(2, bn.NumBatchesTracked);
    }

    [Fact]
    public void A_finite_batch_that_would_overflow_the_running_variance_is_skipped()
    {
        // Values near 1e30: the batch statistics are finite in double, but the variance (about
        // 1e60) is not finite as a float.
        float[] x = [1e30f, -2e30f, 3e30f, 1f, -1e30f, 2f];
        var bn = new BatchNorm1d<float>(2);
        bn.Forward(Tensor.Create(x, [3, 2]));
        Assert.Equal(RunningStatsUpdate.SkippedNonFinite, bn.LastRunningStatsUpdate);
        Assert.Equal(new float[] { 0, 0 }, Guard.Span(bn.RunningMean!).ToArray());   // every channel untouched, the finite one too
        Assert.Equal(new float[] { 1, 1 }, Guard.Span(bn.RunningVar!).ToArray());
        Assert.Equal(0, bn.NumBatchesTracked);
        // Eval still gives a real normalization, not just the bias.
        bn.Eval();
        var y = bn.Forward(Tensor.Create(new float[] { 3, 4 }, [1, 2]));
        Assert.Equal(new float[] { 3f / MathF.Sqrt(1 + 1e-5f), 4f / MathF.Sqrt(1 + 1e-5f) }, Guard.Span(y).ToArray());

        // Without the guard, PyTorch's behaviour: the overflow is stored.
        var raw = new BatchNorm1d<float>(2) { GuardRunningStats = false };
        raw.Forward(Tensor.Create(x, [3, 2]));
        Assert.Equal(RunningStatsUpdate.Updated, raw.LastRunningStatsUpdate);
        Assert.True(float.IsPositiveInfinity(raw.RunningVar![0]));
        Assert.Equal(1, raw.NumBatchesTracked);

        // InstanceNorm's running update shares the guard.
        var inorm = new InstanceNorm1d<float>(1, trackRunningStats: true);
        inorm.Forward(Tensor.Create(new float[] { 1e30f, -2e30f, 3e30f }, [1, 1, 3]));
        Assert.Equal(RunningStatsUpdate.SkippedNonFinite, inorm.LastRunningStatsUpdate);
        Assert.Equal(1f, inorm.RunningVar![0]);
    }
}
