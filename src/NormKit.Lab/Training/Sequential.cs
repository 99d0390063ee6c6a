using System.Numerics;

namespace NormKit.Lab.Training;

/// <summary>Layers applied in order; backward in reverse.</summary>
public sealed class Sequential<T>(IEnumerable<ILayer<T>> layers) where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly ILayer<T>[] _layers = layers.ToArray();   // an array: the walk allocates no enumerator

    public IReadOnlyList<ILayer<T>> Layers => _layers;
    public IEnumerable<Param<T>> Parameters => _layers.SelectMany(l => l.Parameters);

    public T[] Forward(T[] x, int batch, bool training)
    {
        for (int i = 0; i < _layers.Length; i++) x = _layers[i].Forward(x, batch, training);
        return x;
    }

    public void Backward(T[] dy)
    {
        for (int i = _layers.Length - 1; i >= 0; i--) dy = _layers[i].Backward(dy);
    }
}
