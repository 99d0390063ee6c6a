using System.Numerics;
using NormKit.Layers;

namespace NormKit.Lab.Training;

/// <summary>
/// How the lab runs Batch Renormalization (Ioffe 2017): the paper's schedule of relaxing the
/// clips and its averaging rate, both scaled to the lab's short runs.
/// </summary>
/// <remarks>
/// The paper trains as plain BatchNorm (r_max = 1, d_max = 0) for 5,000 steps, then relaxes the
/// clips linearly to reach d_max = 5 at 25,000 steps and r_max = 3 at 40,000 steps. Its whole run's
/// length is not given, so the lab takes those steps as fractions of a 100,000-step run: plain
/// BatchNorm for the first 5% of the steps, d_max = 5 at 25% and r_max = 3 at 40%.
/// </remarks>
public static class RenormSchedule
{
    /// <summary>Where the relaxing starts and ends, as fractions of the run.</summary>
    public const double Start = 0.05, DMaxReached = 0.25, RMaxReached = 0.40;

    /// <summary>The paper's final clips.</summary>
    public const double FinalRMax = 3, FinalDMax = 5;

    /// <summary>r_max before training step <paramref name="step"/> (1-based) of <paramref name="steps"/>.</summary>
    public static double RMax(int step, int steps) => 1 + (FinalRMax - 1) * Ramp(step, steps, RMaxReached);

    /// <summary>d_max before training step <paramref name="step"/> (1-based) of <paramref name="steps"/>.</summary>
    public static double DMax(int step, int steps) => FinalDMax * Ramp(step, steps, DMaxReached);

    private static double Ramp(int step, int steps, double end)
    {
        double t = steps <= 0 ? 1 : (step - 1) / (double)steps;
        return Math.Clamp((t - Start) / (end - Start), 0, 1);
    }

    /// <summary>
    /// The moving averages' rate: the paper's 0.01 at 32 images per batch averages over about
    /// 100 batches, 3,200 images; the lab keeps 3,200 images at any batch (batch / 3,200), but at
    /// most a tenth of the run (10 / steps) and at most PyTorch's default of 0.1, so that the
    /// averages settle within a short run.
    /// </summary>
    public static double Momentum(int batch, int steps) => Math.Min(0.1, Math.Max(batch / 3200.0, 10.0 / Math.Max(1, steps)));

    /// <summary>
    /// Sets every <see cref="BatchRenorm{T}"/> of <paramref name="model"/> to the schedule's clips
    /// before each of <paramref name="trainer"/>'s steps. Does nothing for a model without one.
    /// </summary>
    public static void Attach<T>(Trainer<T> trainer, Sequential<T> model) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var layers = BatchStatistics.NormLayers(model).OfType<BatchRenorm<T>>().ToList();
        if (layers.Count == 0) return;
        int steps = trainer.Losses.Length;
        void Set(int step)
        {
            foreach (var layer in layers)
            {
                layer.RMax = RMax(step, steps);
                layer.DMax = DMax(step, steps);
            }
        }
        Set(1);
        trainer.AfterBackward += s => Set(s.Step + 1);
    }
}
