using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using NormKit.Kernels;

namespace NormKit;

/// <summary>
/// Stateless normalization calls, like torch.nn.functional. Every call validates its
/// arguments once, then runs one kernel per pass. Element type: float or double.
/// Span overloads allocate nothing in steady state (scratch comes from ArrayPool).
/// </summary>
public static partial class Functional
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
        where T : unmanaged, IFloatingPointIeee754<T> =>
        RowNormForward(input, default, inputShape, normalizedShape, output, default, weight, bias, eps, centered: true, mean, rstd);

    /// <summary>
    /// Backward of LayerNorm from the mean and rstd it saved. gradInput is overwritten;
    /// gradWeight and gradBias accumulate (+=) and may be empty when not wanted.
    /// </summary>
    public static void LayerNormBackward<T>(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape,
        ReadOnlySpan<double> mean, ReadOnlySpan<double> rstd, ReadOnlySpan<T> weight, Span<T> gradInput, Span<T> gradWeight = default, Span<T> gradBias = default)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        RowNormBackward(gradOutput, default, input, inputShape, normalizedShape, mean, rstd, weight, gradInput, gradWeight, gradBias, centered: true);

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

    // ============================ RMSNorm ============================

    /// <summary>
    /// RMSNorm over the trailing dims: y = x / sqrt(mean(x^2) + eps) * weight (no mean, no bias),
    /// like torch.nn.functional.rms_norm. eps null means the machine epsilon of T (float:
    /// 1.19e-7, double: 2.22e-16). rstd, when given, receives 1 / sqrt(mean(x^2) + eps) per row.
    /// </summary>
    public static void RmsNorm<T>(ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape, Span<T> output,
        ReadOnlySpan<T> weight = default, double? eps = null, Span<double> rstd = default)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        RowNormForward(input, default, inputShape, normalizedShape, output, default, weight, default, eps ?? MachineEpsilon<T>(), centered: false, default, rstd);

    /// <summary>Backward of RMSNorm: dx = rstd * (g - x_hat * mean(g * x_hat)), g = dy * weight; gradWeight += sum dy * x_hat.</summary>
    public static void RmsNormBackward<T>(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape,
        ReadOnlySpan<double> rstd, ReadOnlySpan<T> weight, Span<T> gradInput, Span<T> gradWeight = default)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        RowNormBackward(gradOutput, default, input, inputShape, normalizedShape, default, rstd, weight, gradInput, gradWeight, default, centered: false);

    /// <summary>The machine epsilon of T, RMSNorm's default eps (torch.finfo(dtype).eps).</summary>
    public static double MachineEpsilon<T>() where T : unmanaged, IFloatingPointIeee754<T> =>
        typeof(T) == typeof(float) ? Math.Pow(2, -23) : Math.Pow(2, -52);

    // ============================ residual add + norm ============================

    /// <summary>
    /// Fused residual add and LayerNorm: sum = input + residual, output = LayerNorm(sum), in one
    /// pass over memory (reads input and residual once, writes sum and output once).
    /// </summary>
    public static void AddLayerNorm<T>(ReadOnlySpan<T> input, ReadOnlySpan<T> residual, ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape,
        Span<T> sum, Span<T> output, ReadOnlySpan<T> weight = default, ReadOnlySpan<T> bias = default, double eps = 1e-5,
        Span<double> mean = default, Span<double> rstd = default)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        RowNormForward(input, residual, inputShape, normalizedShape, output, sum, weight, bias, eps, centered: true, mean, rstd, fused: true);
    }

    /// <summary>Fused residual add and RMSNorm: sum = input + residual, output = RMSNorm(sum), in one pass over memory.</summary>
    public static void AddRmsNorm<T>(ReadOnlySpan<T> input, ReadOnlySpan<T> residual, ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape,
        Span<T> sum, Span<T> output, ReadOnlySpan<T> weight = default, double? eps = null, Span<double> rstd = default)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        RowNormForward(input, residual, inputShape, normalizedShape, output, sum, weight, default, eps ?? MachineEpsilon<T>(), centered: false, default, rstd, fused: true);
    }

    /// <summary>
    /// Backward of <see cref="AddLayerNorm{T}"/>: gradInput = d(loss)/d(sum), which is the gradient
    /// of both input and residual: the LayerNorm backward of gradOutput plus
    /// <paramref name="gradSum"/>, the gradient that reaches sum from elsewhere (empty: none).
    /// </summary>
    public static void AddLayerNormBackward<T>(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> gradSum, ReadOnlySpan<T> sum, ReadOnlySpan<int> inputShape,
        ReadOnlySpan<int> normalizedShape, ReadOnlySpan<double> mean, ReadOnlySpan<double> rstd, ReadOnlySpan<T> weight,
        Span<T> gradInput, Span<T> gradWeight = default, Span<T> gradBias = default)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        RowNormBackward(gradOutput, gradSum, sum, inputShape, normalizedShape, mean, rstd, weight, gradInput, gradWeight, gradBias, centered: true);

    /// <summary>Backward of <see cref="AddRmsNorm{T}"/>; see <see cref="AddLayerNormBackward{T}"/>.</summary>
    public static void AddRmsNormBackward<T>(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> gradSum, ReadOnlySpan<T> sum, ReadOnlySpan<int> inputShape,
        ReadOnlySpan<int> normalizedShape, ReadOnlySpan<double> rstd, ReadOnlySpan<T> weight, Span<T> gradInput, Span<T> gradWeight = default)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        RowNormBackward(gradOutput, gradSum, sum, inputShape, normalizedShape, default, rstd, weight, gradInput, gradWeight, default, centered: false);

    // ============================ shared core ============================

    private static void RowNormForward<T>(ReadOnlySpan<T> input, ReadOnlySpan<T> residual, ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape,
        Span<T> output, Span<T> sum, ReadOnlySpan<T> weight, ReadOnlySpan<T> bias, double eps, bool centered, Span<double> mean, Span<double> rstd,
        bool fused = false)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Num.EnsureSupported<T>();
        var (rows, cols) = CheckRowForward(input, residual, inputShape, normalizedShape, output, sum, weight, bias, eps, mean, rstd, fused);
        double[]? scratch = null;
        if ((centered && mean.IsEmpty) || rstd.IsEmpty)
        {
            scratch = ArrayPool<double>.Shared.Rent(2 * rows);
            if (centered && mean.IsEmpty) mean = scratch.AsSpan(0, rows);
            if (rstd.IsEmpty) rstd = scratch.AsSpan(rows, rows);
        }
        try { RowKernel.Forward(input, residual, weight, bias, new RowLayout(rows, cols), eps, centered, output, sum, centered ? mean : default, rstd); }
        finally { if (scratch != null) ArrayPool<double>.Shared.Return(scratch); }
    }

    /// <summary>
    /// LayerNorm (centered) or RMSNorm forward on Half or BFloat16 activations with float
    /// parameters, straight from the 16-bit rows (see <see cref="RowKernel.ForwardLow{TLow}"/>).
    /// </summary>
    internal static void RowNormForwardLow<TLow>(ReadOnlySpan<TLow> input, ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape, Span<TLow> output,
        ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, double eps, bool centered, Span<double> mean, Span<double> rstd)
        where TLow : unmanaged
    {
        LowPrecision.Of<TLow>();
        var (rows, cols) = CheckRowForward(input, default, inputShape, normalizedShape, output, default, weight, bias, eps, mean, rstd, fused: false);
        double[]? scratch = null;
        if ((centered && mean.IsEmpty) || rstd.IsEmpty)
        {
            scratch = ArrayPool<double>.Shared.Rent(2 * rows);
            if (centered && mean.IsEmpty) mean = scratch.AsSpan(0, rows);
            if (rstd.IsEmpty) rstd = scratch.AsSpan(rows, rows);
        }
        try { RowKernel.ForwardLow(input, weight, bias, new RowLayout(rows, cols), eps, centered, output, centered ? mean : default, rstd); }
        finally { if (scratch != null) ArrayPool<double>.Shared.Return(scratch); }
    }

    /// <summary>LayerNorm (centered) or RMSNorm backward on Half or BFloat16 rows with float parameters and parameter gradients.</summary>
    internal static void RowNormBackwardLow<TLow>(ReadOnlySpan<TLow> gradOutput, ReadOnlySpan<TLow> input, ReadOnlySpan<int> inputShape,
        ReadOnlySpan<int> normalizedShape, ReadOnlySpan<double> mean, ReadOnlySpan<double> rstd, ReadOnlySpan<float> weight,
        Span<TLow> gradInput, Span<float> gradWeight, Span<float> gradBias, bool centered)
        where TLow : unmanaged
    {
        LowPrecision.Of<TLow>();
        var (rows, cols) = CheckRowBackward(gradOutput, default, input, inputShape, normalizedShape, mean, rstd, weight, gradInput, gradWeight, gradBias, centered);
        RowKernel.BackwardLow(gradOutput, input, mean, rstd, weight, new RowLayout(rows, cols), centered, gradInput, gradWeight, gradBias);
    }

    // The checks of a row-norm forward, for activations TX and parameters TP (the same type, or
    // Half/BFloat16 activations with float parameters). Returns the rows and columns.
    private static (int Rows, int Cols) CheckRowForward<TX, TP>(ReadOnlySpan<TX> input, ReadOnlySpan<TX> residual, ReadOnlySpan<int> inputShape,
        ReadOnlySpan<int> normalizedShape, Span<TX> output, Span<TX> sum, ReadOnlySpan<TP> weight, ReadOnlySpan<TP> bias, double eps,
        Span<double> mean, Span<double> rstd, bool fused) where TX : unmanaged where TP : unmanaged
    {
        var (rows, cols) = RowsOf(inputShape, normalizedShape);
        long total = (long)rows * cols;
        Guard.Length(input, total, nameof(input), nameof(inputShape), inputShape);
        Guard.Length<TX>(output, total, nameof(output), nameof(inputShape), inputShape);
        if (fused)
        {
            Guard.Length(residual, total, nameof(residual), nameof(inputShape), inputShape);
            Guard.Length<TX>(sum, total, nameof(sum), nameof(inputShape), inputShape);
        }
        Guard.OptionalLength(weight, cols, nameof(weight), nameof(normalizedShape), normalizedShape);
        Guard.OptionalLength(bias, cols, nameof(bias), nameof(normalizedShape), normalizedShape);
        Guard.OptionalLength<double>(mean, rows, nameof(mean), "one value per normalized row");
        Guard.OptionalLength<double>(rstd, rows, nameof(rstd), "one value per normalized row");
        Guard.Eps(eps);
        Guard.NoOverlap(input, nameof(input), output, nameof(output));
        Guard.NoOverlap(residual, nameof(residual), output, nameof(output));
        Guard.NoOverlap(input, nameof(input), sum, nameof(sum));
        Guard.NoOverlap(residual, nameof(residual), sum, nameof(sum));
        Guard.NoOverlap<TX>(output, nameof(output), sum, nameof(sum));
        // As bytes: a float weight must not share memory with a Half output either.
        Guard.NoOverlap(MemoryMarshal.AsBytes(weight), nameof(weight), MemoryMarshal.AsBytes((ReadOnlySpan<TX>)output), nameof(output));
        Guard.NoOverlap(MemoryMarshal.AsBytes(bias), nameof(bias), MemoryMarshal.AsBytes((ReadOnlySpan<TX>)output), nameof(output));
        Guard.NoOverlap<double>(mean, nameof(mean), rstd, nameof(rstd));
        return (rows, cols);
    }

    private static void RowNormBackward<T>(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> gradSum, ReadOnlySpan<T> input, ReadOnlySpan<int> inputShape,
        ReadOnlySpan<int> normalizedShape, ReadOnlySpan<double> mean, ReadOnlySpan<double> rstd, ReadOnlySpan<T> weight,
        Span<T> gradInput, Span<T> gradWeight, Span<T> gradBias, bool centered)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Num.EnsureSupported<T>();
        var (rows, cols) = CheckRowBackward(gradOutput, gradSum, input, inputShape, normalizedShape, mean, rstd, weight, gradInput, gradWeight, gradBias, centered);
        RowKernel.Backward(gradOutput, input, mean, rstd, weight, new RowLayout(rows, cols), centered, gradSum, gradInput, gradWeight, gradBias);
    }

    // The checks of a row-norm backward, for activations TX and parameters TP. Returns the rows and columns.
    private static (int Rows, int Cols) CheckRowBackward<TX, TP>(ReadOnlySpan<TX> gradOutput, ReadOnlySpan<TX> gradSum, ReadOnlySpan<TX> input,
        ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape, ReadOnlySpan<double> mean, ReadOnlySpan<double> rstd, ReadOnlySpan<TP> weight,
        Span<TX> gradInput, Span<TP> gradWeight, Span<TP> gradBias, bool centered) where TX : unmanaged where TP : unmanaged
    {
        var (rows, cols) = RowsOf(inputShape, normalizedShape);
        long total = (long)rows * cols;
        Guard.Length(input, total, nameof(input), nameof(inputShape), inputShape);
        Guard.Length(gradOutput, total, nameof(gradOutput), nameof(inputShape), inputShape);
        Guard.OptionalLength(gradSum, total, nameof(gradSum), nameof(inputShape), inputShape);
        Guard.Length<TX>(gradInput, total, nameof(gradInput), nameof(inputShape), inputShape);
        if (centered) Guard.Length(mean, rows, nameof(mean), "one value per normalized row");
        Guard.Length(rstd, rows, nameof(rstd), "one value per normalized row");
        Guard.OptionalLength(weight, cols, nameof(weight), nameof(normalizedShape), normalizedShape);
        Guard.OptionalLength<TP>(gradWeight, cols, nameof(gradWeight), nameof(normalizedShape), normalizedShape);
        Guard.OptionalLength<TP>(gradBias, cols, nameof(gradBias), nameof(normalizedShape), normalizedShape);
        Guard.NoOverlap(gradOutput, nameof(gradOutput), gradInput, nameof(gradInput));
        Guard.NoOverlap(gradSum, nameof(gradSum), gradInput, nameof(gradInput));
        Guard.NoOverlap(input, nameof(input), gradInput, nameof(gradInput));
        Guard.NoOverlap<TP>(gradWeight, nameof(gradWeight), gradBias, nameof(gradBias));
        return (rows, cols);
    }

    /// <summary>Rows and columns of an input whose trailing dims are <paramref name="normalizedShape"/>.</summary>
    internal static (int Rows, int Cols) RowsOf(ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape)
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
}
