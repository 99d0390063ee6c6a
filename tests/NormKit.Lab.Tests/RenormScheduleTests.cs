using NormKit.Lab.Data;
using NormKit.Lab.Experiments;
using NormKit.Lab.Training;
using NormKit.Layers;

namespace NormKit.Lab.Tests;

/// <summary>Batch Renormalization as the lab runs it: the paper's clip schedule scaled to the run, and its averaging rate.</summary>
public class RenormScheduleTests
{
    [Fact]
    public void The_clips_stay_at_plain_BatchNorm_then_relax_linearly_to_the_papers_values()
    {
        // 1000 steps: plain BatchNorm before step 51 (5%), d_max 5 from step 251 (25%), r_max 3 from step 401 (40%).
        Assert.Equal((1.0, 0.0), (RenormSchedule.RMax(1, 1000), RenormSchedule.DMax(1, 1000)));
        Assert.Equal((1.0, 0.0), (RenormSchedule.RMax(51, 1000), RenormSchedule.DMax(51, 1000)));
        Assert.Equal(2.5, RenormSchedule.DMax(151, 1000), 12);                  // halfway from 5% to 25%
        Assert.Equal(1 + 2 * 100 / 350.0, RenormSchedule.RMax(151, 1000), 12);  // 100 of the 350 steps from 5% to 40%
        Assert.Equal(5.0, RenormSchedule.DMax(251, 1000), 12);
        Assert.Equal(3.0, RenormSchedule.RMax(401, 1000), 12);
        Assert.Equal((3.0, 5.0), (RenormSchedule.RMax(1000, 1000), RenormSchedule.DMax(1000, 1000)));
    }

    [Fact]
    public void The_averaging_rate_spans_3200_images_but_at_most_a_tenth_of_the_run()
    {
        Assert.Equal(0.01, RenormSchedule.Momentum(32, 100_000), 12);   // the paper's setting
        Assert.Equal(0.04, RenormSchedule.Momentum(128, 10_000), 12);
        Assert.Equal(10.0 / 3000, RenormSchedule.Momentum(2, 3000), 12);  // 2 / 3200 would average over more than a tenth of 3000 steps
        Assert.Equal(0.1, RenormSchedule.Momentum(512, 1000), 12);      // capped at PyTorch's default
    }

    [Fact]
    public void Attach_sets_every_BatchRenorm_before_each_step()
    {
        var (train, _) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var c = BatchSize.Config.Quick with { Hidden = 16 };
        var rng = new Rng(1);
        var model = BatchSize.Model("BatchRenorm", c, rng, batch: 8);
        var layers = BatchStatistics.NormLayers(model).OfType<BatchRenorm<float>>().ToList();
        Assert.Equal(2, layers.Count);
        var trainer = new Trainer<float>(model, Images.Random<float>(train, 8), new TrainSettings(20, OptimizerSettings.AdamW(1e-3)), rng);
        RenormSchedule.Attach(trainer, model);
        Assert.All(layers, l => Assert.Equal((1.0, 0.0), (l.RMax, l.DMax)));
        var seen = new List<(int Step, double RMax, double DMax)>();
        trainer.AfterBackward += s => seen.Add((s.Step, layers[1].RMax, layers[1].DMax));
        trainer.Run();
        // After step s the layers hold step s + 1's clips (the schedule's handler runs first).
        Assert.All(seen, x => Assert.Equal((RenormSchedule.RMax(x.Step + 1, 20), RenormSchedule.DMax(x.Step + 1, 20)), (x.RMax, x.DMax)));
        Assert.Equal(3.0, layers[0].RMax, 12);
    }
}
