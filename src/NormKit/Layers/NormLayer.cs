using System.Numerics;
using System.Numerics.Tensors;

namespace NormKit.Layers;

/// <summary>
/// What every normalization layer shares: the train/eval mode, parameter gradients that
/// accumulate until <see cref="ZeroGrad"/>, and the record of the last forward that
/// <c>Backward</c> must match.
/// </summary>
public abstract class NormLayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>True in training mode (the default), false after <see cref="Eval"/>.</summary>
    public bool Training { get; private set; } = true;

    /// <summary>Sets training mode (or eval with false). Returns this layer.</summary>
    public NormLayer<T> Train(bool mode = true) { Training = mode; return this; }

    /// <summary>Sets eval mode. Returns this layer.</summary>
    public NormLayer<T> Eval() => Train(false);

    /// <summary>Sets every parameter gradient to zero.</summary>
    public abstract void ZeroGrad();

    /// <summary>
    /// The layer's state under PyTorch's state_dict names (weight, bias, running_mean,
    /// running_var), in PyTorch's order, as the live arrays. num_batches_tracked is separate
    /// (<see cref="BatchesTracked"/>).
    /// </summary>
    internal virtual IEnumerable<(string Name, int[] Shape, T[] Data)> StateTensors() => [];

    /// <summary>num_batches_tracked for layers that keep it, else null.</summary>
    internal virtual long? BatchesTracked { get => null; set { } }

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
        CheckForwardRan();
        return ForwardInput ?? throw new InvalidOperationException(
            "The last Forward used the span overload; call the span overload of Backward and pass the input again.");
    }

    private void CheckForwardRan()
    {
        if (_forwardShape is null)
            throw new InvalidOperationException("Backward was called without a matching Forward: call Forward first.");
    }

    private protected static Tensor<T> Vector(T[] values, ReadOnlySpan<int> shape)
    {
        var lengths = new nint[shape.Length];
        for (int i = 0; i < shape.Length; i++) lengths[i] = shape[i];
        return Tensor.Create(values, lengths);
    }
}
