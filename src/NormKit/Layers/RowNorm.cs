using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Kernels;

namespace NormKit.Layers;

/// <summary>
/// What LayerNorm and RMSNorm share: normalization of each row of the trailing dims
/// <see cref="NormalizedShape"/>, an element-wise weight (and for LayerNorm a bias), the
/// same computation in training and eval, and a fused residual-add variant with backward.
/// </summary>
public abstract class RowNorm<T> : NormLayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>The trailing dims normalized together.</summary>
    public IReadOnlyList<int> NormalizedShape => _normalizedShape;
    /// <summary>Added inside the square root.</summary>
    public double Eps { get; }
    /// <summary>Whether the layer has a per-element weight (and a bias where the norm has one).</summary>
    public bool ElementwiseAffine { get; }
    /// <summary>Per-element scale, shape NormalizedShape; null unless ElementwiseAffine.</summary>
    public Tensor<T>? Weight { get; }
    /// <summary>Accumulated gradient of <see cref="Weight"/>.</summary>
    public Tensor<T>? WeightGrad { get; }
    /// <summary>Per-element shift; null for RMSNorm and when absent.</summary>
    public Tensor<T>? Bias { get; }
    /// <summary>Accumulated gradient of <see cref="Bias"/>.</summary>
    public Tensor<T>? BiasGrad { get; }

    private readonly bool _centered;
    private readonly int[] _normalizedShape;
    private readonly int _features;   // elements of one row: the product of NormalizedShape
    private readonly T[]? _weight, _bias, _dWeight, _dBias;   // the live storage of Tensors
    private double[] _mean = [], _rstd = [];   // per row of the last forward; grown, never shrunk
    private int _rows;

    private protected RowNorm(int[] normalizedShape, double eps, bool elementwiseAffine, bool bias, bool centered)
    {
        ArgumentNullException.ThrowIfNull(normalizedShape);
        int features = Functional.RowsOf(normalizedShape, normalizedShape).Cols;
        Guard.Eps(eps, nameof(eps));
        _normalizedShape = (int[])normalizedShape.Clone();
        _features = features;
        _centered = centered;
        Eps = eps; ElementwiseAffine = elementwiseAffine;
        if (elementwiseAffine)
        {
            var w = Add("weight", _normalizedShape, isParameter: true);
            (Weight, WeightGrad, _weight, _dWeight) = (w.Value, w.Grad, w.Data, w.GradData);
            if (bias)
            {
                var b = Add("bias", _normalizedShape, isParameter: true);
                (Bias, BiasGrad, _bias, _dBias) = (b.Value, b.Grad, b.Data, b.GradData);
            }
        }
        ResetParameters();
    }

    /// <summary>Weight 1, bias 0.</summary>
    public override void ResetParameters()
    {
        _weight?.AsSpan().Fill(T.One);
        _bias?.AsSpan().Clear();
    }

    private protected override void CheckInput(ReadOnlySpan<int> shape, string argument) => Functional.RowsOf(shape, _normalizedShape);

    private protected override bool ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output)
    {
        ForwardCore(input, default, shape, output, default);
        return false;
    }

    /// <summary>
    /// Fused residual add: sum = input + residual, output = norm(sum), in one pass over memory.
    /// The backward of this call is <see cref="BackwardResidual"/>, given sum.
    /// </summary>
    public void ForwardResidual(ReadOnlySpan<T> input, ReadOnlySpan<T> residual, ReadOnlySpan<int> shape, Span<T> sum, Span<T> output)
    {
        CheckInput(shape, nameof(input));
        CheckBuffers(input, nameof(input), output, nameof(output), shape);
        CheckBuffers(residual, nameof(residual), output, nameof(output), shape);
        CheckBuffers(input, nameof(input), sum, nameof(sum), shape);
        Guard.NoOverlap(residual, nameof(residual), sum, nameof(sum));
        Guard.NoOverlap<T>(output, nameof(output), sum, nameof(sum));
        ForwardCore(input, residual, shape, output, sum);
        RecordForward(shape, null, usedBatchStats: false);
    }

    /// <summary>
    /// Backward of <see cref="ForwardResidual"/>: writes gradInput = d(loss)/d(sum), the gradient of
    /// both input and residual, from <paramref name="gradOutput"/> and <paramref name="gradSum"/>
    /// (the gradient reaching sum from elsewhere, or empty); accumulates the parameter gradients.
    /// </summary>
    public void BackwardResidual(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> gradSum, ReadOnlySpan<T> sum, ReadOnlySpan<int> shape, Span<T> gradInput)
    {
        CheckBackward(shape, nameof(shape));
        CheckBuffers(gradOutput, nameof(gradOutput), gradInput, nameof(gradInput), shape);
        CheckBuffers(sum, nameof(sum), gradInput, nameof(gradInput), shape);
        if (!gradSum.IsEmpty) CheckBuffers(gradSum, nameof(gradSum), gradInput, nameof(gradInput), shape);
        BackwardCore(gradOutput, gradSum, sum, shape, gradInput);
    }

    // Every argument was checked at the public edge: straight to the row kernel. The saved
    // statistics are replaced only here, after every check, so a throwing call leaves those of
    // the previous forward intact.
    private void ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<T> residual, ReadOnlySpan<int> shape, Span<T> output, Span<T> sum)
    {
        int rows = input.Length / _features;
        double[] mean = _mean.Length >= rows ? _mean : new double[rows];
        double[] rstd = _rstd.Length >= rows ? _rstd : new double[rows];
        RowKernel.Forward(input, residual, _weight, _bias, new RowLayout(rows, _features), Eps, _centered, output, sum,
            _centered ? mean.AsSpan(0, rows) : default, rstd.AsSpan(0, rows));
        _mean = mean; _rstd = rstd; _rows = rows;
    }

    private protected override void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput) =>
        BackwardCore(gradOutput, default, input, shape, gradInput);

    private void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> gradSum, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput) =>
        RowKernel.Backward(gradOutput, input, _centered ? _mean.AsSpan(0, _rows) : default, _rstd.AsSpan(0, _rows), _weight, new RowLayout(_rows, _features),
            _centered, gradSum, gradInput, _dWeight, _dBias);
}

