using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Kernels;

namespace NormKit;

/// <summary>What a BatchNorm call did to the running statistics.</summary>
public enum RunningStatsUpdate
{
    /// <summary>Not touched: eval mode, no running statistics, or an empty batch.</summary>
    None,
    /// <summary>Updated from this batch's statistics.</summary>
    Updated,
    /// <summary>Left untouched because the batch's mean or variance was NaN or infinite (guard on).</summary>
    SkippedNonFinite,
}

/// <summary>
/// Stateless normalization calls, like torch.nn.functional. Every call validates its
/// arguments once, then runs one kernel per pass. Element type: float or double.
/// Span overloads allocate nothing in steady state (scratch comes from ArrayPool).
/// </summary>
public static class Functional
{
    // ============================ LayerNorm ============================

    /// <summary>
    /// LayerNorm over the trailing dims <paramref name="normalizedShape"/> of an input of shape
    /// <paramref name="inputShape"/> (row-major): y = (x - mean) / sqrt(var + eps) * weight + bias,
    /// biased variance. weight and bias have normalizedShape's element count, or are empty
    /// (absent). mean and rstd, when given, receive one value per normalized row (in double:
    /// the exact statistics the normalization used).
    /// </summary>
    public static void LayerNorm<T>(ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape, Span<T> output,
        ReadOnlySpan<T> weight = default, ReadOnlySpan<T> bias = default, double eps = 1e-5, Span<double> mean = default, Span<double> rstd = default)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Num.EnsureSupported<T>();
        var (rows, cols) = LayerNormRows(inputShape, normalizedShape);
        Guard.Length(input, (long)rows * cols, nameof(input), nameof(inputShape), inputShape);
        Guard.Length<T>(output, (long)rows * cols, nameof(output), nameof(inputShape), inputShape);
        Guard.OptionalLength(weight, cols, nameof(weight), nameof(normalizedShape), normalizedShape);
        Guard.OptionalLength(bias, cols, nameof(bias), nameof(normalizedShape), normalizedShape);
        Guard.OptionalLength<double>(mean, rows, nameof(mean), "one value per normalized row");
        Guard.OptionalLength<double>(rstd, rows, nameof(rstd), "one value per normalized row");
        Guard.Eps(eps);
        Guard.NoOverlap(input, nameof(input), output, nameof(output));
        Guard.NoOverlap(weight, nameof(weight), output, nameof(output));
        Guard.NoOverlap(bias, nameof(bias), output, nameof(output));
        Guard.NoOverlap<double>(mean, nameof(mean), rstd, nameof(rstd));

