using NormKit.Lab.Data;
using NormKit.Lab.Experiments;
using NormKit.Lab.Training;
using NormKit.Layers;

namespace NormKit.Lab.Tests;

public class ShiftTests
{
    [Fact]
    public void The_changes_do_what_their_names_say()
    {
        var (_, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        float p = test.Pixels.First(v => v > 0.2f && v < 0.8f);
        int i = Array.IndexOf(test.Pixels, p);
        float At(string name) => Shift.Apply(test, Shift.Changes.Single(c => c.Name == name)).Pixels[i];
        Assert.Equal(p, At("none"));
        Assert.Equal(p + 0.4f, At("brightness +0.4"));
        Assert.Equal(0.5f * p + 0.25f, At("contrast x0.5"));
        Assert.Equal(2f * p - 0.5f, At("contrast x2"));
        Assert.Equal(1f - p, At("inverted"));
        var noisy = Shift.Apply(test, Shift.Changes.Single(c => c.Name == "noise sd 0.3")).Pixels;
        double sd = Math.Sqrt(noisy.Zip(test.Pixels, (a, b) => (double)(a - b) * (a - b)).Average());
        Assert.InRange(sd, 0.29, 0.31);   // 157k draws: the sample sd is within 1% of 0.3
        Assert.Equal(noisy, Shift.Apply(test, Shift.Changes.Single(c => c.Name == "noise sd 0.3")).Pixels);   // the same noise every time
    }

    [Fact]
    public void AdaBN_puts_the_shifted_datas_statistics_into_every_BatchNorm()
    {
        var (_, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var model = Vision.Model<float>("BatchNorm", new Rng(1));
        var bright = Shift.Apply(test, Shift.Changes.Single(c => c.Name == "brightness +0.4"));
        var batches = Images.InOrder<float>(bright, 200, 50);
        Assert.Equal(2, BatchStatistics.Recompute(model, batches));
        var first = (BatchNorm<float>)((Norm<float>)model.Layers[1]).Layer;
        Assert.Equal(4, first.NumBatchesTracked);
        // The first BatchNorm sees the first conv's output: its running mean is the mean over the
        // four batches of each batch's channel mean, i.e. (equal batches) the channel mean over all 200 images.
        var conv = (Conv2d<float>)model.Layers[0];
        var all = new float[200 * 784];
        bright.Pixels.AsSpan(0, all.Length).CopyTo(all);
        var y = conv.Forward(all, 200, training: false);
        for (int ch = 0; ch < 8; ch++)
        {
            double mean = Enumerable.Range(0, 200).Average(n => y.AsSpan((n * 8 + ch) * 784, 784).ToArray().Average(v => (double)v));
            Assert.Equal(mean, first.RunningMean![ch], 1e-4 * Math.Max(1, Math.Abs(mean)));   // float32 sums of 39k values
        }
    }
}
