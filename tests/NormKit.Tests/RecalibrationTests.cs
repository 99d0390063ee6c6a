using NormKit.Layers;

namespace NormKit.Tests;

/// <summary>BatchNormRecalibration: update_bn's re-estimate of the running statistics, against float64 by hand.</summary>
public class RecalibrationTests
{
    private static float[] Batch(Random r, int n, int c, int s, double offset, double scale) =>
        Enumerable.Range(0, n * c * s).Select(_ => (float)(offset + scale * (r.NextDouble() * 2 - 1))).ToArray();

    [Fact]
    public void Running_statistics_become_the_mean_of_the_batch_statistics_and_the_mode_is_restored()
    {
        var r = new Random(1);
        const int c = 3, s = 5;
        int[] sizes = [4, 6, 2];   // unequal batches: update_bn averages per batch, not per sample
        var batches = sizes.Select((n, i) => Batch(r, n, c, s, offset: 2 + i, scale: 1 + i)).ToArray();
        var bn = new BatchNorm2d<float>(c, momentum: 0.3);
        bn.Eval();
        var y = new float[6 * c * s];
        BatchNormRecalibration.Recompute([bn], () =>
        {
            for (int b = 0; b < batches.Length; b++)
            {
                Assert.True(bn.Training);
                bn.Forward(batches[b], [sizes[b], c, 1, s], y.AsSpan(0, batches[b].Length));
            }
        });
        Assert.False(bn.Training);
        Assert.Equal(0.3, bn.Momentum);
        Assert.Equal(3, bn.NumBatchesTracked);
        for (int ch = 0; ch < c; ch++)
        {
            double meanOfMeans = 0, meanOfVars = 0;
            for (int b = 0; b < batches.Length; b++)
            {
                var v = Enumerable.Range(0, sizes[b]).SelectMany(n => Enumerable.Range(0, s).Select(k => (double)batches[b][(n * c + ch) * s + k])).ToArray();
                double m = v.Average();
                meanOfMeans += m / batches.Length;
                meanOfVars += v.Sum(x => (x - m) * (x - m)) / (v.Length - 1) / batches.Length;
            }
            // float32 statistics of 10-30 values: a few ulps of the running values.
            Assert.Equal(meanOfMeans, bn.RunningMean![ch], 5e-6 * Math.Abs(meanOfMeans) + 1e-6);
            Assert.Equal(meanOfVars, bn.RunningVar![ch], 5e-6 * meanOfVars + 1e-6);
        }
    }

    [Fact]
    public void Every_layer_given_is_recomputed_and_a_later_momentum_update_is_unchanged()
    {
        var r = new Random(2);
        var a = new BatchNorm1d<double>(4);
        var b = new BatchNorm1d<double>(4, momentum: null);
        var x = Enumerable.Range(0, 8 * 4).Select(_ => r.NextDouble() * 3).ToArray();
        var y = new double[x.Length];
        BatchNormRecalibration.Recompute([a, b], () => { a.Forward(x, [8, 4], y); b.Forward(y, [8, 4], y.ToArray()); });
        Assert.Equal(1, a.NumBatchesTracked);
        Assert.Equal(1, b.NumBatchesTracked);
        double m0 = Enumerable.Range(0, 8).Average(n => x[n * 4]);
        Assert.Equal(m0, a.RunningMean![0], 1e-12);
        Assert.Equal(0, b.RunningMean![0], 1e-12);   // b saw a's output: mean 0 per feature
        // After the recompute, a's own momentum (0.1) drives the next training update again.
        double before = a.RunningMean![0];
        var x2 = x.Select(v => v + 10).ToArray();
        a.Forward(x2, [8, 4], y);
        Assert.Equal(before + 0.1 * (m0 + 10 - before), a.RunningMean![0], 1e-12);
    }

    [Fact]
    public void A_failing_pass_leaves_every_layer_as_it_was()
    {
        var r = new Random(3);
        var bn = new BatchNorm1d<float>(2);
        var x = Enumerable.Range(0, 6 * 2).Select(_ => (float)r.NextDouble()).ToArray();
        var y = new float[x.Length];
        bn.Forward(x, [6, 2], y);
        bn.Forward(x, [6, 2], y);
        bn.Eval();
        var mean = bn.RunningMean!.ToArray();
        var variance = bn.RunningVar!.ToArray();
        var e = Assert.Throws<InvalidOperationException>(() => BatchNormRecalibration.Recompute([bn], () =>
        {
            bn.Forward(x.Select(v => v * 5).ToArray(), [6, 2], y);
            throw new InvalidOperationException("data ran out");
        }));
        Assert.Equal("data ran out", e.Message);
        Assert.Equal(mean, bn.RunningMean!.ToArray());
        Assert.Equal(variance, bn.RunningVar!.ToArray());
        Assert.Equal(2, bn.NumBatchesTracked);
        Assert.False(bn.Training);
    }

    [Fact]
    public void Layers_without_running_statistics_or_given_twice_are_refused_by_name()
    {
        var plain = new BatchNorm1d<float>(2, trackRunningStats: false);
        var bn = new BatchNorm1d<float>(2);
        bool ran = false;
        var e = Assert.Throws<ArgumentException>(() => BatchNormRecalibration.Recompute([bn, plain], () => ran = true));
        Assert.Equal("layers", e.ParamName);
        Assert.Contains("layers[1] keeps no running statistics", e.Message);
        e = Assert.Throws<ArgumentException>(() => BatchNormRecalibration.Recompute([bn, bn], () => ran = true));
        Assert.Contains("layers[1] is the same layer as layers[0]", e.Message);
        Assert.Throws<ArgumentNullException>("forwardAll", () => BatchNormRecalibration.Recompute([bn], null!));
        Assert.False(ran);
        Assert.Equal(0, bn.NumBatchesTracked);
    }
}