        double[]? scratch = null;
        if (mean.IsEmpty || rstd.IsEmpty)
        {
            scratch = ArrayPool<double>.Shared.Rent(2 * rows);
            if (mean.IsEmpty) mean = scratch.AsSpan(0, rows);
            if (rstd.IsEmpty) rstd = scratch.AsSpan(rows, rows);
        }
        try { LayerNormKernel.Forward(input, weight, bias, rows, cols, eps, output, mean, rstd); }
        finally { if (scratch != null) ArrayPool<double>.Shared.Return(scratch); }
    }

    /// <summary>
    /// Backward of <see cref="LayerNorm{T}(ReadOnlySpan{T}, ReadOnlySpan{int}, ReadOnlySpan{int}, Span{T}, ReadOnlySpan{T}, ReadOnlySpan{T}, double, Span{double}, Span{double})"/>
    /// from the mean and rstd it saved. gradInput is overwritten; gradWeight and gradBias
    /// accumulate (+=) and may be empty when not wanted.
    /// </summary>
    public static void LayerNormBackward<T>(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape,
        ReadOnlySpan<double> mean, ReadOnlySpan<double> rstd, ReadOnlySpan<T> weight, Span<T> gradInput, Span<T> gradWeight = default, Span<T> gradBias = default)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Num.EnsureSupported<T>();
        var (rows, cols) = LayerNormRows(inputShape, normalizedShape);
        Guard.Length(input, (long)rows * cols, nameof(input), nameof(inputShape), inputShape);
        Guard.Length(gradOutput, (long)rows * cols, nameof(gradOutput), nameof(inputShape), inputShape);
        Guard.Length<T>(gradInput, (long)rows * cols, nameof(gradInput), nameof(inputShape), inputShape);
        Guard.Length(mean, rows, nameof(mean), "one value per normalized row");
        Guard.Length(rstd, rows, nameof(rstd), "one value per normalized row");
        Guard.OptionalLength(weight, cols, nameof(weight), nameof(normalizedShape), normalizedShape);
        Guard.OptionalLength<T>(gradWeight, cols, nameof(gradWeight), nameof(normalizedShape), normalizedShape);
        Guard.OptionalLength<T>(gradBias, cols, nameof(gradBias), nameof(normalizedShape), normalizedShape);
        Guard.NoOverlap(gradOutput, nameof(gradOutput), gradInput, nameof(gradInput));
        Guard.NoOverlap(input, nameof(input), gradInput, nameof(gradInput));
        Guard.NoOverlap<T>(gradWeight, nameof(gradWeight), gradBias, nameof(gradBias));
        LayerNormKernel.Backward(gradOutput, input, mean, rstd, weight, rows, cols, gradInput, gradWeight, gradBias);
    }

    /// <summary>LayerNorm on tensors; returns a new tensor of the input's shape.</summary>
    public static Tensor<T> LayerNorm<T>(Tensor<T> input, ReadOnlySpan<int> normalizedShape, Tensor<T>? weight = null, Tensor<T>? bias = null, double eps = 1e-5)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int[] shape = Guard.ShapeOf(input, nameof(input));
        var output = Guard.NewLike(input);
        LayerNorm<T>(Guard.Span(input), shape, normalizedShape, Guard.Span(output),
            Guard.OptionalSpan(weight, nameof(weight)), Guard.OptionalSpan(bias, nameof(bias)), eps);
        return output;
    }

    internal static (int Rows, int Cols) LayerNormRows(ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape)
    {
        if (normalizedShape.IsEmpty)
            throw new ArgumentException("normalizedShape must have at least one dimension but is [].", nameof(normalizedShape));
        foreach (int d in normalizedShape)
            if (d <= 0)
                throw new ArgumentException($"normalizedShape {Guard.Shape(normalizedShape)} must have dimensions > 0 but has {d}.", nameof(normalizedShape));
        Guard.Product(inputShape, nameof(inputShape));
        int k = normalizedShape.Length;
        if (inputShape.Length < k || !inputShape[^k..].SequenceEqual(normalizedShape))
            throw new ArgumentException(
                $"Given normalizedShape={Guard.Shape(normalizedShape)}, expected input with shape [*, {string.Join(", ", normalizedShape.ToArray())}], but got input of size {Guard.Shape(inputShape)}.",
                nameof(inputShape));
        int cols = (int)Guard.Product(normalizedShape, nameof(normalizedShape));
        int rows = (int)Guard.Product(inputShape[..^k], nameof(inputShape));
        return (rows, cols);
    }

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
    /// <param name="unbiasedRunningVar">running_var takes the unbiased batch variance (PyTorch, default)
    /// or, with false, the biased one (ONNX BatchNormalization, Keras).</param>
    /// <param name="guardNonFinite">When the batch mean or variance of any channel is NaN or
    /// infinite, leave the running statistics untouched and return
    /// <see cref="RunningStatsUpdate.SkippedNonFinite"/>. The output follows IEEE either way.</param>
    /// <param name="saveMean">Receives the mean used per channel (for backward), optional.</param>
    /// <param name="saveRstd">Receives 1 / sqrt(var + eps) used per channel (for backward), optional.</param>
    public static RunningStatsUpdate BatchNorm<T>(ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape, Span<T> output,
        Span<T> runningMean, Span<T> runningVar, ReadOnlySpan<T> weight, ReadOnlySpan<T> bias,
        bool training, double momentum = 0.1, double eps = 1e-5, bool channelsLast = false, bool guardNonFinite = true,
        Span<double> saveMean = default, Span<double> saveRstd = default, bool unbiasedRunningVar = true)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Num.EnsureSupported<T>();
        var l = BatchLayoutOf(inputShape, channelsLast);
        long total = l.Count * l.C;
        Guard.Length(input, total, nameof(input), nameof(inputShape), inputShape);
        Guard.Length<T>(output, total, nameof(output), nameof(inputShape), inputShape);
        if (runningMean.IsEmpty != runningVar.IsEmpty)
            throw new ArgumentException($"runningMean and runningVar must be given together, but runningMean has length {runningMean.Length} and runningVar {runningVar.Length}.",
                runningMean.IsEmpty ? nameof(runningMean) : nameof(runningVar));
        Guard.OptionalLength<T>(runningMean, l.C, nameof(runningMean), PerChannel);
        Guard.OptionalLength<T>(runningVar, l.C, nameof(runningVar), PerChannel);
        Guard.OptionalLength(weight, l.C, nameof(weight), PerChannel);
        Guard.OptionalLength(bias, l.C, nameof(bias), PerChannel);
        Guard.OptionalLength<double>(saveMean, l.C, nameof(saveMean), PerChannel);
        Guard.OptionalLength<double>(saveRstd, l.C, nameof(saveRstd), PerChannel);
        Guard.Eps(eps);
        Guard.Momentum(momentum);
        Guard.NoOverlap(input, nameof(input), output, nameof(output));
        Guard.NoOverlap(weight, nameof(weight), output, nameof(output));
        Guard.NoOverlap(bias, nameof(bias), output, nameof(output));
        Guard.NoOverlap<T>(runningMean, nameof(runningMean), output, nameof(output));
        Guard.NoOverlap<T>(runningVar, nameof(runningVar), output, nameof(output));

        bool useBatch = training || runningMean.IsEmpty;
        if (useBatch && l.Count == 1)
            throw new ArgumentException($"Expected more than 1 value per channel when training, got input size {Guard.Shape(inputShape)}.", nameof(input));
        if (!useBatch)
            for (int c = 0; c < l.C; c++)
                if (!(Num.D(runningVar[c]) >= 0))
                    throw new ArgumentException($"runningVar[{c}] is {runningVar[c]}; running variances must be >= 0.", nameof(runningVar));
        if (l.Count == 0) return RunningStatsUpdate.None;

        // Per-channel scratch: batch mean and M2 in double; hi, lo, a, b of the element-wise pass in T.
        double[] dbl = ArrayPool<double>.Shared.Rent(2 * l.C);
        T[] par = ArrayPool<T>.Shared.Rent(4 * l.C);
        try
        {
            Span<double> mean = dbl.AsSpan(0, l.C), m2 = dbl.AsSpan(l.C, l.C);
            Span<T> hi = par.AsSpan(0, l.C), lo = par.AsSpan(l.C, l.C), a = par.AsSpan(2 * l.C, l.C), b = par.AsSpan(3 * l.C, l.C);
            if (useBatch) BatchNormKernel.Statistics(input, l, mean, m2);
            for (int c = 0; c < l.C; c++)
            {
                double mu = useBatch ? mean[c] : Num.D(runningMean[c]);
                double var = useBatch ? m2[c] / l.Count : Num.D(runningVar[c]);
                double rs = 1.0 / Math.Sqrt(var + eps);
                LayerNormKernel.Split(mu, out hi[c], out lo[c]);
                a[c] = Num.From<T>(weight.IsEmpty ? rs : rs * Num.D(weight[c]));
                b[c] = bias.IsEmpty ? T.Zero : bias[c];
                if (!saveMean.IsEmpty) saveMean[c] = mu;
                if (!saveRstd.IsEmpty) saveRstd[c] = rs;
            }
            BatchNormKernel.Normalize<T>(input, l, hi, lo, a, b, output);

            if (!training || runningMean.IsEmpty) return RunningStatsUpdate.None;
            if (guardNonFinite)
                for (int c = 0; c < l.C; c++)
                    if (!double.IsFinite(mean[c]) || !double.IsFinite(m2[c]))
                        return RunningStatsUpdate.SkippedNonFinite;
            for (int c = 0; c < l.C; c++)
            {
                double batchVar = m2[c] / (unbiasedRunningVar ? l.Count - 1 : l.Count);
                runningMean[c] = Num.From<T>((1 - momentum) * Num.D(runningMean[c]) + momentum * mean[c]);
                runningVar[c] = Num.From<T>((1 - momentum) * Num.D(runningVar[c]) + momentum * batchVar);
            }
            return RunningStatsUpdate.Updated;
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
    /// </summary>
    public static void BatchNormBackward<T>(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape,
        ReadOnlySpan<T> weight, ReadOnlySpan<double> saveMean, ReadOnlySpan<double> saveRstd, bool batchStatistics,
        Span<T> gradInput, Span<T> gradWeight = default, Span<T> gradBias = default, bool channelsLast = false)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Num.EnsureSupported<T>();
        var l = BatchLayoutOf(inputShape, channelsLast);
        long total = l.Count * l.C;
        Guard.Length(gradOutput, total, nameof(gradOutput), nameof(inputShape), inputShape);
        Guard.Length(input, total, nameof(input), nameof(inputShape), inputShape);
        Guard.Length<T>(gradInput, total, nameof(gradInput), nameof(inputShape), inputShape);
        Guard.OptionalLength(weight, l.C, nameof(weight), PerChannel);
        Guard.Length(saveMean, l.C, nameof(saveMean), PerChannel);
        Guard.Length(saveRstd, l.C, nameof(saveRstd), PerChannel);
        Guard.OptionalLength<T>(gradWeight, l.C, nameof(gradWeight), PerChannel);
        Guard.OptionalLength<T>(gradBias, l.C, nameof(gradBias), PerChannel);
        Guard.NoOverlap(gradOutput, nameof(gradOutput), gradInput, nameof(gradInput));
        Guard.NoOverlap(input, nameof(input), gradInput, nameof(gradInput));
        Guard.NoOverlap<T>(gradWeight, nameof(gradWeight), gradBias, nameof(gradBias));
        if (l.Count == 0) return;

        bool needSums = batchStatistics || !gradWeight.IsEmpty || !gradBias.IsEmpty;
        double[] dbl = ArrayPool<double>.Shared.Rent(2 * l.C);
        T[] par = ArrayPool<T>.Shared.Rent(5 * l.C);
        try
        {
            Span<double> sum = dbl.AsSpan(0, l.C), dot = dbl.AsSpan(l.C, l.C);
            Span<T> hi = par.AsSpan(0, l.C), lo = par.AsSpan(l.C, l.C);
            Span<T> k1 = par.AsSpan(2 * l.C, l.C), k2 = par.AsSpan(3 * l.C, l.C), k3 = par.AsSpan(4 * l.C, l.C);
            if (needSums) BatchNormKernel.GradSums(gradOutput, input, l, saveMean, sum, dot);
            else { sum.Clear(); dot.Clear(); }
            double n = l.Count;
            for (int c = 0; c < l.C; c++)
            {
                double rs = saveRstd[c];
                LayerNormKernel.Split(saveMean[c], out hi[c], out lo[c]);
                k3[c] = Num.From<T>(weight.IsEmpty ? rs : rs * Num.D(weight[c]));
                if (batchStatistics)
                {
                    k1[c] = Num.From<T>(sum[c] / n);
                    k2[c] = Num.From<T>(dot[c] * rs * rs / n);
                }
            }
            if (batchStatistics) BatchNormKernel.InputGradTrain<T>(gradOutput, input, l, hi, lo, k1, k2, k3, gradInput);
            else BatchNormKernel.InputGradEval<T>(gradOutput, l, k3, gradInput);
            for (int c = 0; c < l.C; c++)
            {
                if (!gradWeight.IsEmpty) gradWeight[c] = Num.From<T>(Num.D(gradWeight[c]) + dot[c] * saveRstd[c]);
                if (!gradBias.IsEmpty) gradBias[c] = Num.From<T>(Num.D(gradBias[c]) + sum[c]);
            }
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

    private const string PerChannel = "one value per channel";

    internal static BatchLayout BatchLayoutOf(ReadOnlySpan<int> shape, bool channelsLast)
    {
        if (shape.Length < 2)
            throw new ArgumentException($"inputShape must have rank >= 2 (N, C, ...) but has rank {shape.Length}: {Guard.Shape(shape)}.", "inputShape");
        Guard.Product(shape, "inputShape");
        int c = channelsLast ? shape[^1] : shape[1];
        if (c <= 0)
            throw new ArgumentException($"inputShape {Guard.Shape(shape)} has {c} channels; at least 1 is needed.", "inputShape");
        int s = 1;
        for (int i = 1; i < shape.Length; i++)
            if (i != (channelsLast ? shape.Length - 1 : 1)) s *= shape[i];
        return new BatchLayout(shape[0], c, s, channelsLast);
    }
}