/// <summary>
/// Layer normalization with PyTorch's semantics and defaults (torch.nn.LayerNorm): each
/// sample is normalized over its trailing dims with the biased variance; the same computation
/// in training and eval.
/// </summary>
public sealed class LayerNorm<T> : RowNorm<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>LayerNorm over the last dimension of size <paramref name="normalizedShape"/>.</summary>
    public LayerNorm(int normalizedShape, double eps = 1e-5, bool elementwiseAffine = true, bool bias = true)
        : this([normalizedShape], eps, elementwiseAffine, bias) { }

    /// <summary>LayerNorm over the trailing dims <paramref name="normalizedShape"/>.</summary>
    public LayerNorm(int[] normalizedShape, double eps = 1e-5, bool elementwiseAffine = true, bool bias = true)
        : base(normalizedShape, eps, elementwiseAffine, elementwiseAffine && bias, centered: true) => HasBias = elementwiseAffine && bias;

    /// <summary>Whether the layer has a bias (PyTorch's bias argument); only with ElementwiseAffine.</summary>
    public bool HasBias { get; }
}

/// <summary>
/// Root-mean-square normalization (torch.nn.RMSNorm): y = x / sqrt(mean(x^2) + eps) * weight,
/// no mean and no bias. Eps null means the machine epsilon of T (float 1.19e-7, double 2.22e-16).
/// </summary>
public sealed class RMSNorm<T> : RowNorm<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>RMSNorm over the last dimension of size <paramref name="normalizedShape"/>.</summary>
    public RMSNorm(int normalizedShape, double? eps = null, bool elementwiseAffine = true)
        : this([normalizedShape], eps, elementwiseAffine) { }

    /// <summary>RMSNorm over the trailing dims <paramref name="normalizedShape"/>.</summary>
    public RMSNorm(int[] normalizedShape, double? eps = null, bool elementwiseAffine = true)
        : base(normalizedShape, eps ?? Functional.MachineEpsilon<T>(), elementwiseAffine, bias: false, centered: false) { }
}
