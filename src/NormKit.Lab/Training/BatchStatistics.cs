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

/// <summary>
/// How far one batch's statistics stray from the running ones at a BatchNorm (Shen et al. 2020,
/// PowerNorm, Fig. 2), per channel c of C, with mu_B, var_B the batch's mean and variance (unbiased,
/// the value the running variance averages) and mu, var the running ones after that batch's update:
/// <list type="bullet">
/// <item><see cref="Mean"/> = (1/C) ||mu_B - mu||_2, the paper's form. It carries the features' units,
/// and (1/C)||.|| shrinks as 1/sqrt(C) for equal per-channel deviations, so two layers of different
/// scale or width cannot be compared with it.</item>
/// <item><see cref="MeanScaleFree"/> = sqrt(mean_c ((mu_B - mu) / sqrt(var + eps))^2): the root mean
/// square over channels of the batch mean's deviation in units of the channel's running standard
/// deviation; unchanged when a channel is scaled, and independent of C.</item>
/// <item><see cref="VarianceScaleFree"/> = sqrt(mean_c (var_B / (var + eps) - 1)^2): the same for the
/// variance, as a relative deviation.</item>
/// </list>
/// For independent values, <see cref="MeanScaleFree"/> would be about 1/sqrt(n) with n = the values
/// per channel in a batch (<see cref="ValuesPerChannel"/>); more than that means the batch's values
/// are correlated or its distribution moves between batches.
/// </summary>
public readonly record struct Fluctuation(double Mean, double MeanScaleFree, double VarianceScaleFree, long ValuesPerChannel)
{
    /// <summary>
    /// The fluctuation at the BatchNorm in <paramref name="norm"/> for the batch it last saw in
    /// training (call after the forward: the running statistics include that batch).
    /// </summary>
    public static Fluctuation Of(Norm<float> norm)
    {
        if (norm.Layer is not BatchNorm<float> bn || bn.RunningMean is null || bn.RunningVar is null)
            throw new ArgumentException($"norm must hold a BatchNorm with running statistics but holds {norm.Layer.GetType().Name}.", nameof(norm));
        var (x, shape) = norm.LastInput;
        int n = shape[0], c = shape[1], s = 1;
        for (int i = 2; i < shape.Length; i++) s *= shape[i];
        long count = (long)n * s;
        if (count < 2) throw new ArgumentException($"the last batch must hold at least 2 values per channel but held {count}.", nameof(norm));
        var runningMean = bn.RunningMean.ToArray();
        var runningVar = bn.RunningVar.ToArray();
        double meanSq = 0, shiftSq = 0, ratioSq = 0;
        for (int ch = 0; ch < c; ch++)
        {
            double sum = 0;
            for (int a = 0; a < n; a++)
                for (int k = 0; k < s; k++) sum += x[(a * c + ch) * s + k];
            double mean = sum / count, m2 = 0;
            for (int a = 0; a < n; a++)
                for (int k = 0; k < s; k++) { double d = x[(a * c + ch) * s + k] - mean; m2 += d * d; }
            double variance = m2 / (count - 1), running = runningVar[ch] + bn.Eps;
            double shift = mean - runningMean[ch];
            meanSq += shift * shift;
            shiftSq += shift * shift / running;
            double ratio = variance / running - 1;
            ratioSq += ratio * ratio;
        }
        return new Fluctuation(Math.Sqrt(meanSq) / c, Math.Sqrt(shiftSq / c), Math.Sqrt(ratioSq / c), count);
    }
}

/// <summary>The mean of each <see cref="Fluctuation"/> measure over the steps of a run.</summary>
public sealed class FluctuationAccumulator
{
    private readonly MeanAccumulator _mean = new(), _meanScaleFree = new(), _varianceScaleFree = new();
    public void Add(Fluctuation f) { _mean.Add(f.Mean); _meanScaleFree.Add(f.MeanScaleFree); _varianceScaleFree.Add(f.VarianceScaleFree); ValuesPerChannel = f.ValuesPerChannel; }
    public int Count => _mean.Count;
    public long ValuesPerChannel { get; private set; }
    public Fluctuation Mean => new(_mean.Mean, _meanScaleFree.Mean, _varianceScaleFree.Mean, ValuesPerChannel);
}

/// <summary>Batch statistics of a model's norm layers: their fluctuation, and AdaBN.</summary>
public static class BatchStatistics
{
    /// <summary>The mean <see cref="Fluctuation"/> at <paramref name="norm"/> over the trainer's steps after <paramref name="afterStep"/>.</summary>
    public static FluctuationAccumulator FluctuationAfter(Trainer<float> trainer, Norm<float> norm, int afterStep)
    {
        var mean = new FluctuationAccumulator();
        trainer.AfterBackward += s => { if (s.Step > afterStep) mean.Add(Fluctuation.Of(norm)); };
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
