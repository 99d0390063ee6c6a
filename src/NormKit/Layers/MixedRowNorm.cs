using System.Numerics.Tensors;
using NormKit.Kernels;

namespace NormKit.Layers;

/// <summary>
/// LayerNorm and RMSNorm for <see cref="Half"/> or <see cref="BFloat16"/> activations with
/// float32 parameters and parameter gradients, PyTorch's autocast convention (its modules keep
/// their parameters in float while the activations are 16-bit). The rows are read and written
/// in 16 bits; the statistics are kept in double and the row math is the float kernel's, so
/// the output is the float layer's on the widened input, rounded once to TLow.
/// </summary>
/// <remarks>
/// Named after <see cref="Mixed"/>, the library's functional entry points for the same
/// convention. Not a <see cref="NormLayer{T}"/>: that class ties the activations and the
/// parameters to one element type T (float or double), while here they differ. The surface
/// is the float layers' (span and tensor Forward/Backward, Weight/Bias and their gradients,
/// <see cref="Tensors"/> under PyTorch's names, <see cref="ZeroGrad"/>); every check runs
/// before any state changes, so a call that throws changes nothing.
/// </remarks>
public abstract class MixedRowNorm<TLow> where TLow : unmanaged
{
    private readonly List<LayerTensor<float>> _tensors = [];
    private readonly bool _centered;
    private readonly int[] _normalizedShape;
    private readonly int _features;
    private readonly float[]? _weight, _bias, _dWeight, _dBias;
    private double[] _mean = [], _rstd = [];   // per row of the last forward; grown, never shrunk
    private int _rows;
    private int[]? _forwardShape;
    private Tensor<TLow>? _forwardInput;

    private protected MixedRowNorm(int[] normalizedShape, double eps, bool elementwiseAffine, bool bias, bool centered)
    {
        LowPrecision.Of<TLow>();
        ArgumentNullException.ThrowIfNull(normalizedShape);
        int features = Functional.RowsOf(normalizedShape, normalizedShape).Cols;
        Guard.Eps(eps, nameof(eps));
        _normalizedShape = (int[])normalizedShape.Clone();
        _features = features;
        _centered = centered;
        Eps = eps; ElementwiseAffine = elementwiseAffine;
        if (elementwiseAffine)
        {
            var w = new LayerTensor<float>("weight", _normalizedShape, isParameter: true);
            _tensors.Add(w);
            (Weight, WeightGrad, _weight, _dWeight) = (w.Value, w.Grad, w.Data, w.GradData);
            if (bias)
            {
                var b = new LayerTensor<float>("bias", _normalizedShape, isParameter: true);
                _tensors.Add(b);
                (Bias, BiasGrad, _bias, _dBias) = (b.Value, b.Grad, b.Data, b.GradData);
            }
        }
        ResetParameters();
    }

    /// <summary>The trailing dims normalized together.</summary>
    public IReadOnlyList<int> NormalizedShape => _normalizedShape;
    /// <summary>Added inside the square root.</summary>
    public double Eps { get; }
    /// <summary>Whether the layer has a per-element weight (and a bias where the norm has one).</summary>
    public bool ElementwiseAffine { get; }
    /// <summary>Per-element scale (float32), shape NormalizedShape; null unless ElementwiseAffine.</summary>
    public Tensor<float>? Weight { get; }
    /// <summary>Accumulated gradient of <see cref="Weight"/> (float32).</summary>
    public Tensor<float>? WeightGrad { get; }
    /// <summary>Per-element shift (float32); null for RMSNorm and when absent.</summary>
    public Tensor<float>? Bias { get; }
    /// <summary>Accumulated gradient of <see cref="Bias"/> (float32).</summary>
    public Tensor<float>? BiasGrad { get; }
    /// <summary>The parameters in PyTorch's state_dict order and under its names.</summary>
    public IReadOnlyList<LayerTensor<float>> Tensors => _tensors;

    /// <summary>Sets every parameter gradient to zero.</summary>
    public void ZeroGrad()
    {
        _dWeight?.AsSpan().Clear();
        _dBias?.AsSpan().Clear();
    }

    /// <summary>Weight 1, bias 0.</summary>
    public void ResetParameters()
    {
        _weight?.AsSpan().Fill(1f);
        _bias?.AsSpan().Clear();
    }

    /// <summary>Normalizes a tensor; returns a new tensor of the same shape.</summary>
    public Tensor<TLow> Forward(Tensor<TLow> input)
    {
        int[] shape = Guard.ShapeOf(input, nameof(input));
        Functional.RowsOf(shape, _normalizedShape);
        var output = Guard.NewLike(input);
        ForwardCore(Guard.Span(input), shape, Guard.Span(output));
        _forwardInput = input;
        return output;
    }

    /// <summary>Normalizes <paramref name="input"/> of shape <paramref name="shape"/> into <paramref name="output"/>; allocates nothing in steady state.</summary>
    public void Forward(ReadOnlySpan<TLow> input, ReadOnlySpan<int> shape, Span<TLow> output)
    {
        Functional.RowsOf(shape, _normalizedShape);
        CheckBuffers(input, nameof(input), output, nameof(output), shape);
        ForwardCore(input, shape, output);
        _forwardInput = null;
    }

    /// <summary>
    /// Backward of the last tensor <see cref="Forward(Tensor{TLow})"/>: returns the input gradient
    /// (TLow) and accumulates the float parameter gradients.
    /// </summary>
    public Tensor<TLow> Backward(Tensor<TLow> gradOutput)
    {
        int[] shape = Guard.ShapeOf(gradOutput, nameof(gradOutput));
        CheckBackward(shape, nameof(gradOutput));
        var input = _forwardInput ?? throw new InvalidOperationException(
            "The last Forward used the span overload; call the span overload of Backward and pass the input again.");
        var gradInput = Guard.NewLike(gradOutput);
        BackwardCore(Guard.Span(gradOutput), Guard.Span(input), Guard.Span(gradInput));
        return gradInput;
    }

