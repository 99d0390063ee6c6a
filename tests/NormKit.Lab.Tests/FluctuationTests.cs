using NormKit.Lab.Training;
using NormKit.Layers;

namespace NormKit.Lab.Tests;

public class FluctuationTests
{
    [Fact]
    public void The_three_measures_match_a_hand_computation()
    {
        // Two channels, four samples. Momentum 0 keeps the running statistics at their start
        // (mean 0, variance 1), so the batch strays from them by its own mean and variance; eps 1e-12
        // (it must be > 0) moves the expected values by about 1e-12.
        var norm = new Norm<float>(new BatchNorm1d<float>(2, eps: 1e-12, momentum: 0.0), 2);
        float[] batch = [1, 20, 3, 20, 5, 60, 7, 60];        // channel 0: 1 3 5 7 (mean 4, unbiased var 20/3); channel 1: 20 20 60 60 (mean 40, var 1600/3)
        norm.Forward(batch, 4, training: true);
        var f = Fluctuation.Of(norm);

        double d0 = 4, d1 = 40;
        Assert.Equal(Math.Sqrt(d0 * d0 + d1 * d1) / 2, f.Mean, 4);
        Assert.Equal(Math.Sqrt((d0 * d0 + d1 * d1) / 2), f.MeanScaleFree, 4);        // running sd 1
        double r0 = 20.0 / 3 - 1, r1 = 1600.0 / 3 - 1;
        Assert.Equal(Math.Sqrt((r0 * r0 + r1 * r1) / 2), f.VarianceScaleFree, 3);
        Assert.Equal(4, f.ValuesPerChannel);
    }

    [Fact]
    public void The_scale_free_measures_do_not_change_when_a_channel_is_scaled()
    {
        Fluctuation After(float scale)
        {
            var norm = new Norm<float>(new BatchNorm1d<float>(3, eps: 1e-12), 3);
            var r = new Random(5);
            for (int step = 0; step < 300; step++)   // 0.9^300: the running statistics have forgotten their unscaled start (0, 1)
            {
                var x = new float[64 * 3];
                for (int i = 0; i < x.Length; i++) x[i] = (float)r.NextDouble() * (i % 3 == 1 ? scale : 1);
                norm.Forward(x, 64, training: true);
            }
            return Fluctuation.Of(norm);
        }
        var one = After(1);
        var thousand = After(1000);
        Assert.Equal(one.MeanScaleFree, thousand.MeanScaleFree, 4);
        Assert.Equal(one.VarianceScaleFree, thousand.VarianceScaleFree, 4);
        Assert.True(thousand.Mean > 100 * one.Mean, $"the paper's form carries the units: {one.Mean} vs {thousand.Mean}");
    }

    [Fact]
    public void A_norm_without_running_statistics_is_refused()
    {
        var norm = new Norm<float>(new LayerNorm<float>(3), 3);
        norm.Forward(new float[6], 2, training: true);
        var e = Assert.Throws<ArgumentException>(() => Fluctuation.Of(norm));
        Assert.Equal("norm", e.ParamName);
        Assert.Contains("LayerNorm", e.Message);
    }
}
