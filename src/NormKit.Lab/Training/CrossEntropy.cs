using System.Numerics;
using System.Numerics.Tensors;

namespace NormKit.Lab.Training;

/// <summary>Softmax cross-entropy over k classes, averaged over the batch.</summary>
public static class CrossEntropy
{
    /// <summary>Returns the mean loss and writes d(loss)/d(logits) into <paramref name="grad"/>.</summary>
    public static double LossAndGradient<T>(ReadOnlySpan<T> logits, ReadOnlySpan<byte> labels, int batch, int classes, Span<T> grad)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        double loss = 0;
        T invBatch = T.One / T.CreateTruncating(batch);
        for (int n = 0; n < batch; n++)
        {
            var z = logits.Slice(n * classes, classes);
            var g = grad.Slice(n * classes, classes);
            T max = TensorPrimitives.Max(z);
            double sum = 0;
            for (int k = 0; k < classes; k++) sum += Math.Exp(double.CreateTruncating(z[k] - max));
            double logSum = Math.Log(sum) + double.CreateTruncating(max);
            loss += logSum - double.CreateTruncating(z[labels[n]]);
            for (int k = 0; k < classes; k++)
            {
                double p = Math.Exp(double.CreateTruncating(z[k]) - logSum);
                g[k] = T.CreateTruncating(p - (k == labels[n] ? 1 : 0)) * invBatch;
            }
        }
        return loss / batch;
    }

    /// <summary>The fraction of rows whose largest logit is the label.</summary>
    public static double Accuracy<T>(ReadOnlySpan<T> logits, ReadOnlySpan<byte> labels, int batch, int classes) where T : unmanaged, IFloatingPointIeee754<T> =>
        (double)Correct(logits, labels, batch, classes) / batch;

    /// <summary>How many rows have their largest logit at the label.</summary>
    public static int Correct<T>(ReadOnlySpan<T> logits, ReadOnlySpan<byte> labels, int batch, int classes) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int right = 0;
        for (int n = 0; n < batch; n++)
            if (TensorPrimitives.IndexOfMax(logits.Slice(n * classes, classes)) == labels[n]) right++;
        return right;
    }
}
