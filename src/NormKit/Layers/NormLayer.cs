using System.Numerics;
using System.Numerics.Tensors;

namespace NormKit.Layers;

/// <summary>
/// One parameter or buffer of a layer under its PyTorch state_dict name ("weight", "bias",
/// "running_mean", "running_var"): its value, its accumulated gradient (parameters only) and
/// its shape. The tensors are the layer's live storage.
/// </summary>
public sealed class LayerTensor<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    internal LayerTensor(string name, int[] shape, bool isParameter)
    {
        Name = name;
        Shape = shape;
        int n = 1;
        foreach (int d in shape) n *= d;
        Data = new T[n];
        Value = Tensor.Create(Data, Lengths(shape));
        if (isParameter)
        {
            GradData = new T[n];
            Grad = Tensor.Create(GradData, Lengths(shape));
        }
    }

    /// <summary>The PyTorch state_dict name, without a module prefix.</summary>
    public string Name { get; }
    /// <summary>The value.</summary>
    public Tensor<T> Value { get; }
    /// <summary>The gradient that Backward accumulates (+=) until ZeroGrad; null for a buffer.</summary>
    public Tensor<T>? Grad { get; }
    /// <summary>True for a trainable parameter (PyTorch's parameters()), false for a buffer (running statistics).</summary>
    public bool IsParameter => Grad is not null;

    internal int[] Shape { get; }
    internal T[] Data { get; }
    internal T[]? GradData { get; }

    private static nint[] Lengths(int[] shape) => Array.ConvertAll(shape, d => (nint)d);
}

