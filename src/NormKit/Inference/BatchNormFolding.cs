using System.Numerics;
using NormKit.Layers;

namespace NormKit.Inference;

/// <summary>
/// Folds an eval-mode BatchNorm into the Linear or convolution before it (like
/// torch.nn.utils.fuse_conv_bn_eval): with a = gamma / sqrt(running_var + eps),
/// W'[c, ...] = W[c, ...] * a[c] and b'[c] = (b[c] - running_mean[c]) * a[c] + beta[c], so that
/// layer(W', b') equals BatchNorm(layer(W, b)) in eval mode.
/// </summary>
public static class BatchNormFolding
{
    /// <summary>
    /// Folds <paramref name="batchNorm"/> into <paramref name="weight"/> and <paramref name="bias"/>
    /// in place. weight is output-channel-major: a Linear's [out, in] or a convolution's
    /// [out, in / groups, *kernel] (not a transposed convolution, whose weight is [in, out, ...]).
    /// bias has one value per output channel (pass zeros if the layer had none). Computed in
    /// double, rounded once.
    /// </summary>
    public static void Fold<T>(BatchNorm<T> batchNorm, Span<T> weight, Span<T> bias) where T : unmanaged, IFloatingPointIeee754<T>
    {
        ArgumentNullException.ThrowIfNull(batchNorm);
        if (!batchNorm.TrackRunningStats)
            throw new ArgumentException("Folding needs running statistics, but the BatchNorm has TrackRunningStats = false.", nameof(batchNorm));
        int c = batchNorm.NumFeatures;
        Guard.Length<T>(bias, c, nameof(bias), "one value per output channel (NumFeatures)");
        if (weight.IsEmpty || weight.Length % c != 0)
            throw new ArgumentException($"weight has length {weight.Length}, which is not a positive multiple of the {c} output channels.", nameof(weight));
        var rm = Guard.Span(batchNorm.RunningMean!);
        var rv = Guard.Span(batchNorm.RunningVar!);
        Functional.CheckRunningVar<T>(rv);
        int per = weight.Length / c;
        for (int k = 0; k < c; k++)
        {
            double gamma = batchNorm.Weight is { } w ? double.CreateTruncating(Guard.Span(w)[k]) : 1;
            double beta = batchNorm.Bias is { } b ? double.CreateTruncating(Guard.Span(b)[k]) : 0;
            double a = gamma / Math.Sqrt(double.CreateTruncating(rv[k]) + batchNorm.Eps);
            foreach (ref T v in weight.Slice(k * per, per)) v = T.CreateTruncating(double.CreateTruncating(v) * a);
            bias[k] = T.CreateTruncating((double.CreateTruncating(bias[k]) - double.CreateTruncating(rm[k])) * a + beta);
        }
    }
}