    /// <summary>
    /// Backward of the last forward, given its input again; writes <paramref name="gradInput"/>
    /// and accumulates the float parameter gradients. Allocates nothing.
    /// </summary>
    public void Backward(ReadOnlySpan<TLow> gradOutput, ReadOnlySpan<TLow> input, ReadOnlySpan<int> shape, Span<TLow> gradInput)
    {
        CheckBackward(shape, nameof(shape));
        CheckBuffers(gradOutput, nameof(gradOutput), gradInput, nameof(gradInput), shape);
        CheckBuffers(input, nameof(input), gradInput, nameof(gradInput), shape);
        BackwardCore(gradOutput, input, gradInput);
    }

    private static void CheckBuffers(ReadOnlySpan<TLow> input, string inputName, Span<TLow> output, string outputName, ReadOnlySpan<int> shape)
    {
        long n = Guard.Product(shape, nameof(shape));
        Guard.Length(input, n, inputName, nameof(shape), shape);
        Guard.Length<TLow>(output, n, outputName, nameof(shape), shape);
        Guard.NoOverlap(input, inputName, output, outputName);
    }

    private void CheckBackward(ReadOnlySpan<int> shape, string argument)
    {
        if (_forwardShape is null)
            throw new InvalidOperationException("Backward was called without a matching Forward: call Forward first.");
        if (!shape.SequenceEqual(_forwardShape))
            throw new ArgumentException(
                $"{argument} has shape {Guard.Shape(shape)} but the last Forward saw an input of shape {Guard.Shape(_forwardShape)}.", argument);
    }

    // Every argument was checked: straight to the row kernel. The saved statistics and shape are
    // replaced only here, after every check, so a throwing call leaves the previous forward's.
    private void ForwardCore(ReadOnlySpan<TLow> input, ReadOnlySpan<int> shape, Span<TLow> output)
    {
        int rows = input.Length / _features;
        double[] mean = _mean.Length >= rows ? _mean : new double[rows];
        double[] rstd = _rstd.Length >= rows ? _rstd : new double[rows];
        RowKernel.ForwardLow(input, _weight, _bias, new RowLayout(rows, _features), Eps, _centered, output,
            _centered ? mean.AsSpan(0, rows) : default, rstd.AsSpan(0, rows));
        _mean = mean; _rstd = rstd; _rows = rows;
        if (_forwardShape is null || _forwardShape.Length != shape.Length) _forwardShape = new int[shape.Length];
        shape.CopyTo(_forwardShape);
    }

    private void BackwardCore(ReadOnlySpan<TLow> gradOutput, ReadOnlySpan<TLow> input, Span<TLow> gradInput) =>
        RowKernel.BackwardLow(gradOutput, input, _centered ? _mean.AsSpan(0, _rows) : default, _rstd.AsSpan(0, _rows), _weight,
            new RowLayout(_rows, _features), _centered, gradInput, _dWeight, _dBias);
}

/// <summary>
/// <see cref="LayerNorm{T}"/> for Half or BFloat16 activations with float32 weight and bias
/// (torch.nn.LayerNorm under autocast): y = (x - mean) / sqrt(var + eps) * weight + bias per row,
/// statistics in double, y rounded once to TLow.
/// </summary>
public sealed class MixedLayerNorm<TLow> : MixedRowNorm<TLow> where TLow : unmanaged
{
    /// <summary>LayerNorm over the last dimension of size <paramref name="normalizedShape"/>.</summary>
    public MixedLayerNorm(int normalizedShape, double eps = 1e-5, bool elementwiseAffine = true, bool bias = true)
        : this([normalizedShape], eps, elementwiseAffine, bias) { }

    /// <summary>LayerNorm over the trailing dims <paramref name="normalizedShape"/>.</summary>
    public MixedLayerNorm(int[] normalizedShape, double eps = 1e-5, bool elementwiseAffine = true, bool bias = true)
        : base(normalizedShape, eps, elementwiseAffine, elementwiseAffine && bias, centered: true) => HasBias = elementwiseAffine && bias;

    /// <summary>Whether the layer has a bias (PyTorch's bias argument); only with ElementwiseAffine.</summary>
    public bool HasBias { get; }
}

/// <summary>
/// <see cref="RMSNorm{T}"/> for Half or BFloat16 activations with a float32 weight:
/// y = x / sqrt(mean(x^2) + eps) * weight per row. Eps null means float32's machine epsilon
/// (1.19e-7, the precision of the statistics), as <see cref="Mixed.RmsNorm{TLow}"/>.
/// </summary>
public sealed class MixedRMSNorm<TLow> : MixedRowNorm<TLow> where TLow : unmanaged
{
    /// <summary>RMSNorm over the last dimension of size <paramref name="normalizedShape"/>.</summary>
    public MixedRMSNorm(int normalizedShape, double? eps = null, bool elementwiseAffine = true)
        : this([normalizedShape], eps, elementwiseAffine) { }

    /// <summary>RMSNorm over the trailing dims <paramref name="normalizedShape"/>.</summary>
    public MixedRMSNorm(int[] normalizedShape, double? eps = null, bool elementwiseAffine = true)
        : base(normalizedShape, eps ?? Functional.MachineEpsilon<float>(), elementwiseAffine, bias: false, centered: false) { }
}
