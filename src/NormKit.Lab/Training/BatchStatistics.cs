using NormKit.Layers;

namespace NormKit.Lab.Training;

/// <summary>A mean of values added one at a time.</summary>
public sealed class MeanAccumulator
{
    private double _sum;
    public int Count { get; private set; }
    public void Add(double v) { _sum += v; Count++; }
    public double Mean => Count > 0 ? _sum / Count : double.NaN;
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
        if (norm.Layer is not BatchNorm<float> bn || bn.RunningMean is null)
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

    /// <summary>The mean of <see cref="MeanFluctuation"/> over the trainer's steps after <paramref name="afterStep"/>.</summary>
    public static MeanAccumulator MeanFluctuationAfter(Trainer<float> trainer, Norm<float> norm, int afterStep)
    {
        var mean = new MeanAccumulator();
        trainer.AfterBackward += s => { if (s.Step > afterStep) mean.Add(MeanFluctuation(norm)); };
        return mean;
    }

    /// <summary>Every NormKit layer of <paramref name="model"/> in forward order, inside residual blocks and branches too.</summary>
    public static IEnumerable<NormLayer<T>> NormLayers<T>(Sequential<T> model) where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
    {
        static IEnumerable<NormLayer<T>> Of(ILayer<T>? layer) => layer switch
        {
            Norm<T> n => [n.Layer],
            ResidualBlock<T> b => new[] { b.Norm1, b.Norm2, b.ShortcutNorm }.SelectMany(Of),
            Residual<T> r => r.Inner.SelectMany(Of),
            _ => [],
        };
        return model.Layers.SelectMany(Of);
    }

    /// <summary>
    /// AdaBN (Li et al. 2016): re-estimates every BatchNorm's running statistics of
    /// <paramref name="model"/> on <paramref name="data"/> (the library's
    /// <see cref="BatchNormRecalibration.Recompute"/>: cumulative average over the batches, as
    /// torch.optim.swa_utils.update_bn). Returns how many layers it recomputed.
    /// </summary>
    public static int Recompute<T>(Sequential<T> model, IEvaluationBatches<T> data) where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
    {
        var layers = NormLayers(model).OfType<BatchNorm<T>>().ToList();
        var x = new T[data.Inputs];
        var y = new byte[data.Rows];
        BatchNormRecalibration.Recompute(layers, () =>
        {
            for (int b = 0; b < data.Count; b++)
            {
                data.Get(b, x, y);
                model.Forward(x, data.Rows, training: true);
            }
        });
        return layers.Count;
    }
}
