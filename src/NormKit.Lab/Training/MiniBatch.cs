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
