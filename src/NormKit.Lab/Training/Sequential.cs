using System.Numerics;

namespace NormKit.Lab.Training;

/// <summary>Layers applied in order; backward in reverse.</summary>
public sealed class Sequential<T>(IEnumerable<ILayer<T>> layers) where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly ILayer<T>[] _layers = layers.ToArray();   // an array: the walk allocates no enumerator

    public IReadOnlyList<ILayer<T>> Layers => _layers;
    public IEnumerable<Param<T>> Parameters => _layers.SelectMany(l => l.Parameters);

    public T[] Forward(T[] x, int batch, bool training) => Forward(x, batch, training, null);

    /// <summary>
    /// Forward that hands <paramref name="afterLayer"/> each layer's index and output as it is made
    /// (the layer's own buffer: valid until that layer runs again), for per-layer statistics.
    /// </summary>
    public T[] Forward(T[] x, int batch, bool training, Action<int, T[]>? afterLayer)
    {
        for (int i = 0; i < _layers.Length; i++)
        {
            x = _layers[i].Forward(x, batch, training);
            afterLayer?.Invoke(i, x);
        }
        return x;
    }

    public void Backward(T[] dy) => Backward(dy, null);

    /// <summary>
    /// Backward that hands <paramref name="afterLayer"/> each layer's index and the gradient with
    /// respect to that layer's input (the layer's own buffer), last layer first: the per-layer
    /// gradients a diagnosis measures, without a second copy of the walk.
    /// </summary>
    public void Backward(T[] dy, Action<int, T[]>? afterLayer)
    {
        for (int i = _layers.Length - 1; i >= 0; i--)
        {
            dy = _layers[i].Backward(dy);
            afterLayer?.Invoke(i, dy);
        }
    }
}
