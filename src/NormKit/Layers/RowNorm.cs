using System.Numerics;
using System.Numerics.Tensors;

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
    private readonly T[]? _weight, _bias, _dWeight, _dBias;   // the live storage of Tensors
    private double[] _mean = [], _rstd = [];   // per row of the last forward; grown, never shrunk
    private int _rows;

    private protected RowNorm(int[] normalizedShape, double eps, bool elementwiseAffine, bool bias, bool centered)
    {
        ArgumentNullException.ThrowIfNull(normalizedShape);
        int features = Functional.RowsOf(normalizedShape, normalizedShape).Cols;
        Guard.Eps(eps, nameof(eps));
        _normalizedShape = (int[])normalizedShape.Clone();
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
        ForwardCore(input, residual, shape, output, sum, fused: true);
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
        BackwardCore(gradOutput, gradSum, sum, shape, gradInput);
    }

    private void ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<T> residual, ReadOnlySpan<int> shape, Span<T> output, Span<T> sum, bool fused = false)
    {
        int rows = Functional.RowsOf(shape, _normalizedShape).Rows;
        // Functional validates everything before it writes, so a throwing call leaves the
        // saved statistics of the previous forward intact.
        double[] mean = _mean.Length >= rows ? _mean : new double[rows];
        double[] rstd = _rstd.Length >= rows ? _rstd : new double[rows];
        var m = mean.AsSpan(0, rows);
        var r = rstd.AsSpan(0, rows);
        if (_centered && fused) Functional.AddLayerNorm<T>(input, residual, shape, _normalizedShape, sum, output, _weight, _bias, Eps, m, r);
        else if (_centered) Functional.LayerNorm<T>(input, shape, _normalizedShape, output, _weight, _bias, Eps, m, r);
        else if (fused) Functional.AddRmsNorm<T>(input, residual, shape, _normalizedShape, sum, output, _weight, Eps, r);
        else Functional.RmsNorm<T>(input, shape, _normalizedShape, output, _weight, Eps, r);
        _mean = mean; _rstd = rstd; _rows = rows;
    }

    private protected override void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput) =>
        BackwardCore(gradOutput, default, input, shape, gradInput);

    private void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> gradSum, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput)
    {
        if (_centered)
            Functional.AddLayerNormBackward<T>(gradOutput, gradSum, input, shape, _normalizedShape, _mean.AsSpan(0, _rows), _rstd.AsSpan(0, _rows),
                _weight, gradInput, _dWeight, _dBias);
        else
            Functional.AddRmsNormBackward<T>(gradOutput, gradSum, input, shape, _normalizedShape, _rstd.AsSpan(0, _rows), _weight, gradInput, _dWeight);
    }
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
