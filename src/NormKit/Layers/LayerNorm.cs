using System.Numerics;
using System.Numerics.Tensors;

namespace NormKit.Layers;

/// <summary>
/// Layer normalization with PyTorch's semantics and defaults (torch.nn.LayerNorm): each
/// sample is normalized over its trailing dims <see cref="NormalizedShape"/> with the biased
/// variance; the same computation in training and eval.
/// </summary>
public sealed class LayerNorm<T> : NormLayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>The trailing dims normalized together.</summary>
    public IReadOnlyList<int> NormalizedShape => _normalizedShape;
    /// <summary>Added to the variance inside the square root. Default 1e-5.</summary>
    public double Eps { get; }
    /// <summary>Whether the layer has a weight (and, with <see cref="HasBias"/>, a bias) of shape NormalizedShape.</summary>
    public bool ElementwiseAffine { get; }
    /// <summary>Whether the layer has a bias (PyTorch's bias argument); only with ElementwiseAffine.</summary>
    public bool HasBias { get; }

    /// <summary>Per-element scale, shape NormalizedShape; null unless ElementwiseAffine.</summary>
    public Tensor<T>? Weight { get; }
    /// <summary>Per-element shift, shape NormalizedShape; null unless ElementwiseAffine and HasBias.</summary>
    public Tensor<T>? Bias { get; }
    /// <summary>Accumulated gradient of <see cref="Weight"/>.</summary>
    public Tensor<T>? WeightGrad { get; }
    /// <summary>Accumulated gradient of <see cref="Bias"/>.</summary>
    public Tensor<T>? BiasGrad { get; }

    private readonly int[] _normalizedShape;
    private readonly T[]? _weight, _bias, _dWeight, _dBias;
    private double[] _mean = [], _rstd = [];   // per row of the last forward; grown, never shrunk
    private int _rows;

    /// <summary>LayerNorm over the last dimension of size <paramref name="normalizedShape"/>.</summary>
    public LayerNorm(int normalizedShape, double eps = 1e-5, bool elementwiseAffine = true, bool bias = true)
        : this([normalizedShape], eps, elementwiseAffine, bias) { }

    /// <summary>LayerNorm over the trailing dims <paramref name="normalizedShape"/>.</summary>
    public LayerNorm(int[] normalizedShape, double eps = 1e-5, bool elementwiseAffine = true, bool bias = true)
    {
        ArgumentNullException.ThrowIfNull(normalizedShape);
        int features = Functional.LayerNormRows(normalizedShape, normalizedShape).Cols;
        Guard.Eps(eps, nameof(eps));
        _normalizedShape = (int[])normalizedShape.Clone();
        Eps = eps; ElementwiseAffine = elementwiseAffine; HasBias = elementwiseAffine && bias;
        if (elementwiseAffine)
        {
            Weight = Vector(_weight = new T[features], _normalizedShape);
            WeightGrad = Vector(_dWeight = new T[features], _normalizedShape);
            if (HasBias)
            {
                Bias = Vector(_bias = new T[features], _normalizedShape);
                BiasGrad = Vector(_dBias = new T[features], _normalizedShape);
            }
        }
        ResetParameters();
    }

    /// <summary>Weight 1, bias 0.</summary>
    public void ResetParameters()
    {
        _weight?.AsSpan().Fill(T.One);
        _bias?.AsSpan().Clear();
    }

    /// <inheritdoc/>
    public override void ZeroGrad()
    {
        _dWeight?.AsSpan().Clear();
        _dBias?.AsSpan().Clear();
    }

    /// <summary>Normalizes a tensor; returns a new tensor of the same shape.</summary>
    public Tensor<T> Forward(Tensor<T> input)
    {
        int[] shape = Guard.ShapeOf(input, nameof(input));
        var output = Guard.NewLike(input);
        ForwardCore(Guard.Span(input), shape, Guard.Span(output), input);
        return output;
    }

    /// <summary>Normalizes <paramref name="input"/> of shape <paramref name="shape"/> into <paramref name="output"/>; allocates nothing in steady state.</summary>
    public void Forward(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output) => ForwardCore(input, shape, output, null);

    private void ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output, Tensor<T>? tensor)
    {
        int rows = Functional.LayerNormRows(shape, _normalizedShape).Rows;
        // Functional validates everything before it writes, so a throwing call leaves the
        // saved statistics of the previous forward intact.
        double[] mean = _mean.Length >= rows ? _mean : new double[rows];
        double[] rstd = _rstd.Length >= rows ? _rstd : new double[rows];
        Functional.LayerNorm<T>(input, shape, _normalizedShape, output, _weight, _bias, Eps, mean.AsSpan(0, rows), rstd.AsSpan(0, rows));
        _mean = mean; _rstd = rstd; _rows = rows;
        RecordForward(shape, tensor, usedBatchStats: false);
    }

    /// <summary>
    /// Backward of the last tensor <see cref="Forward(Tensor{T})"/>: returns the input gradient
    /// and accumulates into <see cref="WeightGrad"/> and <see cref="BiasGrad"/>.
    /// </summary>
    public Tensor<T> Backward(Tensor<T> gradOutput)
    {
        int[] shape = Guard.ShapeOf(gradOutput, nameof(gradOutput));
        var input = RequireForwardInput();
        CheckBackward(shape, nameof(gradOutput));
        var gradInput = Guard.NewLike(gradOutput);
        BackwardCore(Guard.Span(gradOutput), Guard.Span(input), shape, Guard.Span(gradInput));
        return gradInput;
    }

    /// <summary>Backward of the last forward, given its input again. Allocates nothing.</summary>
    public void Backward(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput)
    {
        CheckBackward(shape, nameof(shape));
        BackwardCore(gradOutput, input, shape, gradInput);
    }

    private void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput) =>
        Functional.LayerNormBackward<T>(gradOutput, input, shape, _normalizedShape, _mean.AsSpan(0, _rows), _rstd.AsSpan(0, _rows),
            _weight, gradInput, _dWeight, _dBias);
}