/// <summary>
/// What every normalization layer shares: the train/eval mode; the tensor and span
/// Forward/Backward, which validate at this public edge and then call the layer's core; its
/// parameters and buffers under PyTorch's names (<see cref="Tensors"/>, which state files,
/// optimizers and tests walk); parameter gradients that accumulate until
/// <see cref="ZeroGrad"/>; and the record of the last forward that Backward must match.
/// </summary>
public abstract class NormLayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly List<LayerTensor<T>> _tensors = [];

    /// <summary>Checks the element type: float or double.</summary>
    private protected NormLayer() => Kernels.Num.EnsureSupported<T>();

    /// <summary>True in training mode (the default), false after <see cref="Eval"/>.</summary>
    public bool Training { get; private set; } = true;

    /// <summary>Sets training mode (or eval with false). Returns this layer.</summary>
    public NormLayer<T> Train(bool mode = true) { Training = mode; return this; }

    /// <summary>Sets eval mode. Returns this layer.</summary>
    public NormLayer<T> Eval() => Train(false);

    /// <summary>
    /// The parameters, then the buffers, in PyTorch's state_dict order and under its names.
    /// num_batches_tracked, an integer, is the tracked layers' NumBatchesTracked.
    /// </summary>
    public IReadOnlyList<LayerTensor<T>> Tensors => _tensors;

    /// <summary>Sets every parameter gradient to zero.</summary>
    public void ZeroGrad()
    {
        foreach (var t in _tensors) t.GradData?.AsSpan().Clear();
    }

    /// <summary>Restores the initial state: weight 1, bias 0, and where there are any, the running statistics.</summary>
    public abstract void ResetParameters();

    /// <summary>Normalizes a tensor; returns a new tensor of the same shape.</summary>
    public Tensor<T> Forward(Tensor<T> input)
    {
        int[] shape = Guard.ShapeOf(input, nameof(input));
        CheckInput(shape, nameof(input));
        var output = Guard.NewLike(input);
        bool batchStats = ForwardCore(Guard.Span(input), shape, Guard.Span(output));
        RecordForward(shape, input, batchStats);
        return output;
    }

    /// <summary>Normalizes <paramref name="input"/> of shape <paramref name="shape"/> into <paramref name="output"/>; allocates nothing in steady state.</summary>
    public void Forward(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output)
    {
        CheckInput(shape, nameof(input));
        CheckBuffers(input, nameof(input), output, nameof(output), shape);
        bool batchStats = ForwardCore(input, shape, output);
        RecordForward(shape, null, batchStats);
    }

    /// <summary>
    /// Backward of the last tensor <see cref="Forward(Tensor{T})"/>: returns the input gradient
    /// and accumulates the parameter gradients (<see cref="LayerTensor{T}.Grad"/>).
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

    /// <summary>
    /// Backward of the last forward, given its input again; writes <paramref name="gradInput"/>
    /// and accumulates the parameter gradients. Allocates nothing.
    /// </summary>
    public void Backward(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput)
    {
        CheckBackward(shape, nameof(shape));
        CheckBuffers(gradOutput, nameof(gradOutput), gradInput, nameof(gradInput), shape);
        CheckBuffers(input, nameof(input), gradInput, nameof(gradInput), shape);
        BackwardCore(gradOutput, input, shape, gradInput);
    }

    /// <summary>
    /// The checks of a span call, made once here at the public edge (the cores behind trust
    /// them): <paramref name="input"/> and <paramref name="output"/> each hold the elements of
    /// <paramref name="shape"/>, and the output is a separate buffer.
    /// </summary>
    private protected static void CheckBuffers(ReadOnlySpan<T> input, string inputName, Span<T> output, string outputName, ReadOnlySpan<int> shape)
    {
        long n = Guard.Product(shape, nameof(shape));
        Guard.Length(input, n, inputName, nameof(shape), shape);
        Guard.Length<T>(output, n, outputName, nameof(shape), shape);
        Guard.NoOverlap(input, inputName, output, outputName);
    }

    /// <summary>Throws unless this layer accepts an input of <paramref name="shape"/>.</summary>
    private protected abstract void CheckInput(ReadOnlySpan<int> shape, string argument);

    /// <summary>The forward after the shape check; returns whether it used batch statistics.</summary>
    private protected abstract bool ForwardCore(ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> output);

    /// <summary>The backward after the check that it matches the last forward.</summary>
    private protected abstract void BackwardCore(ReadOnlySpan<T> gradOutput, ReadOnlySpan<T> input, ReadOnlySpan<int> shape, Span<T> gradInput);

    /// <summary>Registers a parameter (with a gradient) or a buffer, in state_dict order.</summary>
    private protected LayerTensor<T> Add(string name, int[] shape, bool isParameter)
    {
        var t = new LayerTensor<T>(name, shape, isParameter);
        _tensors.Add(t);
        return t;
    }

    /// <summary>num_batches_tracked for layers that keep it, else null.</summary>
    internal virtual long? BatchesTracked { get => null; set { } }

    /// <summary>The state_dict key and int64 shape of <see cref="BatchesTracked"/>: PyTorch's scalar num_batches_tracked unless a layer's reference code names it otherwise.</summary>
    internal virtual (string Name, int[] Shape) BatchesTrackedKey => ("num_batches_tracked", []);

    // The last successful forward: its shape, the tensor it saw (tensor API only) and
    // whether it normalized with batch statistics.
    private int[]? _forwardShape;
    private protected Tensor<T>? ForwardInput;
    private protected bool ForwardUsedBatchStats;

    private protected void RecordForward(ReadOnlySpan<int> shape, Tensor<T>? input, bool usedBatchStats)
    {
        if (_forwardShape is null || _forwardShape.Length != shape.Length) _forwardShape = new int[shape.Length];
        shape.CopyTo(_forwardShape);
        ForwardInput = input;
        ForwardUsedBatchStats = usedBatchStats;
    }

    /// <summary>Throws unless a forward ran and <paramref name="shape"/> is its input's shape.</summary>
    private protected void CheckBackward(ReadOnlySpan<int> shape, string argument)
    {
        if (_forwardShape is null)
            throw new InvalidOperationException("Backward was called without a matching Forward: call Forward first.");
        if (!shape.SequenceEqual(_forwardShape))
            throw new ArgumentException(
                $"{argument} has shape {Guard.Shape(shape)} but the last Forward saw an input of shape {Guard.Shape(_forwardShape)}.", argument);
    }

    private protected Tensor<T> RequireForwardInput()
    {
        if (_forwardShape is null)
            throw new InvalidOperationException("Backward was called without a matching Forward: call Forward first.");
        return ForwardInput ?? throw new InvalidOperationException(
            "The last Forward used the span overload; call the span overload of Backward and pass the input again.");
    }
}
