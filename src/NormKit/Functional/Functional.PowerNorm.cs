using System.Buffers;
using System.Diagnostics;
using System.Numerics;
using NormKit.Kernels;

namespace NormKit;

public static partial class Functional
{
    // ============================ PowerNorm (layer cores only) ============================
    // PowerNorm keeps state between forward and backward (the iteration count decides the
    // forward, and backward updates ema_gz), so it has no stateless public face; these cores
    // are what PowerNorm<T> calls after its validation.

    /// <summary>
    /// PowerNorm's forward after validation. <paramref name="iteration"/> is the 1-based training
    /// iteration this forward is (the layer's count + 1). Training: psi2 = mean(x²) per channel,
    /// z = x / sqrt(s + eps) with s = psi2 while iteration &lt;= warmupIters, else s = the running
    /// phi as it was before this step; then the running update. Eval: s = phi, nothing updated.
    /// y = weight * z + bias. savePsi2 and saveRz receive psi2 and 1 / sqrt(s + eps) per channel.
    /// </summary>
    internal static RunningStatsUpdate PowerNormCore<T>(ReadOnlySpan<T> input, ChannelLayout l, Span<T> output, Span<T> runningPhi,
        ReadOnlySpan<T> weight, ReadOnlySpan<T> bias, bool training, long iteration, long warmupIters, double alphaForward, double eps,
        bool guardNonFinite, Span<double> savePsi2, Span<double> saveRz)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Debug.Assert(input.Length == l.Count * l.C && output.Length == input.Length && runningPhi.Length == l.C);
        if (l.Count == 0) return RunningStatsUpdate.None;
        int scratchLength = training ? ChannelKernel.ChannelGradSumsScratch(l, masked: false) : 0;
        double[] dbl = ArrayPool<double>.Shared.Rent(3 * l.C + scratchLength);
        T[] par = ArrayPool<T>.Shared.Rent(4 * l.C);
        try
        {
            Span<double> zeros = dbl.AsSpan(0, l.C), sum = dbl.AsSpan(l.C, l.C), squares = dbl.AsSpan(2 * l.C, l.C);
            Span<T> zero = par.AsSpan(0, l.C), a = par.AsSpan(l.C, l.C), b = par.AsSpan(2 * l.C, l.C), newPhi = par.AsSpan(3 * l.C, l.C);
            zeros.Clear(); zero.Clear();
            // Σ x·x per channel: the gradient sums' dot with dy = x about 0 (no centring).
            if (training) ChannelKernel.ChannelGradSums(input, input, l, default, zeros, sum, squares, dbl.AsSpan(3 * l.C, scratchLength));
            bool batchScale = training && iteration <= warmupIters;
            for (int c = 0; c < l.C; c++)
            {
                double psi2 = training ? squares[c] / l.Count : double.NaN;
                double rz = ChannelCoefficients.Rstd(batchScale ? psi2 : Num.D(runningPhi[c]), eps);
                savePsi2[c] = psi2; saveRz[c] = rz;
                a[c] = ChannelCoefficients.Scale<T>(rz, weight.IsEmpty ? 1 : Num.D(weight[c]));
                b[c] = bias.IsEmpty ? T.Zero : bias[c];
            }
            ChannelKernel.Normalize<T>(input, l, default, perPlane: false, zero, zero, a, b, output);
            if (!training) return RunningStatsUpdate.None;

            for (int c = 0; c < l.C; c++)
            {
                if (guardNonFinite && !double.IsFinite(savePsi2[c])) return RunningStatsUpdate.SkippedNonFinite;
                newPhi[c] = Num.From<T>(ChannelCoefficients.PowerRunning(Num.D(runningPhi[c]), savePsi2[c], iteration, warmupIters, alphaForward));
                if (guardNonFinite && !T.IsFinite(newPhi[c])) return RunningStatsUpdate.SkippedNonFinite;
            }
            newPhi.CopyTo(runningPhi);
            return RunningStatsUpdate.Updated;
        }
        finally
        {
            ArrayPool<double>.Shared.Return(dbl);
            ArrayPool<T>.Shared.Return(par);
        }
    }

    /// <summary>
    /// PowerNorm's backward after validation, from the forward's psi2 and rz. Training (the
    /// official approximate backward): g = dy * weight, g~ = g - (1 - alphaBackward) * G * z,
    /// dx = g~ / sqrt(psi2 + eps), G += mean(g~ * z) (emaGz is updated in place; with the guard a
    /// non-finite new value in any channel leaves all of emaGz as it was). Eval: the exact
    /// gradient dx = dy * weight * rz, emaGz untouched. gradWeight += Σ dy * z and gradBias += Σ dy
    /// (each optional). Returns what happened to emaGz.
    /// </summary>
    internal static RunningStatsUpdate PowerNormBackwardCore<T>(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ChannelLayout l,
        ReadOnlySpan<T> weight, ReadOnlySpan<double> savePsi2, ReadOnlySpan<double> saveRz, bool training, Span<T> emaGz,
        double alphaBackward, double eps, bool guardNonFinite, Span<T> gradInput, Span<T> gradWeight, Span<T> gradBias)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Debug.Assert(gradOutput.Length == l.Count * l.C && input.Length == gradOutput.Length && gradInput.Length == gradOutput.Length);
        if (l.Count == 0) return RunningStatsUpdate.None;
        int scratchLength = ChannelKernel.ChannelGradSumsScratch(l, masked: false);
        double[] dbl = ArrayPool<double>.Shared.Rent(3 * l.C + scratchLength);
        T[] par = ArrayPool<T>.Shared.Rent(4 * l.C);
        try
        {
            Span<double> zeros = dbl.AsSpan(0, l.C), sum = dbl.AsSpan(l.C, l.C), dot = dbl.AsSpan(2 * l.C, l.C);
            Span<T> zero = par.AsSpan(0, l.C), p = par.AsSpan(l.C, l.C), q = par.AsSpan(2 * l.C, l.C), newG = par.AsSpan(3 * l.C, l.C);
            zeros.Clear(); zero.Clear();
            // Σ dy and Σ x·dy per channel (about 0: z is x scaled, not centred).
            ChannelKernel.ChannelGradSums(gradOutput, input, l, default, zeros, sum, dot, dbl.AsSpan(3 * l.C, scratchLength));
            bool finite = true;
            for (int c = 0; c < l.C; c++)
            {
                double w = weight.IsEmpty ? 1 : Num.D(weight[c]);
                if (!training) { p[c] = ChannelCoefficients.Scale<T>(saveRz[c], w); continue; }
                ChannelCoefficients.PowerBackward(saveRz[c], ChannelCoefficients.Rstd(savePsi2[c], eps), savePsi2[c], w, Num.D(emaGz[c]),
                    alphaBackward, dot[c], l.Count, out p[c], out q[c], out double g);
                newG[c] = Num.From<T>(g);
                finite &= T.IsFinite(newG[c]);
            }
            if (training) ChannelKernel.InputGrad<T>(gradOutput, input, l, default, perPlane: false, zero, zero, p, q, zero, gradInput);
            else ChannelKernel.Scale<T>(gradOutput, l, default, perPlane: false, p, gradInput);
            AccumulateParameterGrads(gradWeight, gradBias, sum, dot, saveRz);
            if (!training) return RunningStatsUpdate.None;
            if (guardNonFinite && !finite) return RunningStatsUpdate.SkippedNonFinite;
            newG.CopyTo(emaGz);
            return RunningStatsUpdate.Updated;
        }
        finally
        {
            ArrayPool<double>.Shared.Return(dbl);
            ArrayPool<T>.Shared.Return(par);
        }
    }
}
