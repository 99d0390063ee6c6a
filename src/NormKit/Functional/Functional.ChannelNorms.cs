using System.Diagnostics;
using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using NormKit.Distributed;
using NormKit.Kernels;

namespace NormKit;

/// <summary>What a BatchNorm or InstanceNorm call did to the running statistics.</summary>
public enum RunningStatsUpdate
{
    /// <summary>Not touched: eval mode, no running statistics, or an empty batch.</summary>
    None,
    /// <summary>Updated from this batch's statistics.</summary>
    Updated,
    /// <summary>
    /// Left untouched (guard on) because the batch's mean or variance was NaN or infinite, or
    /// because the updated running statistics would not be finite once stored in the element
    /// type (a finite batch of values near 1e30 overflows float's running variance).
    /// </summary>
    SkippedNonFinite,
}

/// <summary>
/// Batch Renormalization's part of <see cref="Functional.BatchNormCore{T}"/> (Ioffe 2017):
/// the clip bounds, and the per-channel r and d it writes in training for the backward. The
/// default (inactive) is plain BatchNorm.
/// </summary>
internal readonly ref struct Renorm(double rMax, double dMax, Span<double> r, Span<double> d)
{
    public double RMax { get; } = rMax;
    public double DMax { get; } = dMax;
    public Span<double> R { get; } = r;
    public Span<double> D { get; } = d;
    public bool Active => !R.IsEmpty;
}

public static partial class Functional
{
    private const string PerChannel = "one value per channel";

    // ============================ BatchNorm ============================

