using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Kernels;

namespace NormKit.Layers;

/// <summary>
/// Dynamic Tanh (Zhu, Chen, He, LeCun and Liu 2025, "Transformers without Normalization"):
/// y = weight * tanh(alpha * x) + bias over the trailing dims <see cref="NormalizedShape"/>, a
/// drop-in for <see cref="LayerNorm{T}"/> that computes no statistics. alpha is one learned
/// scalar; weight and bias are per element as LayerNorm's. The parameters are in the official
/// code's order (alpha, weight, bias), so its state_dict loads as is.
/// </summary>
public sealed class DynamicTanh<T> : NormLayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>The trailing dims the parameters cover, as LayerNorm's normalized_shape.</summary>
    public IReadOnlyList<int> NormalizedShape => _normalizedShape;
    /// <summary>The initial alpha, restored by <see cref="ResetParameters"/> (the paper's alpha_0; default 0.5).</summary>
    public double AlphaInit { get; }
    /// <summary>Whether the layer has a bias (the official LLaMA variant has none).</summary>
    public bool HasBias { get; }
    /// <summary>The learned scalar alpha, shape [1], state_dict "alpha".</summary>
    public Tensor<T> Alpha { get; }
    /// <summary>Accumulated gradient of <see cref="Alpha"/>.</summary>
    public Tensor<T> AlphaGrad { get; }
    /// <summary>Per-element scale, shape NormalizedShape, state_dict "weight".</summary>
    public Tensor<T> Weight { get; }
    /// <summary>Accumulated gradient of <see cref="Weight"/>.</summary>
    public Tensor<T> WeightGrad { get; }
    /// <summary>Per-element shift, state_dict "bias"; null without a bias.</summary>
    public Tensor<T>? Bias { get; }
    /// <summary>Accumulated gradient of <see cref="Bias"/>.</summary>
    public Tensor<T>? BiasGrad { get; }

    private readonly int[] _normalizedShape;
    private readonly int _features;
    private readonly T[] _alpha, _dAlpha, _weight, _dWeight;
    private readonly T[]? _bias, _dBias;

    /// <summary>DyT over the last dimension of size <paramref name="normalizedShape"/>.</summary>
    public DynamicTanh(int normalizedShape, double alphaInit = 0.5, bool bias = true) : this([normalizedShape], alphaInit, bias) { }

    /// <summary>DyT over the trailing dims <paramref name="normalizedShape"/>.</summary>
    public DynamicTanh(int[] normalizedShape, double alphaInit = 0.5, bool bias = true)
    {
        ArgumentNullException.ThrowIfNull(normalizedShape);
        _features = Functional.RowsOf(normalizedShape, normalizedShape).Cols;
        Guard.Finite(alphaInit, nameof(alphaInit));
        _normalizedShape = (int[])normalizedShape.Clone();
        AlphaInit = alphaInit; HasBias = bias;
        var a = Add("alpha", [1], isParameter: true);
        (Alpha, AlphaGrad, _alpha, _dAlpha) = (a.Value, a.Grad!, a.Data, a.GradData!);
        var w = Add("weight", _normalizedShape, isParameter: true);
        (Weight, WeightGrad, _weight, _dWeight) = (w.Value, w.Grad!, w.Data, w.GradData!);
        if (bias)
        {
            var b = Add("bias", _normalizedShape, isParameter: true);
            (Bias, BiasGrad, _bias, _dBias) = (b.Value, b.Grad, b.Data, b.GradData);
        }
        ResetParameters();
    }

    /// <summary>alpha to <see cref="AlphaInit"/>, weight 1, bias 0.</summary>
    public override void ResetParameters()
    {
        _alpha[0] = Num.From<T>(AlphaInit);
        _weight.AsSpan().Fill(T.One);
        _bias?.AsSpan().Clear();
    }

    private protected override void CheckInput(ReadOnlySpan<int> shape, string argument) => Functional.RowsOf(shape, _normalizedShape);

    private protected override bool ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output)
    {
        TanhKernel.Forward<T>(input, _alpha[0], _weight, _bias, new RowLayout(input.Length / _features, _features), output);
        return false;
    }

    private protected override void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput) =>
        TanhKernel.Backward<T>(gradOutput, input, _alpha[0], _weight, new RowLayout(input.Length / _features, _features), gradInput, _dAlpha, _dWeight, _dBias);
}
