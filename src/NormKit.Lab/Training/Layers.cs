using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using NormKit.Lab.Engine;
using NormKit.Layers;

namespace NormKit.Lab.Training;

/// <summary>
/// A trainable array and its gradient (which accumulates until the optimizer clears it):
/// either arrays of the lab's own layers, or the tensors of a NormKit layer (the same memory).
/// </summary>
public sealed class Param<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly T[]? _value, _grad;
    private readonly Tensor<T>? _valueTensor, _gradTensor;
    public string Name { get; }

    public Param(string name, T[] value) { Name = name; _value = value; _grad = new T[value.Length]; }
    public Param(string name, Tensor<T> value, Tensor<T> grad) { Name = name; _valueTensor = value; _gradTensor = grad; }

    public Span<T> Value => _value ?? Of(_valueTensor!);
    public Span<T> Grad => _grad ?? Of(_gradTensor!);
    private static Span<T> Of(Tensor<T> t) => MemoryMarshal.CreateSpan(ref t.GetPinnableReference(), (int)t.FlattenedLength);
}

/// <summary>
/// A layer of the lab's small training stack: activations are (batch x features) row-major
/// arrays; Forward keeps what Backward needs; Backward returns the input gradient and adds
/// to the parameter gradients.
/// </summary>
public interface ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    T[] Forward(T[] x, int batch, bool training);
    T[] Backward(T[] dy);
    IEnumerable<Param<T>> Parameters { get; }
}

/// <summary>
/// The arrays a layer returns and keeps: reused from call to call and reallocated only when the
/// size changes (a new batch size), so a training step in steady state allocates nothing. A
/// caller uses a layer's result before calling that layer again.
/// </summary>
public static class Buffer
{
    /// <summary><paramref name="array"/> if it has <paramref name="length"/> elements, else a new array stored there.</summary>
    public static T[] Sized<T>(ref T[] array, int length) => array.Length == length ? array : array = new T[length];
}

/// <summary>Weight initializations.</summary>
public enum Init { Glorot, Kaiming, SmallNormal }

/// <summary>Seeded random numbers: the same seed gives the same run.</summary>
public sealed class Rng(int seed)
{
    private readonly Random _r = new(seed);
    public double Uniform() => _r.NextDouble();
    public int Next(int max) => _r.Next(max);
    public double Normal()
    {
        double u1 = 1 - _r.NextDouble(), u2 = _r.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }
}

/// <summary>y = x W^T + b with W of shape [out, in]; the products run on <see cref="Gemm"/>.</summary>
public sealed class Linear<T> : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public Param<T> Weight { get; }
    public Param<T> Bias { get; }
    public int In { get; }
    public int Out { get; }
    private T[] _x = [], _y = [], _dx = [];
    private int _batch;

    /// <param name="init">Glorot: U(+-sqrt(6 / (in + out))); Kaiming: N(0, 2 / in); SmallNormal: N(0, std^2).</param>
    public Linear(int inFeatures, int outFeatures, Init init, Rng rng, double std = 0.01)
    {
        In = inFeatures; Out = outFeatures;
        var w = new T[inFeatures * outFeatures];
        double limit = Math.Sqrt(6.0 / (inFeatures + outFeatures)), kaiming = Math.Sqrt(2.0 / inFeatures);
        for (int i = 0; i < w.Length; i++)
            w[i] = T.CreateTruncating(init switch
            {
                Init.Glorot => (2 * rng.Uniform() - 1) * limit,
                Init.Kaiming => rng.Normal() * kaiming,
                _ => rng.Normal() * std,
            });
        Weight = new Param<T>("weight", w);
        Bias = new Param<T>("bias", new T[outFeatures]);
    }

    public IEnumerable<Param<T>> Parameters => [Weight, Bias];

    public T[] Forward(T[] x, int batch, bool training)
    {
        _x = x; _batch = batch;
        var y = Buffer.Sized(ref _y, batch * Out);
        Gemm.Multiply<T>(false, true, batch, Out, In, x, In, Weight.Value, In, y, Out, accumulate: false);
        ReadOnlySpan<T> b = Bias.Value;
        for (int n = 0; n < batch; n++)
        {
            var row = y.AsSpan(n * Out, Out);
            TensorPrimitives.Add(row, b, row);
        }
        return y;
    }

    public T[] Backward(T[] dy)
    {
        var dx = Buffer.Sized(ref _dx, _batch * In);
        Gemm.Multiply<T>(false, false, _batch, In, Out, dy, Out, Weight.Value, In, dx, In, accumulate: false);
        Gemm.Multiply<T>(true, false, Out, In, _batch, dy, Out, _x, In, Weight.Grad, In, accumulate: true);
        Span<T> gBias = Bias.Grad;
        for (int n = 0; n < _batch; n++) TensorPrimitives.Add(gBias, dy.AsSpan(n * Out, Out), gBias);
        return dx;
    }
}