    /// <summary>
    /// BatchNorm over an input of shape (N, C, *spatial) (or (N, *spatial, C) with
    /// <paramref name="channelsLast"/>). With <paramref name="training"/> or without running
    /// statistics it normalizes with the batch's mean and biased variance; in training with
    /// running statistics it also updates them: running = (1 - momentum) * running + momentum * batch,
    /// running_var from the unbiased batch variance. Otherwise it uses the running statistics.
    /// y = (x - mean) * (weight / sqrt(var + eps)) + bias.
    /// </summary>
    /// <param name="input">The input, row-major.</param>
    /// <param name="inputShape">Its shape: (N, C, *spatial), or (N, *spatial, C) with channelsLast.</param>
    /// <param name="output">Receives y; same length as input, must not overlap it.</param>
    /// <param name="runningMean">Per-channel running mean, or empty for none (then runningVar must be empty too).</param>
    /// <param name="runningVar">Per-channel running (unbiased) variance, or empty for none.</param>
    /// <param name="weight">Per-channel scale, or empty for 1.</param>
    /// <param name="bias">Per-channel shift, or empty for 0.</param>
    /// <param name="training">Normalize with batch statistics and update the running ones.</param>
    /// <param name="momentum">Weight of the batch in the running update, in [0, 1] (PyTorch's convention).</param>
    /// <param name="eps">Added to the variance inside the square root; finite and > 0.</param>
    /// <param name="channelsLast">Channels are the last dim instead of the second.</param>
    /// <param name="guardNonFinite">When the batch mean or variance of any channel is NaN or
    /// infinite, leave the running statistics untouched and return
    /// <see cref="RunningStatsUpdate.SkippedNonFinite"/>. The output follows IEEE either way.</param>
    /// <param name="saveMean">Receives the mean used per channel (for backward), optional.</param>
    /// <param name="saveRstd">Receives 1 / sqrt(var + eps) used per channel (for backward), optional.</param>
    /// <param name="unbiasedRunningVar">running_var takes the unbiased batch variance (PyTorch, default)
    /// or, with false, the biased one (ONNX BatchNormalization, Keras).</param>
    /// <param name="mask">Optional, one bool per (n, spatial) position (N * S values, sample-major):
    /// false marks padding, which is left out of the statistics and the running update and
    /// gets output 0.</param>
    /// <param name="group">SyncBatchNorm: when given, the batch statistics are those of the whole
    /// batch split across the group's ranks (each rank passes its shard; per-channel count,
    /// mean and M2 are gathered and merged in rank order, so every rank gets the same bits).
    /// Every rank must make the call, even with an empty shard.</param>
    public static RunningStatsUpdate BatchNorm<T>(ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape, Span<T> output,
        Span<T> runningMean, Span<T> runningVar, ReadOnlySpan<T> weight, ReadOnlySpan<T> bias,
        bool training, double momentum = 0.1, double eps = 1e-5, bool channelsLast = false, bool guardNonFinite = true,
        Span<double> saveMean = default, Span<double> saveRstd = default, bool unbiasedRunningVar = true, ReadOnlySpan<bool> mask = default,
        IAllGather? group = null)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Num.EnsureSupported<T>();
        var l = CheckBatchNorm(input, inputShape, output, runningMean, runningVar, weight, bias, momentum, eps, channelsLast, saveMean, saveRstd, mask);
        return BatchNormCore(input, inputShape, l, output, runningMean, runningVar, weight, bias, training, momentum, eps, guardNonFinite,
            saveMean, saveRstd, unbiasedRunningVar, mask, group);
    }

    /// <summary>
    /// BatchNorm in eval mode (running statistics given) on Half or BFloat16 activations with
    /// float parameters and running statistics: the float coefficients of
    /// <see cref="BatchNormCore{T}"/>, then one element-wise pass straight from and to the
    /// 16-bit input and output (<see cref="ChannelKernel.NormalizeLow"/>).
    /// </summary>
    internal static unsafe void BatchNormEvalLow<TLow>(ReadOnlySpan<TLow> input, ReadOnlySpan<int> inputShape, Span<TLow> output,
        Span<float> runningMean, Span<float> runningVar, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, double momentum, double eps,
        bool channelsLast, Span<double> saveMean, Span<double> saveRstd) where TLow : unmanaged
    {
        LowType low = LowPrecision.Of<TLow>();
        var l = CheckBatchNorm(input, inputShape, output, runningMean, runningVar, weight, bias, momentum, eps, channelsLast, saveMean, saveRstd, default);
        Debug.Assert(!runningMean.IsEmpty);
        fixed (TLow* px = input, py = output)
            BatchNormCore<float>(default, inputShape, l, default, runningMean, runningVar, weight, bias, training: false, momentum, eps, guardNonFinite: true,
                saveMean, saveRstd, unbiasedRunningVar: true, default, null, lowIO: new LowIO(low, (ushort*)px, (ushort*)py));
    }

    // The checks of a BatchNorm forward, for activations TX and parameters and running statistics TP. Returns the layout.
    private static ChannelLayout CheckBatchNorm<TX, TP>(ReadOnlySpan<TX> input, ReadOnlySpan<int> inputShape, Span<TX> output,
        Span<TP> runningMean, Span<TP> runningVar, ReadOnlySpan<TP> weight, ReadOnlySpan<TP> bias, double momentum, double eps, bool channelsLast,
        Span<double> saveMean, Span<double> saveRstd, ReadOnlySpan<bool> mask) where TX : unmanaged where TP : unmanaged
    {
        var l = ChannelLayoutOf(inputShape, channelsLast);
        long total = l.Count * l.C;
        Guard.Length(input, total, nameof(input), nameof(inputShape), inputShape);
        Guard.Length<TX>(output, total, nameof(output), nameof(inputShape), inputShape);
        Guard.OptionalLength(mask, l.Count, nameof(mask), "one value per (sample, position) of inputShape", inputShape);
        if (runningMean.IsEmpty != runningVar.IsEmpty)
            throw new ArgumentException($"runningMean and runningVar must be given together, but runningMean has length {runningMean.Length} and runningVar {runningVar.Length}.",
                runningMean.IsEmpty ? nameof(runningMean) : nameof(runningVar));
        Guard.OptionalLength<TP>(runningMean, l.C, nameof(runningMean), PerChannel);
        Guard.OptionalLength<TP>(runningVar, l.C, nameof(runningVar), PerChannel);
        Guard.OptionalLength(weight, l.C, nameof(weight), PerChannel);
        Guard.OptionalLength(bias, l.C, nameof(bias), PerChannel);
        Guard.OptionalLength<double>(saveMean, l.C, nameof(saveMean), PerChannel);
        Guard.OptionalLength<double>(saveRstd, l.C, nameof(saveRstd), PerChannel);
        Guard.Eps(eps);
        Guard.Momentum(momentum);
        Guard.NoOverlap(input, nameof(input), output, nameof(output));
        // As bytes: float parameters must not share memory with a Half output either.
        var outBytes = MemoryMarshal.AsBytes((ReadOnlySpan<TX>)output);
        Guard.NoOverlap(MemoryMarshal.AsBytes(weight), nameof(weight), outBytes, nameof(output));
        Guard.NoOverlap(MemoryMarshal.AsBytes(bias), nameof(bias), outBytes, nameof(output));
        Guard.NoOverlap(MemoryMarshal.AsBytes((ReadOnlySpan<TP>)runningMean), nameof(runningMean), outBytes, nameof(output));
        Guard.NoOverlap(MemoryMarshal.AsBytes((ReadOnlySpan<TP>)runningVar), nameof(runningVar), outBytes, nameof(output));
        return l;
    }

    /// <summary>
    /// <see cref="BatchNorm{T}(ReadOnlySpan{T}, ReadOnlySpan{int}, Span{T}, Span{T}, Span{T}, ReadOnlySpan{T}, ReadOnlySpan{T}, bool, double, double, bool, bool, Span{double}, Span{double}, bool, ReadOnlySpan{bool}, IAllGather?)"/>
    /// after validation: the layers call it directly. It still refuses what only the data can
    /// show (one value per channel in training, a negative running variance in eval).
    /// <paramref name="batchVar"/>, when given, receives in training the per-channel variance
    /// the running update takes (Ghost BatchNorm averages it over ghosts).
    /// With an active <paramref name="renorm"/> (Batch Renorm), runningVar holds the moving
    /// sigma = sqrt(var + eps) instead of a variance: training computes r and d per channel
    /// from the moving averages before they are updated and normalizes with weight * r and
    /// bias + weight * d; the running update averages sigma_B; eval divides by sigma.
    /// </summary>
    internal static RunningStatsUpdate BatchNormCore<T>(ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape, ChannelLayout l, Span<T> output,
        Span<T> runningMean, Span<T> runningVar, ReadOnlySpan<T> weight, ReadOnlySpan<T> bias,
        bool training, double momentum, double eps, bool guardNonFinite,
        Span<double> saveMean, Span<double> saveRstd, bool unbiasedRunningVar, ReadOnlySpan<bool> mask, IAllGather? group,
        Span<double> batchVar = default, Renorm renorm = default, LowIO lowIO = default)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        // lowIO: eval only, no mask; x and y are its 16-bit buffers and input and output are empty.
        bool low = lowIO.Type != LowType.None;
        Debug.Assert(low ? typeof(T) == typeof(float) && !training && !runningMean.IsEmpty && mask.IsEmpty && !renorm.Active
            : input.Length == l.Count * l.C && output.Length == input.Length);
        Debug.Assert(runningMean.IsEmpty == runningVar.IsEmpty && (runningMean.IsEmpty || runningMean.Length == l.C));
        Debug.Assert(!renorm.Active || (!runningMean.IsEmpty && mask.IsEmpty && group == null));
        bool useBatch = training || runningMean.IsEmpty;
        bool synced = useBatch && group != null;
        long count = mask.IsEmpty ? l.Count : mask.Count(true);
        if (useBatch && !synced) CheckMoreThanOne(count, inputShape, mask.IsEmpty);
        if (renorm.Active) CheckRunningStd(runningVar);
        else if (!useBatch) CheckRunningVar(runningVar);
        if (l.Count == 0 && !synced) return RunningStatsUpdate.None;

        // Channels-first training whose channels fit in cache: statistics and normalization per
        // channel in one pass over memory (the same bits as the two passes below).
        // Renorm's r and d need the batch statistics before the first output is written: two passes.
        bool fused = useBatch && !synced && !renorm.Active && ChannelKernel.FusesPerChannel(l, System.Runtime.CompilerServices.Unsafe.SizeOf<T>(), !mask.IsEmpty, backward: false);
        int scratchLength = useBatch && !fused ? ChannelKernel.ChannelMomentsScratch(l, !mask.IsEmpty) : 0;
        double[] dbl = ArrayPool<double>.Shared.Rent(3 * l.C + scratchLength);
        T[] par = ArrayPool<T>.Shared.Rent(4 * l.C);
        try
        {
            Span<double> cnt = dbl.AsSpan(0, l.C), mean = dbl.AsSpan(l.C, l.C), m2 = dbl.AsSpan(2 * l.C, l.C);
            Span<T> hi = par.AsSpan(0, l.C), lo = par.AsSpan(l.C, l.C), a = par.AsSpan(2 * l.C, l.C), b = par.AsSpan(3 * l.C, l.C);
            if (fused) ChannelKernel.TrainForwardPerChannel(input, l, weight, bias, eps, output, cnt, mean, m2);
            else if (useBatch) ChannelKernel.ChannelMoments(input, l, mask, cnt, mean, m2, dbl.AsSpan(3 * l.C, scratchLength));
            if (synced)
            {
                MergeAcrossRanks(group!, cnt, mean, m2);
                count = (long)cnt[0];
                CheckMoreThanOne(count, inputShape, mask.IsEmpty);
            }
            if (count == 0) { output.Clear(); return RunningStatsUpdate.None; }
            for (int c = 0; c < l.C; c++)
            {
                double mu = useBatch ? mean[c] : Num.D(runningMean[c]);
                double var = useBatch ? m2[c] / cnt[c] : Num.D(runningVar[c]);
                // Renorm's eval divides by the moving sigma, which already holds eps.
                double rs = renorm.Active && !useBatch ? 1 / var : ChannelCoefficients.Rstd(var, eps);
                double w = weight.IsEmpty ? 1 : Num.D(weight[c]), r = 1, d = 0;
                if (renorm.Active && useBatch)
                {
                    ChannelCoefficients.Renorm(mu, ChannelCoefficients.Std(var, eps), Num.D(runningMean[c]), Num.D(runningVar[c]),
                        renorm.RMax, renorm.DMax, out r, out d);
                    renorm.R[c] = r; renorm.D[c] = d;
                }
                Num.Split(mu, out hi[c], out lo[c]);
                a[c] = ChannelCoefficients.Scale<T>(rs, w * r);
                b[c] = bias.IsEmpty ? T.Zero : bias[c];
                if (d != 0) b[c] = Num.From<T>(Num.D(b[c]) + w * d);
                if (!saveMean.IsEmpty) saveMean[c] = mu;
                if (!saveRstd.IsEmpty) saveRstd[c] = rs;
                if (!batchVar.IsEmpty && useBatch) batchVar[c] = m2[c] / (unbiasedRunningVar ? cnt[c] - 1 : cnt[c]);
            }
            if (low) ChannelKernel.NormalizeLow(lowIO, l, MemoryMarshal.Cast<T, float>(hi), MemoryMarshal.Cast<T, float>(lo),
                MemoryMarshal.Cast<T, float>(a), MemoryMarshal.Cast<T, float>(b));
            else if (!fused) ChannelKernel.Normalize<T>(input, l, mask, perPlane: false, hi, lo, a, b, output);

            if (!training || runningMean.IsEmpty) return RunningStatsUpdate.None;
            // m2 is free again: it receives what the running buffer averages (variance, or renorm's sigma).
            for (int c = 0; c < l.C; c++)
                m2[c] = renorm.Active ? ChannelCoefficients.Std(m2[c] / cnt[c], eps) : m2[c] / (unbiasedRunningVar ? cnt[c] - 1 : cnt[c]);
            return UpdateRunning(runningMean, runningVar, mean, m2, momentum, guardNonFinite, par.AsSpan(0, 2 * l.C));
        }
        finally
        {
            ArrayPool<double>.Shared.Return(dbl);
            ArrayPool<T>.Shared.Return(par);
        }
    }

    /// <summary>
    /// Backward of BatchNorm from the mean and rstd the forward used (its saveMean and
    /// saveRstd). With <paramref name="batchStatistics"/> (training, or no running statistics)
    /// the statistics depend on x: dx = (dy - mean(dy) - (x - mean) * mean((x - mean) * dy) * rstd^2) * rstd * weight;
    /// otherwise they are constants: dx = dy * rstd * weight. gradInput is overwritten;
    /// gradWeight (+= sum((x - mean) * dy) * rstd) and gradBias (+= sum(dy)) accumulate and may be empty.
    /// With a mask (the forward's), padded positions contribute nothing and get gradient 0.
    /// With a <paramref name="group"/> (SyncBatchNorm), the per-channel sums dx needs are summed
    /// over the ranks in rank order; gradWeight and gradBias receive this rank's share (their sum
    /// over ranks is the whole batch's gradient, as in PyTorch).
    /// </summary>
    public static void BatchNormBackward<T>(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape,
        ReadOnlySpan<T> weight, ReadOnlySpan<double> saveMean, ReadOnlySpan<double> saveRstd, bool batchStatistics,
        Span<T> gradInput, Span<T> gradWeight = default, Span<T> gradBias = default, bool channelsLast = false, ReadOnlySpan<bool> mask = default,
        IAllGather? group = null)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Num.EnsureSupported<T>();
        var l = ChannelLayoutOf(inputShape, channelsLast);
        long total = l.Count * l.C;
        Guard.Length(gradOutput, total, nameof(gradOutput), nameof(inputShape), inputShape);
        Guard.Length(input, total, nameof(input), nameof(inputShape), inputShape);
        Guard.Length<T>(gradInput, total, nameof(gradInput), nameof(inputShape), inputShape);
        Guard.OptionalLength(mask, l.Count, nameof(mask), "one value per (sample, position) of inputShape", inputShape);
        Guard.OptionalLength(weight, l.C, nameof(weight), PerChannel);
        Guard.Length(saveMean, l.C, nameof(saveMean), PerChannel);
        Guard.Length(saveRstd, l.C, nameof(saveRstd), PerChannel);
        Guard.OptionalLength<T>(gradWeight, l.C, nameof(gradWeight), PerChannel);
        Guard.OptionalLength<T>(gradBias, l.C, nameof(gradBias), PerChannel);
        Guard.NoOverlap(gradOutput, nameof(gradOutput), gradInput, nameof(gradInput));
        Guard.NoOverlap(input, nameof(input), gradInput, nameof(gradInput));
        Guard.NoOverlap<T>(gradWeight, nameof(gradWeight), gradBias, nameof(gradBias));
        BatchNormBackwardCore(gradOutput, input, l, weight, saveMean, saveRstd, batchStatistics, gradInput, gradWeight, gradBias, mask, group);
    }

    /// <summary>BatchNormBackward after validation: the layers call it directly.</summary>
    internal static void BatchNormBackwardCore<T>(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ChannelLayout l,
        ReadOnlySpan<T> weight, ReadOnlySpan<double> saveMean, ReadOnlySpan<double> saveRstd, bool batchStatistics,
        Span<T> gradInput, Span<T> gradWeight, Span<T> gradBias, ReadOnlySpan<bool> mask, IAllGather? group,
        ReadOnlySpan<double> renormR = default, ReadOnlySpan<double> renormD = default)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Debug.Assert(gradOutput.Length == l.Count * l.C && input.Length == gradOutput.Length && gradInput.Length == gradOutput.Length);
        Debug.Assert(renormR.IsEmpty == renormD.IsEmpty && (renormR.IsEmpty || (batchStatistics && mask.IsEmpty && group == null)));
        Debug.Assert(saveMean.Length == l.C && saveRstd.Length == l.C);
        bool synced = batchStatistics && group != null;
        if (l.Count == 0 && !synced) return;
        double n = mask.IsEmpty ? l.Count : mask.Count(true);

        bool needSums = batchStatistics || !gradWeight.IsEmpty || !gradBias.IsEmpty;
        // Sums and dx per channel in one pass over memory when a channel fits in cache (the same bits as the two passes).
        bool fused = batchStatistics && !synced && renormR.IsEmpty && ChannelKernel.FusesPerChannel(l, System.Runtime.CompilerServices.Unsafe.SizeOf<T>(), !mask.IsEmpty, backward: true);
        int scratchLength = needSums && !fused ? ChannelKernel.ChannelGradSumsScratch(l, !mask.IsEmpty) : 0;
        double[] dbl = ArrayPool<double>.Shared.Rent(4 * l.C + scratchLength);
        T[] par = ArrayPool<T>.Shared.Rent(5 * l.C);
        try
        {
            Span<double> sum = dbl.AsSpan(0, l.C), dot = dbl.AsSpan(l.C, l.C), scratch = dbl.AsSpan(4 * l.C, scratchLength);
            // dx needs the sums over the whole batch: this rank's, or all ranks' when synced.
            Span<double> allSum = sum, allDot = dot;
            Span<T> hi = par.AsSpan(0, l.C), lo = par.AsSpan(l.C, l.C), p = par.AsSpan(2 * l.C, l.C), q = par.AsSpan(3 * l.C, l.C), r = par.AsSpan(4 * l.C, l.C);
            sum.Clear(); dot.Clear();
            if (fused)
            {
                ChannelKernel.TrainBackwardPerChannel(gradOutput, input, l, weight, saveMean, saveRstd, gradInput, sum, dot);
                AccumulateParameterGrads(gradWeight, gradBias, sum, dot, saveRstd);
                return;
            }
            if (needSums) ChannelKernel.ChannelGradSums(gradOutput, input, l, mask, saveMean, sum, dot, scratch);
            if (synced)
            {
                allSum = dbl.AsSpan(2 * l.C, l.C); allDot = dbl.AsSpan(3 * l.C, l.C);
                n = SumAcrossRanks(group!, n, sum, dot, allSum, allDot);
            }
            for (int c = 0; c < l.C; c++)
            {
                Num.Split(saveMean[c], out hi[c], out lo[c]);
                // Renorm: r and d are constants (stop_gradient), so dx is BatchNorm's with the weight w * r.
                double w = (weight.IsEmpty ? 1 : Num.D(weight[c])) * (renormR.IsEmpty ? 1 : renormR[c]);
                ChannelCoefficients.BatchBackward(saveRstd[c], w, allSum[c], allDot[c], n, out p[c], out q[c], out r[c]);
            }
            if (batchStatistics) ChannelKernel.InputGrad<T>(gradOutput, input, l, mask, perPlane: false, hi, lo, p, q, r, gradInput);
            else ChannelKernel.Scale<T>(gradOutput, l, mask, perPlane: false, p, gradInput);
            AccumulateParameterGrads(gradWeight, gradBias, sum, dot, saveRstd, renormR, renormD);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(dbl);
            ArrayPool<T>.Shared.Return(par);
        }
    }

    /// <summary>BatchNorm on tensors; returns a new tensor of the input's shape. See the span overload.</summary>
    public static Tensor<T> BatchNorm<T>(Tensor<T> input, Tensor<T>? runningMean, Tensor<T>? runningVar, Tensor<T>? weight = null, Tensor<T>? bias = null,
        bool training = false, double momentum = 0.1, double eps = 1e-5, bool channelsLast = false)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int[] shape = Guard.ShapeOf(input, nameof(input));
        var output = Guard.NewLike(input);
        BatchNorm<T>(Guard.Span(input), shape, Guard.Span(output),
            Guard.OptionalSpan(runningMean, nameof(runningMean)), Guard.OptionalSpan(runningVar, nameof(runningVar)),
            Guard.OptionalSpan(weight, nameof(weight)), Guard.OptionalSpan(bias, nameof(bias)), training, momentum, eps, channelsLast);
        return output;
    }

    // ============================ GroupNorm ============================

    /// <summary>
    /// GroupNorm (torch.nn.functional.group_norm): the C channels are split into
    /// <paramref name="numGroups"/> groups of C / G; each (sample, group) is normalized with its own
    /// mean and biased variance, then scaled and shifted per channel. saveMean and saveRstd,
    /// when given, receive N * G values (sample-major).
    /// </summary>
    public static void GroupNorm<T>(ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape, int numGroups, Span<T> output,
        ReadOnlySpan<T> weight = default, ReadOnlySpan<T> bias = default, double eps = 1e-5, bool channelsLast = false,
        Span<double> saveMean = default, Span<double> saveRstd = default)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Num.EnsureSupported<T>();
        var l = ChannelLayoutOf(inputShape, channelsLast);
        CheckGroups(numGroups, l.C);
        CheckGroupNormArguments(input, inputShape, output, weight, bias, eps, l);
        Guard.OptionalLength<double>(saveMean, (long)l.N * numGroups, nameof(saveMean), "one value per (sample, group)");
        Guard.OptionalLength<double>(saveRstd, (long)l.N * numGroups, nameof(saveRstd), "one value per (sample, group)");
        GroupNormCore(input, l, numGroups, output, weight, bias, eps, saveMean, saveRstd, default, default);
    }

    /// <summary>
    /// Backward of GroupNorm from its saveMean and saveRstd (N * G values each). Per (sample,
    /// group) segment of m = C/G * S elements, with g = dy * weight[c]:
    /// dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)); gradWeight[c] += sum dy * x_hat,
    /// gradBias[c] += sum dy (accumulated; optional).
    /// </summary>
    public static void GroupNormBackward<T>(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape, int numGroups,
        ReadOnlySpan<T> weight, ReadOnlySpan<double> saveMean, ReadOnlySpan<double> saveRstd,
        Span<T> gradInput, Span<T> gradWeight = default, Span<T> gradBias = default, bool channelsLast = false)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Num.EnsureSupported<T>();
        var l = ChannelLayoutOf(inputShape, channelsLast);
        CheckGroups(numGroups, l.C);
        long total = l.Count * l.C;
        Guard.Length(gradOutput, total, nameof(gradOutput), nameof(inputShape), inputShape);
        Guard.Length(input, total, nameof(input), nameof(inputShape), inputShape);
        Guard.Length<T>(gradInput, total, nameof(gradInput), nameof(inputShape), inputShape);
        Guard.OptionalLength(weight, l.C, nameof(weight), PerChannel);
        Guard.Length(saveMean, (long)l.N * numGroups, nameof(saveMean), "one value per (sample, group)");
        Guard.Length(saveRstd, (long)l.N * numGroups, nameof(saveRstd), "one value per (sample, group)");
        Guard.OptionalLength<T>(gradWeight, l.C, nameof(gradWeight), PerChannel);
        Guard.OptionalLength<T>(gradBias, l.C, nameof(gradBias), PerChannel);
        Guard.NoOverlap(gradOutput, nameof(gradOutput), gradInput, nameof(gradInput));
        Guard.NoOverlap(input, nameof(input), gradInput, nameof(gradInput));
        Guard.NoOverlap<T>(gradWeight, nameof(gradWeight), gradBias, nameof(gradBias));
        GroupNormBackwardCore(gradOutput, input, l, numGroups, weight, saveMean, saveRstd, gradInput, gradWeight, gradBias);
    }

    /// <summary>GroupNormBackward after validation: the layers call it directly.</summary>
    internal static void GroupNormBackwardCore<T>(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ChannelLayout l, int numGroups,
        ReadOnlySpan<T> weight, ReadOnlySpan<double> saveMean, ReadOnlySpan<double> saveRstd,
        Span<T> gradInput, Span<T> gradWeight, Span<T> gradBias)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Debug.Assert(gradOutput.Length == l.Count * l.C && input.Length == gradOutput.Length && gradInput.Length == gradOutput.Length);
        Debug.Assert(saveMean.Length == l.N * numGroups && saveRstd.Length == saveMean.Length);
        if (l.Count == 0) return;

        int planes = l.Planes, cg = l.C / numGroups;
        double m = (double)cg * l.S;
        double[] dbl = ArrayPool<double>.Shared.Rent(3 * planes);
        T[] par = ArrayPool<T>.Shared.Rent(5 * planes);
        try
        {
            Span<double> mu = dbl.AsSpan(0, planes), sum = dbl.AsSpan(planes, planes), dot = dbl.AsSpan(2 * planes, planes);
            Span<T> hi = par.AsSpan(0, planes), lo = par.AsSpan(planes, planes), p = par.AsSpan(2 * planes, planes),
                q = par.AsSpan(3 * planes, planes), r = par.AsSpan(4 * planes, planes);
            for (int k = 0; k < planes; k++) mu[k] = saveMean[k / cg];      // plane n*C + c belongs to group n*G + c/cg
            ChannelKernel.PlaneGradSums(gradOutput, input, l, default, mu, perPlane: true, sum, dot);
            for (int s = 0; s < l.N; s++)
                for (int g = 0; g < numGroups; g++)
                {
                    int seg = s * numGroups + g, c0 = g * cg;
                    double rs = saveRstd[seg], sg = 0, sgx = 0;
                    for (int c = c0; c < c0 + cg; c++)
                    {
                        double w = weight.IsEmpty ? 1 : Num.D(weight[c]);
                        sg += w * sum[s * l.C + c];
                        sgx += w * dot[s * l.C + c];
                    }
                    Num.Split(saveMean[seg], out T h, out T lw);
                    for (int c = c0; c < c0 + cg; c++)
                    {
                        int k = s * l.C + c;
                        hi[k] = h; lo[k] = lw;
                        ChannelCoefficients.GroupBackward(rs, weight.IsEmpty ? 1 : Num.D(weight[c]), sg, sgx, m, out p[k], out q[k], out r[k]);
                    }
                }
            ChannelKernel.InputGrad<T>(gradOutput, input, l, default, perPlane: true, hi, lo, p, q, r, gradInput);
            for (int c = 0; c < l.C; c++)
            {
                double dw = 0, db = 0;
                for (int s = 0; s < l.N; s++)
                {
                    dw += saveRstd[s * numGroups + c / cg] * dot[s * l.C + c];
                    db += sum[s * l.C + c];
                }
                if (!gradWeight.IsEmpty) gradWeight[c] = Num.From<T>(Num.D(gradWeight[c]) + dw);
                if (!gradBias.IsEmpty) gradBias[c] = Num.From<T>(Num.D(gradBias[c]) + db);
            }
        }
        finally
        {
            ArrayPool<double>.Shared.Return(dbl);
            ArrayPool<T>.Shared.Return(par);
        }
    }

    /// <summary>GroupNorm on tensors; returns a new tensor of the input's shape.</summary>
    public static Tensor<T> GroupNorm<T>(Tensor<T> input, int numGroups, Tensor<T>? weight = null, Tensor<T>? bias = null, double eps = 1e-5, bool channelsLast = false)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int[] shape = Guard.ShapeOf(input, nameof(input));
        var output = Guard.NewLike(input);
        GroupNorm<T>(Guard.Span(input), shape, numGroups, Guard.Span(output),
            Guard.OptionalSpan(weight, nameof(weight)), Guard.OptionalSpan(bias, nameof(bias)), eps, channelsLast);
        return output;
    }

    // ============================ InstanceNorm ============================

    /// <summary>
    /// InstanceNorm with the input's own statistics (torch.nn.functional.instance_norm with
    /// use_input_stats): GroupNorm with one group per channel. With running statistics and
    /// <paramref name="training"/>, they are updated with the batch average of the instance means
    /// and unbiased instance variances. saveMean and saveRstd receive N * C values.
    /// One spatial element per instance is an error.
    /// </summary>
    public static RunningStatsUpdate InstanceNorm<T>(ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape, Span<T> output,
        Span<T> runningMean = default, Span<T> runningVar = default, ReadOnlySpan<T> weight = default, ReadOnlySpan<T> bias = default,
        bool training = true, double momentum = 0.1, double eps = 1e-5, bool channelsLast = false, bool guardNonFinite = true,
        Span<double> saveMean = default, Span<double> saveRstd = default)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Num.EnsureSupported<T>();
        var l = ChannelLayoutOf(inputShape, channelsLast);
        CheckGroupNormArguments(input, inputShape, output, weight, bias, eps, l);
        Guard.Momentum(momentum);
        if (runningMean.IsEmpty != runningVar.IsEmpty)
            throw new ArgumentException($"runningMean and runningVar must be given together, but runningMean has length {runningMean.Length} and runningVar {runningVar.Length}.",
                runningMean.IsEmpty ? nameof(runningMean) : nameof(runningVar));
        Guard.OptionalLength<T>(runningMean, l.C, nameof(runningMean), PerChannel);
        Guard.OptionalLength<T>(runningVar, l.C, nameof(runningVar), PerChannel);
        Guard.OptionalLength<double>(saveMean, l.Planes, nameof(saveMean), "one value per (sample, channel)");
        Guard.OptionalLength<double>(saveRstd, l.Planes, nameof(saveRstd), "one value per (sample, channel)");
        return InstanceNormCore(input, inputShape, l, output, runningMean, runningVar, weight, bias, training, momentum, eps, guardNonFinite, saveMean, saveRstd);
    }

    /// <summary>InstanceNorm with the input's statistics, after validation: the layers call it directly.</summary>
    internal static RunningStatsUpdate InstanceNormCore<T>(ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape, ChannelLayout l, Span<T> output,
        Span<T> runningMean, Span<T> runningVar, ReadOnlySpan<T> weight, ReadOnlySpan<T> bias,
        bool training, double momentum, double eps, bool guardNonFinite, Span<double> saveMean, Span<double> saveRstd)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Debug.Assert(input.Length == l.Count * l.C && output.Length == input.Length);
        if (l.S == 1)
            throw new ArgumentException($"Expected more than 1 spatial element when training, got input size {Guard.Shape(inputShape)}.", nameof(input));
        if (l.Count == 0) return RunningStatsUpdate.None;

        double[] dbl = ArrayPool<double>.Shared.Rent(3 * l.Planes + 2 * l.C);
        T[] par = ArrayPool<T>.Shared.Rent(2 * l.C);
        try
        {
            Span<double> cnt = dbl.AsSpan(0, l.Planes), mean = dbl.AsSpan(l.Planes, l.Planes), m2 = dbl.AsSpan(2 * l.Planes, l.Planes);
            GroupNormCore(input, l, l.C, output, weight, bias, eps, saveMean, saveRstd, mean, m2);
            if (!training || runningMean.IsEmpty) return RunningStatsUpdate.None;
            for (int k = 0; k < l.Planes; k++) m2[k] /= l.S - 1;   // unbiased instance variances
            Span<double> avgMean = dbl.AsSpan(3 * l.Planes, l.C), avgVar = dbl.AsSpan(3 * l.Planes + l.C, l.C);
            AverageOverSegments(mean, l.C, avgMean);
            AverageOverSegments(m2, l.C, avgVar);
            return UpdateRunning(runningMean, runningVar, avgMean, avgVar, momentum, guardNonFinite, par.AsSpan(0, 2 * l.C));
        }
        finally
        {
            ArrayPool<double>.Shared.Return(dbl);
            ArrayPool<T>.Shared.Return(par);
        }
    }

    // Plane moments, merged per (sample, group) in channel order; per-plane parameters; one
    // normalize pass. planeMean/planeM2, when given, receive the per-plane moments (InstanceNorm's
    // running update).
    internal static void GroupNormCore<T>(ReadOnlySpan<T> input, ChannelLayout l, int groups, Span<T> output,
        ReadOnlySpan<T> weight, ReadOnlySpan<T> bias, double eps, Span<double> saveMean, Span<double> saveRstd,
        Span<double> planeMean, Span<double> planeM2)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Debug.Assert(input.Length == l.Count * l.C && output.Length == input.Length && l.C % groups == 0);
        if (l.Count == 0) return;
        int planes = l.Planes, cg = l.C / groups;
        double[] dbl = ArrayPool<double>.Shared.Rent(3 * planes);
        T[] par = ArrayPool<T>.Shared.Rent(4 * planes);
        try
        {
            Span<double> pc = dbl.AsSpan(0, planes), pm = dbl.AsSpan(planes, planes), pq = dbl.AsSpan(2 * planes, planes);
            if (ChannelKernel.FusesPerGroup(l, groups, System.Runtime.CompilerServices.Unsafe.SizeOf<T>()))
            {
                // Channels-first groups that fit in cache: statistics and normalization per group in
                // one pass over memory (the same bits as the two passes below).
                ChannelKernel.GroupForwardPerGroup(input, l, groups, weight, bias, eps, output, pc, pm, pq, saveMean, saveRstd);
                if (!planeMean.IsEmpty) { pm.CopyTo(planeMean); pq.CopyTo(planeM2); }
                return;
            }
            Span<T> hi = par.AsSpan(0, planes), lo = par.AsSpan(planes, planes), a = par.AsSpan(2 * planes, planes), b = par.AsSpan(3 * planes, planes);
            ChannelKernel.PlaneMoments(input, l, default, pc, pm, pq);
            if (!planeMean.IsEmpty) { pm.CopyTo(planeMean); pq.CopyTo(planeM2); }
            for (int s = 0; s < l.N; s++)
                for (int g = 0; g < groups; g++)
                {
                    int k0 = s * l.C + g * cg;
                    ChannelCoefficients.Group(pc.Slice(k0, cg), pm.Slice(k0, cg), pq.Slice(k0, cg), eps, out double mu, out double rs);
                    int seg = s * groups + g;
                    if (!saveMean.IsEmpty) saveMean[seg] = mu;
                    if (!saveRstd.IsEmpty) saveRstd[seg] = rs;
                    Num.Split(mu, out T h, out T lw);
                    for (int c = g * cg; c < (g + 1) * cg; c++)
                    {
                        int k = s * l.C + c;
                        hi[k] = h; lo[k] = lw;
                        a[k] = ChannelCoefficients.Scale<T>(rs, weight.IsEmpty ? 1 : Num.D(weight[c]));
                        b[k] = bias.IsEmpty ? T.Zero : bias[c];
                    }
                }
            ChannelKernel.Normalize<T>(input, l, default, perPlane: true, hi, lo, a, b, output);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(dbl);
            ArrayPool<T>.Shared.Return(par);
        }
    }

    // gradWeight += dot * rstd, gradBias += sum, per channel (each optional). With renorm's r and
    // d, y = w * (x_hat * r + d) + b, so gradWeight += dot * rstd * r + d * sum.
    private static void AccumulateParameterGrads<T>(Span<T> gradWeight, Span<T> gradBias, ReadOnlySpan<double> sum, ReadOnlySpan<double> dot, ReadOnlySpan<double> rstd,
        ReadOnlySpan<double> renormR = default, ReadOnlySpan<double> renormD = default)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int c = 0; c < sum.Length; c++)
        {
            double dw = renormR.IsEmpty ? dot[c] * rstd[c] : dot[c] * rstd[c] * renormR[c] + renormD[c] * sum[c];
            if (!gradWeight.IsEmpty) gradWeight[c] = Num.From<T>(Num.D(gradWeight[c]) + dw);
            if (!gradBias.IsEmpty) gradBias[c] = Num.From<T>(Num.D(gradBias[c]) + sum[c]);
        }
    }

    // ============================ SyncBatchNorm exchange ============================

    // Gathers every rank's per-channel (count, mean, M2) and merges them with Chan's formula
    // in rank order: every rank ends with the same bits.
    private static void MergeAcrossRanks(IAllGather group, Span<double> count, Span<double> mean, Span<double> m2)
    {
        int c = count.Length, k = group.WorldSize;
        double[] buffer = ArrayPool<double>.Shared.Rent(3 * c * (k + 1));
        try
        {
            Span<double> local = buffer.AsSpan(0, 3 * c), all = buffer.AsSpan(3 * c, 3 * c * k);
            count.CopyTo(local); mean.CopyTo(local[c..]); m2.CopyTo(local[(2 * c)..]);
            group.AllGather(local, all);
            count.Clear(); mean.Clear(); m2.Clear();
            for (int r = 0; r < k; r++)
                for (int j = 0; j < c; j++)
                    Reductions.ChanMerge(ref count[j], ref mean[j], ref m2[j], all[r * 3 * c + j], all[r * 3 * c + c + j], all[r * 3 * c + 2 * c + j]);
        }
        finally { ArrayPool<double>.Shared.Return(buffer); }
    }

    // Sums every rank's (count, sum, dot) in rank order; returns the total count.
    private static double SumAcrossRanks(IAllGather group, double count, ReadOnlySpan<double> sum, ReadOnlySpan<double> dot, Span<double> allSum, Span<double> allDot)
    {
        int c = sum.Length, k = group.WorldSize, len = 1 + 2 * c;
        double[] buffer = ArrayPool<double>.Shared.Rent(len * (k + 1));
        try
        {
            Span<double> local = buffer.AsSpan(0, len), all = buffer.AsSpan(len, len * k);
            local[0] = count; sum.CopyTo(local[1..]); dot.CopyTo(local[(1 + c)..]);
            group.AllGather(local, all);
            double total = 0;
            allSum.Clear(); allDot.Clear();
            for (int r = 0; r < k; r++)
            {
                total += all[r * len];
                for (int j = 0; j < c; j++) { allSum[j] += all[r * len + 1 + j]; allDot[j] += all[r * len + 1 + c + j]; }
            }
            return total;
        }
        finally { ArrayPool<double>.Shared.Return(buffer); }
    }

    // ============================ shared checks ============================

    private static void CheckMoreThanOne(long count, ReadOnlySpan<int> inputShape, bool unmasked)
    {
        if (count == 1)
            throw new ArgumentException(unmasked
                ? $"Expected more than 1 value per channel when training, got input size {Guard.Shape(inputShape)}."
                : $"Expected more than 1 unmasked value per channel when training, got 1 (input size {Guard.Shape(inputShape)}).", "input");
    }


    private static void CheckGroupNormArguments<T>(ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape, Span<T> output,
        ReadOnlySpan<T> weight, ReadOnlySpan<T> bias, double eps, ChannelLayout l)
    {
        long total = l.Count * l.C;
        Guard.Length(input, total, nameof(input), nameof(inputShape), inputShape);
        Guard.Length<T>(output, total, nameof(output), nameof(inputShape), inputShape);
        Guard.OptionalLength(weight, l.C, nameof(weight), PerChannel);
        Guard.OptionalLength(bias, l.C, nameof(bias), PerChannel);
        Guard.Eps(eps);
        Guard.NoOverlap(input, nameof(input), output, nameof(output));
        Guard.NoOverlap(weight, nameof(weight), output, nameof(output));
        Guard.NoOverlap(bias, nameof(bias), output, nameof(output));
    }

    internal static void CheckGroups(int numGroups, int numChannels)
    {
        Guard.Positive(numGroups, nameof(numGroups));
        if (numChannels % numGroups != 0)
            throw new ArgumentException($"NumChannels ({numChannels}) must be divisible by NumGroups ({numGroups}).", nameof(numGroups));
    }

    // Renorm divides by the moving sigma in training (r, d) and in eval.
    private static void CheckRunningStd<T>(ReadOnlySpan<T> runningStd) where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int c = 0; c < runningStd.Length; c++)
            if (!(Num.D(runningStd[c]) > 0))
                throw new ArgumentException($"runningStd[{c}] is {runningStd[c]}; running standard deviations must be > 0.", nameof(runningStd));
    }

    internal static void CheckRunningVar<T>(ReadOnlySpan<T> runningVar) where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int c = 0; c < runningVar.Length; c++)
            if (!(Num.D(runningVar[c]) >= 0))
                throw new ArgumentException($"runningVar[{c}] is {runningVar[c]}; running variances must be >= 0.", nameof(runningVar));
    }

    /// <summary>
    /// The one running update of the tracked channel norms (BatchNorm, Batch Renorm, Ghost
    /// BatchNorm, InstanceNorm), once per training forward: running = (1 - momentum) * running
    /// + momentum * batch for the mean and for the second buffer (a variance, or renorm's sigma).
    /// With the guard, a non-finite batch statistic, or a new value not finite in T, leaves both
    /// buffers as they were. <paramref name="scratch"/> holds 2 * C values of T.
    /// </summary>
    internal static RunningStatsUpdate UpdateRunning<T>(Span<T> runningMean, Span<T> runningSpread, ReadOnlySpan<double> batchMean, ReadOnlySpan<double> batchSpread,
        double momentum, bool guardNonFinite, Span<T> scratch)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (guardNonFinite && !AllFinite(batchMean, batchSpread)) return RunningStatsUpdate.SkippedNonFinite;
        int c = batchMean.Length;
        Span<T> newMean = scratch[..c], newSpread = scratch.Slice(c, c);
        for (int k = 0; k < c; k++)
        {
            newMean[k] = ChannelCoefficients.Running(runningMean[k], batchMean[k], momentum);
            newSpread[k] = ChannelCoefficients.Running(runningSpread[k], batchSpread[k], momentum);
        }
        return StoreRunning(newMean, newSpread, runningMean, runningSpread, guardNonFinite);
    }

    /// <summary>
    /// avg[c] = the mean over segments s of values[s * C + c], summed in segment order: the batch
    /// average of per-instance (InstanceNorm) or per-ghost (Ghost BatchNorm) statistics.
    /// </summary>
    internal static void AverageOverSegments(ReadOnlySpan<double> values, int c, Span<double> avg)
    {
        int segments = values.Length / c;
        for (int k = 0; k < c; k++)
        {
            double s = 0;
            for (int g = 0; g < segments; g++) s += values[g * c + k];
            avg[k] = s / segments;
        }
    }

    // Stores the new running statistics. With the guard, values that would not be finite in T
    // (a finite batch can still overflow float's range) leave every channel as it was.
    private static RunningStatsUpdate StoreRunning<T>(ReadOnlySpan<T> newMean, ReadOnlySpan<T> newVar, Span<T> runningMean, Span<T> runningVar, bool guardNonFinite)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (guardNonFinite)
            for (int c = 0; c < newMean.Length; c++)
                if (!T.IsFinite(newMean[c]) || !T.IsFinite(newVar[c])) return RunningStatsUpdate.SkippedNonFinite;
        newMean.CopyTo(runningMean);
        newVar.CopyTo(runningVar);
        return RunningStatsUpdate.Updated;
    }

    private static bool AllFinite(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        for (int i = 0; i < a.Length; i++)
            if (!double.IsFinite(a[i]) || !double.IsFinite(b[i])) return false;
        return true;
    }

    internal static ChannelLayout ChannelLayoutOf(ReadOnlySpan<int> shape, bool channelsLast)
    {
        if (shape.Length < 2)
            throw new ArgumentException($"inputShape must have rank >= 2 (N, C, ...) but has rank {shape.Length}: {Guard.Shape(shape)}.", "inputShape");
        Guard.Product(shape, "inputShape");
        int c = channelsLast ? shape[^1] : shape[1];
        if (c <= 0)
            throw new ArgumentException($"inputShape {Guard.Shape(shape)} has {c} channels; at least 1 is needed.", "inputShape");
        return ChannelLayout.Of(shape, channelsLast);
    }
}
