namespace NormKit.Kernels;

/// <summary>
/// The scalar math of the channel norms, once for every caller (Functional's two-pass path,
/// the fused per-channel kernels, the layers): from a segment's statistics to the coefficients
/// of the element-wise passes, and the running-statistics update.
/// <code>
/// forward   y  = ((x - hi) - lo) * a + b            hi + lo = mean, a = weight * rstd, rstd = 1 / sqrt(var + eps)
/// backward  dx = p * dy + q * ((x - hi) - lo) + r
///   batch statistics over n values (BatchNorm), with sum = Σ dy and dot = Σ (x - mean) dy:
///           p = weight * rstd,  q = -weight * rstd^3 * dot / n,  r = -weight * rstd * sum / n
///   a group of m values (GroupNorm, InstanceNorm), with g = dy * weight[c] summed over the group
///   (sg = Σ g, sgx = Σ (x - mean) g):
///           p = weight[c] * rstd,  q = -rstd^3 * sgx / m,  r = -rstd * sg / m
///   fixed statistics (eval): p = weight * rstd, q = r = 0
///   Filter Response Normalization, x_hat = x * rstd over s values, rstd = 1 / sqrt(mean(x^2) + eps),
///   with g = dy through the TLU and sgx = Σ x g:
///           p = weight * rstd,  q = -weight * rstd^3 * sgx / s,  r = 0
/// running   r' = (1 - momentum) * r + momentum * batch
/// renorm    a = weight * r * rstd, b = bias + weight * d; backward as BatchNorm with weight * r
/// PowerNorm (no centring, so hi = lo = 0), with psi2 = mean(x^2) over the batch, s = the
/// statistic the forward divided by (psi2 in warm-up, the running phi after), G = ema_gz:
///   forward  a = weight / sqrt(s + eps)
///   backward p = weight / sqrt(psi2 + eps),  q = -(1 - alpha_bkw) * G / sqrt(s + eps) / sqrt(psi2 + eps),  r = 0
///   G' = G + mean(g~ * z) = G + weight * rz * dot / n - (1 - alpha_bkw) * G * rz^2 * psi2   (dot = Σ x dy, rz = 1 / sqrt(s + eps))
///   phi' = alpha_fwd * phi~ + (1 - alpha_fwd) * psi2, phi~ = phi * (t - 1) / t + psi2 / t while t &lt; warmup, else phi
/// </code>
/// Every coefficient is computed in double and rounded once to T.
/// </summary>
internal static class ChannelCoefficients
{
    /// <summary>1 / sqrt(var + eps).</summary>
    public static double Rstd(double variance, double eps) => 1.0 / Math.Sqrt(variance + eps);

    /// <summary>The forward scale a, and the backward p: weight * rstd (weight 1 when the layer has none).</summary>
    public static T Scale<T>(double rstd, double weight) where T : unmanaged => Num.From<T>(rstd * weight);

    /// <summary>p, q, r of dx with batch statistics over <paramref name="n"/> values (BatchNorm training).</summary>
    public static void BatchBackward<T>(double rstd, double weight, double sum, double dot, double n, out T p, out T q, out T r) where T : unmanaged
    {
        p = Num.From<T>(rstd * weight);
        q = Num.From<T>(-dot * rstd * rstd * rstd * weight / n);
        r = Num.From<T>(-sum / n * rstd * weight);
    }

    /// <summary>
    /// p, q, r of dx for one channel of a group of <paramref name="m"/> values (GroupNorm,
    /// InstanceNorm); <paramref name="groupSum"/> and <paramref name="groupDot"/> sum dy * weight
    /// over the group's channels.
    /// </summary>
    public static void GroupBackward<T>(double rstd, double weight, double groupSum, double groupDot, double m, out T p, out T q, out T r) where T : unmanaged
    {
        if (m == 1)
        {
            // One value: x_hat = 0 and g - mean(g) = 0, so dx is exactly 0 (the three rounded
            // coefficients would leave a residue of about rstd * ulp(dy)).
            p = q = r = default;
            return;
        }
        double k1 = groupSum / m, k2 = rstd * groupDot / m;
        p = Num.From<T>(rstd * weight);
        q = Num.From<T>(-rstd * rstd * k2);
        r = Num.From<T>(-rstd * k1);
    }

