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
