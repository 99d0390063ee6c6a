using NormKit.Lab.Data;

namespace NormKit.Lab.Training;

/// <summary>What every experiment's training loop does each step before the optimizer.</summary>
public static class MiniBatch
{
    /// <summary>Draws y.Length images at random (with replacement) from <paramref name="split"/> into x and y.</summary>
    public static void Sample(FashionMnist.Split split, Rng rng, float[] x, byte[] y)
    {
        int d = split.Features;
        for (int b = 0; b < y.Length; b++)
        {
            int k = rng.Next(split.Count);
            split.Pixels.AsSpan(k * d, d).CopyTo(x.AsSpan(b * d, d));
            y[b] = split.Labels[k];
        }
    }

    /// <summary>Forward in training mode, softmax cross-entropy over 10 classes, backward; returns the loss.</summary>
    public static double ForwardBackward(Sequential<float> model, float[] x, byte[] y)
    {
        var logits = model.Forward(x, y.Length, training: true);
        var g = new float[logits.Length];
        double loss = CrossEntropy.LossAndGradient<float>(logits, y, y.Length, 10, g);
        model.Backward(g);
        return loss;
    }
}

/// <summary>How far a batch's statistics stray from the running ones (Shen et al., PowerNorm Fig. 2).</summary>
public static class BatchStatistics
{
    /// <summary>
    /// (1/C) * ||mu_B - mu||_2 for the BatchNorm in <paramref name="norm"/>: mu_B is the per-channel
    /// mean of the batch it last saw, mu its running mean (after that batch's update).
    /// </summary>
    public static double MeanFluctuation(Norm<float> norm)
    {
        if (norm.Layer is not NormKit.Layers.BatchNorm<float> bn || bn.RunningMean is null)
            throw new ArgumentException("MeanFluctuation needs a BatchNorm with running statistics.", nameof(norm));
        var (x, shape) = norm.LastInput;
        int n = shape[0], c = shape[1], s = 1;
        for (int i = 2; i < shape.Length; i++) s *= shape[i];
        var running = bn.RunningMean.ToArray();
        double sq = 0;
        for (int ch = 0; ch < c; ch++)
        {
            double sum = 0;
            for (int a = 0; a < n; a++)
                for (int k = 0; k < s; k++) sum += x[(a * c + ch) * s + k];
            double d = sum / ((double)n * s) - running[ch];
            sq += d * d;
        }
        return Math.Sqrt(sq) / c;
    }
}