    /// <summary>
    /// GroupNorm's statistics of one (sample, group): its planes' moments merged in channel
    /// order, then mean and rstd = 1 / sqrt(M2 / count + eps). The two-pass and fused forwards share it.
    /// </summary>
    public static void Group(ReadOnlySpan<double> count, ReadOnlySpan<double> mean, ReadOnlySpan<double> m2, double eps, out double mu, out double rstd)
    {
        double cnt = 0, q = 0;
        mu = 0;
        for (int k = 0; k < count.Length; k++) Reductions.ChanMerge(ref cnt, ref mu, ref q, count[k], mean[k], m2[k]);
        rstd = Rstd(q / cnt, eps);
    }

    /// <summary>sigma = sqrt(var + eps): Batch Renorm's standard deviation, eps included.</summary>
    public static double Std(double variance, double eps) => Math.Sqrt(variance + eps);

    /// <summary>
    /// Batch Renorm's correction (Ioffe 2017) from the batch's mean and sigma and the moving
    /// ones: r = clip(sigmaB / sigma, 1 / rMax, rMax), d = clip((meanB - mean) / sigma, -dMax, dMax).
    /// rMax = 1 and dMax = 0 give r = 1 and d = 0 exactly (plain BatchNorm); NaN stays NaN.
    /// </summary>
    public static void Renorm(double batchMean, double batchStd, double mean, double std, double rMax, double dMax, out double r, out double d)
    {
        r = Math.Clamp(batchStd / std, 1 / rMax, rMax);
        d = Math.Clamp((batchMean - mean) / std, -dMax, dMax);
    }

    /// <summary>
    /// PowerNorm's running quadratic mean after training iteration <paramref name="iteration"/>
    /// (1-based), in the official code's order: while the iteration is below the warm-up, first
    /// the cumulative average, then (always) the EMA with alpha_fwd.
    /// </summary>
    public static double PowerRunning(double phi, double psi2, long iteration, long warmupIters, double alphaForward)
    {
        if (iteration < warmupIters) phi = phi * (iteration - 1) / iteration + psi2 / iteration;
        return alphaForward * phi + (1 - alphaForward) * psi2;
    }

    /// <summary>
    /// PowerNorm's approximate backward for one channel: p and q of dx = dy * p + x * q, and the
    /// new ema_gz. <paramref name="rz"/> is 1 / sqrt(s + eps) of the forward's z, <paramref name="rb"/>
    /// 1 / sqrt(psi2 + eps) of the batch; <paramref name="dot"/> = Σ x dy over n values.
    /// </summary>
    public static void PowerBackward<T>(double rz, double rb, double psi2, double weight, double emaGz, double alphaBackward,
        double dot, double n, out T p, out T q, out double newEmaGz) where T : unmanaged
    {
        double k = (1 - alphaBackward) * emaGz;
        p = Num.From<T>(weight * rb);
        q = Num.From<T>(-k * rz * rb);
        newEmaGz = emaGz + weight * rz * dot / n - k * rz * rz * psi2;
    }

    /// <summary>
    /// p and q of dx = p * g + q * x for one (sample, channel) of Filter Response Normalization
    /// over <paramref name="s"/> values, <paramref name="sgx"/> = Σ x g.
    /// </summary>
    public static void ResponseBackward<T>(double rstd, double weight, double sgx, double s, double eps, out T p, out T q) where T : unmanaged
    {
        if (s == 1)
        {
            // One value: dx = weight * eps * rstd^3 * g exactly; the general p and q would cancel
            // to about eps / x^2 of their size and lose that many digits.
            p = Num.From<T>(weight * eps * rstd * rstd * rstd);
            q = default;
            return;
        }
        p = Num.From<T>(weight * rstd);
        q = Num.From<T>(-weight * rstd * rstd * rstd * sgx / s);
    }

    /// <summary>The running-statistics update in double, rounded once to T.</summary>
    public static T Running<T>(T running, double batch, double momentum) where T : unmanaged =>
        Num.From<T>((1 - momentum) * Num.D(running) + momentum * batch);
}
