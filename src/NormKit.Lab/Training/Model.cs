using System.Numerics;
using System.Numerics.Tensors;

namespace NormKit.Lab.Training;

/// <summary>Layers applied in order; backward in reverse.</summary>
public sealed class Sequential<T>(IEnumerable<ILayer<T>> layers) where T : unmanaged, IFloatingPointIeee754<T>
{
    public IReadOnlyList<ILayer<T>> Layers { get; } = layers.ToList();
    public IEnumerable<Param<T>> Parameters => Layers.SelectMany(l => l.Parameters);

    public T[] Forward(T[] x, int batch, bool training)
    {
        foreach (var l in Layers) x = l.Forward(x, batch, training);
        return x;
    }

    public void Backward(T[] dy)
    {
        for (int i = Layers.Count - 1; i >= 0; i--) dy = Layers[i].Backward(dy);
    }
}

/// <summary>Softmax cross-entropy over k classes, averaged over the batch.</summary>
public static class CrossEntropy
{
    /// <summary>Returns the mean loss and writes d(loss)/d(logits) into <paramref name="grad"/>.</summary>
    public static double LossAndGradient<T>(ReadOnlySpan<T> logits, ReadOnlySpan<byte> labels, int batch, int classes, Span<T> grad)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        double loss = 0;
        T invBatch = T.One / T.CreateTruncating(batch);
        for (int n = 0; n < batch; n++)
        {
            var z = logits.Slice(n * classes, classes);
            var g = grad.Slice(n * classes, classes);
            T max = TensorPrimitives.Max(z);
            double sum = 0;
            for (int k = 0; k < classes; k++) sum += Math.Exp(double.CreateTruncating(z[k] - max));
            double logSum = Math.Log(sum) + double.CreateTruncating(max);
            loss += logSum - double.CreateTruncating(z[labels[n]]);
            for (int k = 0; k < classes; k++)
            {
                double p = Math.Exp(double.CreateTruncating(z[k]) - logSum);
                g[k] = T.CreateTruncating(p - (k == labels[n] ? 1 : 0)) * invBatch;
            }
        }
        return loss / batch;
    }

    /// <summary>The fraction of rows whose largest logit is the label.</summary>
    public static double Accuracy<T>(ReadOnlySpan<T> logits, ReadOnlySpan<byte> labels, int batch, int classes) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int right = 0;
        for (int n = 0; n < batch; n++)
            if (TensorPrimitives.IndexOfMax(logits.Slice(n * classes, classes)) == labels[n]) right++;
        return (double)right / batch;
    }
}

/// <summary>An optimizer step over parameters; clears the gradients it used.</summary>
public interface IOptimizer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    void Step(IEnumerable<Param<T>> parameters);
}

/// <summary>SGD with momentum (PyTorch's form: v = mu v + g; p -= lr v).</summary>
public sealed class Sgd<T>(double lr, double momentum = 0) : IOptimizer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly Dictionary<Param<T>, T[]> _velocity = new();

    public void Step(IEnumerable<Param<T>> parameters)
    {
        T mu = T.CreateTruncating(momentum), rate = T.CreateTruncating(lr);
        foreach (var p in parameters)
        {
            Span<T> v = _velocity.TryGetValue(p, out var a) ? a : _velocity[p] = new T[p.Value.Length];
            Span<T> value = p.Value, grad = p.Grad;
            for (int i = 0; i < value.Length; i++)
            {
                v[i] = mu * v[i] + grad[i];
                value[i] -= rate * v[i];
            }
            grad.Clear();
        }
    }
}

/// <summary>AdamW (decoupled weight decay), PyTorch's defaults betas (0.9, 0.999), eps 1e-8.</summary>
public sealed class AdamW<T>(double lr, double weightDecay = 0.01, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    : IOptimizer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly Dictionary<Param<T>, (T[] M, T[] V)> _moments = new();
    private int _t;

    public void Step(IEnumerable<Param<T>> parameters)
    {
        _t++;
        double c1 = 1 - Math.Pow(beta1, _t), c2 = 1 - Math.Pow(beta2, _t);
        foreach (var p in parameters)
        {
            if (!_moments.TryGetValue(p, out var mv)) _moments[p] = mv = (new T[p.Value.Length], new T[p.Value.Length]);
            Span<T> value = p.Value, grad = p.Grad;
            for (int i = 0; i < value.Length; i++)
            {
                double g = double.CreateTruncating(grad[i]);
                double m = beta1 * double.CreateTruncating(mv.M[i]) + (1 - beta1) * g;
                double v = beta2 * double.CreateTruncating(mv.V[i]) + (1 - beta2) * g * g;
                mv.M[i] = T.CreateTruncating(m); mv.V[i] = T.CreateTruncating(v);
                double w = double.CreateTruncating(value[i]) * (1 - lr * weightDecay);
                value[i] = T.CreateTruncating(w - lr * (m / c1) / (Math.Sqrt(v / c2) + eps));
            }
            grad.Clear();
        }
    }
}
