using System.Buffers;
using System.Numerics.Tensors;

namespace NormKit;

/// <summary>
/// Mixed precision: inputs, outputs and input gradients in <see cref="Half"/> or
/// <see cref="BFloat16"/>, with float32 parameters, running statistics and parameter
/// gradients, and statistics accumulated in double (PyTorch's autocast convention). Results
/// are those of the float kernel on the widened inputs, rounded once; activations whose
/// squares exceed Half's range (above 256) do not overflow. LayerNorm and RMSNorm (forward and
/// backward) and BatchNorm's eval forward read and write the 16-bit data directly (through a
/// float scratch row or block per worker); BatchNorm's training forward and backward and
/// GroupNorm still widen the whole input into a pooled float copy.
/// </summary>
public static class Mixed
{
    /// <summary>LayerNorm; see <see cref="Functional.LayerNorm{T}(ReadOnlySpan{T}, ReadOnlySpan{int}, ReadOnlySpan{int}, Span{T}, ReadOnlySpan{T}, ReadOnlySpan{T}, double, Span{double}, Span{double})"/>.</summary>
    public static void LayerNorm<TLow>(ReadOnlySpan<TLow> input, ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape, Span<TLow> output,
        ReadOnlySpan<float> weight = default, ReadOnlySpan<float> bias = default, double eps = 1e-5, Span<double> mean = default, Span<double> rstd = default)
        where TLow : unmanaged =>
        Functional.RowNormForwardLow(input, inputShape, normalizedShape, output, weight, bias, eps, centered: true, mean, rstd);

    /// <summary>LayerNorm backward: gradInput in TLow; gradWeight and gradBias (float) accumulate.</summary>
    public static void LayerNormBackward<TLow>(ReadOnlySpan<TLow> gradOutput, ReadOnlySpan<TLow> input, ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape,
        ReadOnlySpan<double> mean, ReadOnlySpan<double> rstd, ReadOnlySpan<float> weight, Span<TLow> gradInput, Span<float> gradWeight = default, Span<float> gradBias = default)
        where TLow : unmanaged =>
        Functional.RowNormBackwardLow(gradOutput, input, inputShape, normalizedShape, mean, rstd, weight, gradInput, gradWeight, gradBias, centered: true);

    /// <summary>RMSNorm; eps null means float32's machine epsilon (the statistics' precision).</summary>
    public static void RmsNorm<TLow>(ReadOnlySpan<TLow> input, ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape, Span<TLow> output,
        ReadOnlySpan<float> weight = default, double? eps = null, Span<double> rstd = default)
        where TLow : unmanaged =>
        Functional.RowNormForwardLow(input, inputShape, normalizedShape, output, weight, default, eps ?? Functional.MachineEpsilon<float>(), centered: false, default, rstd);

    /// <summary>RMSNorm backward: gradInput in TLow; gradWeight (float) accumulates.</summary>
    public static void RmsNormBackward<TLow>(ReadOnlySpan<TLow> gradOutput, ReadOnlySpan<TLow> input, ReadOnlySpan<int> inputShape, ReadOnlySpan<int> normalizedShape,
        ReadOnlySpan<double> rstd, ReadOnlySpan<float> weight, Span<TLow> gradInput, Span<float> gradWeight = default)
        where TLow : unmanaged =>
        Functional.RowNormBackwardLow(gradOutput, input, inputShape, normalizedShape, default, rstd, weight, gradInput, gradWeight, default, centered: false);

    /// <summary>BatchNorm with float running statistics and parameters; see <see cref="Functional"/>'s BatchNorm.</summary>
    public static RunningStatsUpdate BatchNorm<TLow>(ReadOnlySpan<TLow> input, ReadOnlySpan<int> inputShape, Span<TLow> output,
        Span<float> runningMean, Span<float> runningVar, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, bool training,
        double momentum = 0.1, double eps = 1e-5, bool channelsLast = false, Span<double> saveMean = default, Span<double> saveRstd = default)
        where TLow : unmanaged
    {
        if (!training && !runningMean.IsEmpty)
        {
            // Eval: the running statistics make it one element-wise pass, read and written in 16 bits.
            Functional.BatchNormEvalLow(input, inputShape, output, runningMean, runningVar, weight, bias, momentum, eps, channelsLast, saveMean, saveRstd);
            return RunningStatsUpdate.None;
        }
        Guard.NoOverlap<TLow>(input, nameof(input), output, nameof(output));
        using var x = Wide.From(input);
        using var y = Wide.Rent(output.Length);
        var result = Functional.BatchNorm<float>(x.Span, inputShape, y.Span, runningMean, runningVar, weight, bias, training, momentum, eps, channelsLast,
            saveMean: saveMean, saveRstd: saveRstd);
        Wide.To(y.Span, output);
        return result;
    }

