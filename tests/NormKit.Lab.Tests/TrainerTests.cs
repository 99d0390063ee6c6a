using NormKit.Kernels;
using NormKit.Lab.Data;
using NormKit.Lab.Results;
using NormKit.Lab.Training;
using NormKit.Layers;

namespace NormKit.Lab.Tests;

/// <summary>The one trainer: schedules, weight decay, callbacks, buffers kept across steps.</summary>
[Collection("Lab threading")]   // sets the global thread count
public class TrainerTests
{
    [Fact]
    public void Step_schedule_multiplies_the_rate_after_each_fraction()
    {
        var s = Schedule.Steps(0.1, 0.5, 0.75);
        Assert.Equal(1, s.Factor(1, 100));
        Assert.Equal(1, s.Factor(50, 100));
        Assert.Equal(0.1, s.Factor(51, 100), 15);
        Assert.Equal(0.1, s.Factor(75, 100), 15);
        Assert.Equal(0.01, s.Factor(76, 100), 15);
        Assert.Equal(1, Schedule.Constant.Factor(77, 100));
    }

    [Fact]
    public void Cosine_schedule_falls_from_one_to_its_floor()
    {
        var s = Schedule.Cosine(floor: 0.1);
        Assert.Equal(1, s.Factor(1, 100), 15);
        Assert.Equal(0.55, s.Factor(51, 100), 12);                           // half way: (1 + 0.1) / 2
        Assert.Equal(0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * 99 / 100)), s.Factor(100, 100), 15);
        Assert.True(s.Factor(100, 100) > 0.1);
    }

    [Fact]
    public void Sgd_with_weight_decay_follows_PyTorchs_update()
    {
        // torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.1) on p = 1 with gradient 0.5 twice, by hand:
        // step 1: g = 0.5 + 0.1 * 1 = 0.6, v = 0.6, p = 1 - 0.06 = 0.94
        // step 2: g = 0.5 + 0.094 = 0.594, v = 0.54 + 0.594 = 1.134, p = 0.94 - 0.1134 = 0.8266
        var p = new Param<double>("w", [1.0]);
        var sgd = new Sgd<double>(0.1, momentum: 0.9, weightDecay: 0.1);
        p.Grad[0] = 0.5; sgd.Step([p]);
        Assert.Equal(0.94, p.Value[0], 14);
        Assert.Equal(0, p.Grad[0]);
        p.Grad[0] = 0.5; sgd.Step([p]);
        Assert.Equal(0.8266, p.Value[0], 14);
    }

    [Fact]
    public void AdamW_decays_the_weight_apart_from_the_gradient()
    {
        // A zero gradient leaves only the decoupled decay: p = p (1 - lr wd).
        var p = new Param<double>("w", [2.0]);
        var adam = new AdamW<double>(0.01, weightDecay: 0.5);
        adam.Step([p]);
        Assert.Equal(2.0 * (1 - 0.01 * 0.5), p.Value[0], 15);
    }

    [Fact]
    public void The_trainer_sets_the_scheduled_rate_and_records_every_loss()
    {
        var (train, _) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var rng = new Rng(3);
        var model = new Sequential<float>([new Linear<float>(784, 32, Init.Kaiming, rng), new Activation<float>(Activation<float>.Kind.ReLU), new Linear<float>(32, 10, Init.Glorot, rng)]);
        var settings = new TrainSettings(40, OptimizerSettings.Sgd(0.2, momentum: 0.9), Schedule.Steps(0.5, 0.5));
        var trainer = new Trainer<float>(model, Images.Random<float>(train, 16), settings, rng);
        var rates = new List<double>();
        trainer.AfterBackward += s =>
        {
            rates.Add(s.LearningRate);
            Assert.Contains(trainer.Parameters, p => p.Grad.IndexOfAnyExcept(0f) >= 0);   // the gradients are there before the step
        };
        double final = trainer.Run();
        Assert.Equal(Enumerable.Repeat(0.2, 20).Concat(Enumerable.Repeat(0.1, 20)), rates);
        Assert.All(trainer.Losses, l => Assert.True(double.IsFinite(l) && l > 0));
        Assert.Equal(trainer.Losses[36..].Average(), final, 12);   // the mean over the last tenth
        Assert.True(trainer.Losses[^4..].Average() < trainer.Losses[..4].Average(), "training did not lower the loss");
    }

    [Fact]
    public void A_run_whose_loss_becomes_NaN_stops_there_and_says_it_diverged()
    {
        var (train, _) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var rng = new Rng(4);
        var model = new Sequential<float>([new Linear<float>(784, 32, Init.Kaiming, rng), new Activation<float>(Activation<float>.Kind.ReLU), new Linear<float>(32, 10, Init.Glorot, rng)]);
        // A rate of 1e30 overflows the weights within a few steps.
        var trainer = new Trainer<float>(model, Images.Random<float>(train, 16), new TrainSettings(50, OptimizerSettings.Sgd(1e30, momentum: 0.9)), rng);
        var progress = new List<string>();
        var meter = new ProgressMeter(50, progress.Add);
        double final = trainer.Run(meter);
        Assert.True(trainer.Diverged);
        Assert.True(double.IsNaN(final));
        int first = Array.FindIndex(trainer.Losses, l => !double.IsFinite(l));
        Assert.InRange(first, 1, 48);   // stopped early, after some finite steps
        Assert.All(trainer.Losses[..first], l => Assert.True(double.IsFinite(l)));
        Assert.All(trainer.Losses[(first + 1)..], l => Assert.True(double.IsNaN(l)));
        Assert.Equal(50, meter.Steps);   // the skipped steps count as done for the time left

        var healthy = new Trainer<float>(new Sequential<float>([new Linear<float>(784, 10, Init.Glorot, new Rng(5))]), Images.Random<float>(train, 16),
            new TrainSettings(5, OptimizerSettings.Sgd(0.01)), new Rng(5));
        Assert.True(double.IsFinite(healthy.Run()));
        Assert.False(healthy.Diverged);
    }

    public static TheoryData<string> Arms() => new(["none", "BatchNorm", "LayerNorm", "GroupNorm"]);

    [Theory, MemberData(nameof(Arms))]
    public void A_training_step_allocates_nothing_in_steady_state(string arm)
    {
        var (train, _) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var rng = new Rng(5);
        var layers = new List<ILayer<float>> { new Linear<float>(784, 64, Init.Kaiming, rng) };
        if (arm == "BatchNorm") layers.Add(new Norm<float>(new BatchNorm1d<float>(64), 64));
        if (arm == "LayerNorm") layers.Add(new Norm<float>(new LayerNorm<float>(64), 64));
        if (arm == "GroupNorm") layers.Add(new Norm<float>(new GroupNorm<float>(8, 64), 64));
        layers.AddRange([new Activation<float>(Activation<float>.Kind.ReLU), new Linear<float>(64, 10, Init.Glorot, rng)]);
        foreach (var optimizer in new[] { OptimizerSettings.Sgd(0.05, 0.9, 1e-4), OptimizerSettings.AdamW(1e-3, 0.01) })
        {
            var trainer = new Trainer<float>(new Sequential<float>(layers), Images.Random<float>(train, 32), new TrainSettings(10, optimizer, Schedule.Cosine()), rng);
            int previous = NormKitThreading.MaxDegreeOfParallelism;
            try
            {
                NormKitThreading.MaxDegreeOfParallelism = 1;
                trainer.Step(1); trainer.Step(2);   // first steps size the buffers and the optimizer's state
                // Steady state: the fewest bytes of three windows of two steps. A one-time cost inside a
                // window (a pooled buffer rented again after a full garbage collection that other
                // tests ran in parallel trimmed the pool) is not per step; an allocation per step
                // shows in every window.
                long fewest = long.MaxValue;
                for (int window = 0, step = 3; window < 3 && fewest > 0; window++, step += 2)
                {
                    long before = GC.GetAllocatedBytesForCurrentThread();
                    trainer.Step(step); trainer.Step(step + 1);
                    fewest = Math.Min(fewest, GC.GetAllocatedBytesForCurrentThread() - before);
                }
                Assert.Equal(0, fewest);
            }
            finally { NormKitThreading.MaxDegreeOfParallelism = previous; }
        }
    }

    [Fact]
    public void Shuffled_batches_show_every_image_once_per_epoch_in_a_new_order()
    {
        var (_, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var split = Images.First(test, 40);
        var batches = Images.Shuffled<float>(split, 8);
        var rng = new Rng(7);
        var x = new float[8 * 784];
        var y = new byte[8];
        List<int> Epoch()
        {
            var seen = new List<int>();
            for (int b = 0; b < 5; b++)
            {
                batches.Next(rng, x, y);
                for (int i = 0; i < 8; i++)   // which image: find its pixels in the split
                    seen.Add(Enumerable.Range(0, 40).Single(k => split.Pixels.AsSpan(k * 784, 784).SequenceEqual(x.AsSpan(i * 784, 784)) && split.Labels[k] == y[i]));
            }
            return seen;
        }
        var first = Epoch();
        var second = Epoch();
        Assert.Equal(Enumerable.Range(0, 40), first.Order());
        Assert.Equal(Enumerable.Range(0, 40), second.Order());
        Assert.NotEqual(first, second);
        Assert.Throws<ArgumentOutOfRangeException>("count", () => Images.First(test, 201));
    }

    [Fact]
    public void Evaluation_counts_only_whole_batches_and_matches_a_direct_count()
    {
        var (_, test) = FashionMnist.TrainAndTest(FashionMnist.SampleFolder);
        var rng = new Rng(6);
        var model = new Sequential<float>([new Linear<float>(784, 10, Init.Glorot, rng)]);
        var batches = Images.InOrder<float>(test, 1000, 64);   // 200 test images: 3 batches of 64, 8 left out
        Assert.Equal(3, batches.Count);
        var result = Evaluation.Run(model, batches, 10);
        Assert.Equal(192, result.Rows);
        var logits = model.Forward(test.Pixels[..(192 * 784)], 192, training: false);
        Assert.Equal(CrossEntropy.Correct<float>(logits, test.Labels.AsSpan(0, 192), 192, 10) / 192.0, result.Accuracy);
    }

    [Fact]
    public void Progress_names_steps_rate_and_time_left()
    {
        var lines = new List<string>();
        var meter = new ProgressMeter(10, lines.Add) { Interval = TimeSpan.FromHours(1) };
        for (int i = 0; i < 10; i++) meter.Advance(1.5, 32);
        Assert.Equal(2, lines.Count);   // the first step and the last
        Assert.StartsWith("step 10/10 (100%), loss 1.500, ", lines[^1]);
        Assert.EndsWith("0 s left", lines[^1]);
        Assert.Equal("1 h 01 min", ProgressMeter.Duration(3660));
        Assert.Equal("2 min 05 s", ProgressMeter.Duration(125));
        Assert.Equal("9 s", ProgressMeter.Duration(9.2));
        Assert.Equal("?", ProgressMeter.Duration(double.NaN));
    }
}

public class ResultTableTests
{
    [Fact]
    public void Csv_quotes_only_what_needs_it_and_writes_numbers_invariantly()
    {
        var t = new ResultTable("arm", "init", "loss", "norms").Add("none", "N(0,0.01^2)", 0.123456789, new[] { 1.5, double.NaN, 2e-7 })
            .Add("BatchNorm", "say \"hi\"", double.NaN, Array.Empty<double>());
        Assert.Equal("arm,init,loss,norms\nnone,\"N(0,0.01^2)\",0.123457,1.5;;2E-07\nBatchNorm,\"say \"\"hi\"\"\",,\n", t.ToCsv());
    }

    [Fact]
    public void A_row_of_the_wrong_width_is_refused_by_name()
    {
        var t = new ResultTable("a", "b");
        var e = Assert.Throws<ArgumentException>(() => t.Add(1));
        Assert.Equal("values", e.ParamName);
        Assert.Contains("needs 2 values (a, b) but got 1", e.Message);
        Assert.Empty(t.Rows);
    }
}