/// <summary>Element-wise activations with their derivatives.</summary>
public sealed class Activation<T>(Activation<T>.Kind kind) : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public enum Kind { Sigmoid, ReLU, Tanh, GELU }
    public Kind Function { get; } = kind;
    private T[] _x = [], _y = [], _dx = [];

    /// <summary>The last forward's input (the pre-activations), for saturation statistics.</summary>
    public ReadOnlySpan<T> LastInput => _x;

    public IEnumerable<Param<T>> Parameters => [];

    public T[] Forward(T[] x, int batch, bool training)
    {
        _x = x;
        Buffer.Sized(ref _y, x.Length);
        switch (Function)
        {
            case Kind.Sigmoid: TensorPrimitives.Sigmoid<T>(x, _y); break;
            case Kind.Tanh: TensorPrimitives.Tanh<T>(x, _y); break;
            case Kind.ReLU: TensorPrimitives.Max<T>(x, T.Zero, _y); break;
            default:
                for (int i = 0; i < x.Length; i++) _y[i] = Gelu(x[i]);
                break;
        }
        return _y;
    }

    public T[] Backward(T[] dy)
    {
        var dx = Buffer.Sized(ref _dx, dy.Length);
        if (Function == Kind.GELU)
        {
            for (int i = 0; i < dy.Length; i++) dx[i] = dy[i] * GeluDerivative(_x[i]);
            return dx;
        }
        // The derivative from the saved output (sigmoid: y (1 - y); tanh: 1 - y^2) or input (ReLU:
        // x > 0), vectorized; the scalar tail computes the same expressions.
        int i0 = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var one = Vector<T>.One;
            for (; i0 <= dy.Length - Vector<T>.Count; i0 += Vector<T>.Count)
            {
                var g = new Vector<T>(dy, i0);
                var d = Function switch
                {
                    Kind.Sigmoid => g * (new Vector<T>(_y, i0) * (one - new Vector<T>(_y, i0))),
                    Kind.Tanh => g * (one - new Vector<T>(_y, i0) * new Vector<T>(_y, i0)),
                    _ => Vector.ConditionalSelect(Vector.GreaterThan(new Vector<T>(_x, i0), Vector<T>.Zero), g, Vector<T>.Zero),
                };
                d.CopyTo(dx, i0);
            }
        }
        for (int i = i0; i < dy.Length; i++)
        {
            T y = _y[i];
            dx[i] = Function switch
            {
                Kind.Sigmoid => dy[i] * (y * (T.One - y)),
                Kind.Tanh => dy[i] * (T.One - y * y),
                _ => _x[i] > T.Zero ? dy[i] : T.Zero,
            };
        }
        return dx;
    }

    // The tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    private static readonly T C = T.CreateTruncating(Math.Sqrt(2 / Math.PI)), K = T.CreateTruncating(0.044715), Half = T.CreateTruncating(0.5);
    private static T Gelu(T x) => Half * x * (T.One + T.Tanh(C * (x + K * x * x * x)));
    private static T GeluDerivative(T x)
    {
        T u = C * (x + K * x * x * x), t = T.Tanh(u);
        return Half * (T.One + t) + Half * x * (T.One - t * t) * C * (T.One + T.CreateTruncating(3) * K * x * x);
    }
}

/// <summary>
/// A NormKit layer on activations of shape (batch, *sampleShape): (batch, features) for an MLP,
/// (batch, C, H, W) for a CNN.
/// </summary>
public sealed class Norm<T> : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public NormLayer<T> Layer { get; }
    private readonly int[] _shape;   // [batch, *sampleShape]; the batch is filled in per call
    private T[] _x = [], _y = [], _dx = [];

    public Norm(NormLayer<T> layer, params int[] sampleShape) { Layer = layer; _shape = [0, .. sampleShape]; }

    /// <summary>The last forward's input and its shape (batch first), for statistics of what the norm sees.</summary>
    public (T[] Input, int[] Shape) LastInput => (_x, _shape);

    public IEnumerable<Param<T>> Parameters =>
        Layer.Tensors.Where(t => t.IsParameter).Select(t => Wrap(t.Name, t.Value, t.Grad!));

    private Param<T> Wrap(string name, Tensor<T> value, Tensor<T> grad) =>
        _params.TryGetValue(name, out var p) ? p : _params[name] = new Param<T>(name, value, grad);
    private readonly Dictionary<string, Param<T>> _params = new();

    public T[] Forward(T[] x, int batch, bool training)
    {
        Layer.Train(training);
        _x = x; _shape[0] = batch;
        var y = Buffer.Sized(ref _y, x.Length);
        Layer.Forward(x, _shape, y);
        return y;
    }

    public T[] Backward(T[] dy)
    {
        var dx = Buffer.Sized(ref _dx, dy.Length);
        Layer.Backward(dy, _x, _shape, dx);
        return dx;
    }
}