    /// <summary>BatchNorm backward: gradInput in TLow; gradWeight and gradBias (float) accumulate.</summary>
    public static void BatchNormBackward<TLow>(ReadOnlySpan<TLow> gradOutput, ReadOnlySpan<TLow> input, ReadOnlySpan<int> inputShape,
        ReadOnlySpan<float> weight, ReadOnlySpan<double> saveMean, ReadOnlySpan<double> saveRstd, bool batchStatistics,
        Span<TLow> gradInput, Span<float> gradWeight = default, Span<float> gradBias = default, bool channelsLast = false)
        where TLow : unmanaged
    {
        Guard.NoOverlap<TLow>(gradOutput, nameof(gradOutput), gradInput, nameof(gradInput));
        using var dy = Wide.From(gradOutput);
        using var x = Wide.From(input);
        using var dx = Wide.Rent(gradInput.Length);
        Functional.BatchNormBackward<float>(dy.Span, x.Span, inputShape, weight, saveMean, saveRstd, batchStatistics, dx.Span, gradWeight, gradBias, channelsLast);
        Wide.To(dx.Span, gradInput);
    }

    /// <summary>GroupNorm with float parameters.</summary>
    public static void GroupNorm<TLow>(ReadOnlySpan<TLow> input, ReadOnlySpan<int> inputShape, int numGroups, Span<TLow> output,
        ReadOnlySpan<float> weight = default, ReadOnlySpan<float> bias = default, double eps = 1e-5, bool channelsLast = false,
        Span<double> saveMean = default, Span<double> saveRstd = default)
        where TLow : unmanaged
    {
        Guard.NoOverlap<TLow>(input, nameof(input), output, nameof(output));
        using var x = Wide.From(input);
        using var y = Wide.Rent(output.Length);
        Functional.GroupNorm<float>(x.Span, inputShape, numGroups, y.Span, weight, bias, eps, channelsLast, saveMean, saveRstd);
        Wide.To(y.Span, output);
    }

    /// <summary>GroupNorm backward: gradInput in TLow; gradWeight and gradBias (float) accumulate.</summary>
    public static void GroupNormBackward<TLow>(ReadOnlySpan<TLow> gradOutput, ReadOnlySpan<TLow> input, ReadOnlySpan<int> inputShape, int numGroups,
        ReadOnlySpan<float> weight, ReadOnlySpan<double> saveMean, ReadOnlySpan<double> saveRstd,
        Span<TLow> gradInput, Span<float> gradWeight = default, Span<float> gradBias = default, bool channelsLast = false)
        where TLow : unmanaged
    {
        Guard.NoOverlap<TLow>(gradOutput, nameof(gradOutput), gradInput, nameof(gradInput));
        using var dy = Wide.From(gradOutput);
        using var x = Wide.From(input);
        using var dx = Wide.Rent(gradInput.Length);
        Functional.GroupNormBackward<float>(dy.Span, x.Span, inputShape, numGroups, weight, saveMean, saveRstd, dx.Span, gradWeight, gradBias, channelsLast);
        Wide.To(dx.Span, gradInput);
    }

    /// <summary>A pooled float buffer, and the conversions between it and Half or BFloat16.</summary>
    private readonly ref struct Wide
    {
        private readonly float[] _array;
        public Span<float> Span { get; }

        private Wide(int length)
        {
            _array = ArrayPool<float>.Shared.Rent(length);
            Span = _array.AsSpan(0, length);
        }

        public static Wide Rent(int length) => new(length);

        public static Wide From<TLow>(ReadOnlySpan<TLow> values) where TLow : unmanaged
        {
            var w = new Wide(values.Length);
            if (typeof(TLow) == typeof(Half))
                TensorPrimitives.ConvertToSingle(System.Runtime.InteropServices.MemoryMarshal.Cast<TLow, Half>(values), w.Span);
            else if (typeof(TLow) == typeof(BFloat16))
            {
                var b = System.Runtime.InteropServices.MemoryMarshal.Cast<TLow, BFloat16>(values);
                for (int i = 0; i < b.Length; i++) w.Span[i] = (float)b[i];
            }
            else
            {
                w.Dispose();
                throw new NotSupportedException($"Mixed precision takes Half or BFloat16, not {typeof(TLow).Name}.");
            }
            return w;
        }

        public static void To<TLow>(ReadOnlySpan<float> values, Span<TLow> into) where TLow : unmanaged
        {
            if (typeof(TLow) == typeof(Half))
                TensorPrimitives.ConvertToHalf(values, System.Runtime.InteropServices.MemoryMarshal.Cast<TLow, Half>(into));
            else
            {
                var b = System.Runtime.InteropServices.MemoryMarshal.Cast<TLow, BFloat16>(into);
                for (int i = 0; i < values.Length; i++) b[i] = (BFloat16)values[i];
            }
        }

        public void Dispose() => ArrayPool<float>.Shared.Return(_array);
    }
}
