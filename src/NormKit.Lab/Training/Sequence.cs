using System.Numerics;
using System.Numerics.Tensors;

namespace NormKit.Lab.Training;

/// <summary>Token plus learned position embeddings: input holds token ids (as numbers), batch sequences of Length tokens.</summary>
public sealed class Embedding<T> : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public Param<T> Tokens { get; }
    public Param<T> Positions { get; }
    private readonly int _dim, _length;
    private int[] _ids = [];
    private T[] _y = [], _dx = [];

    public Embedding(int vocabulary, int dim, int length, Rng rng)
    {
        _dim = dim; _length = length;
        Tokens = new Param<T>("tokens", Enumerable.Range(0, vocabulary * dim).Select(_ => T.CreateTruncating(0.1 * rng.Normal())).ToArray());
        Positions = new Param<T>("positions", Enumerable.Range(0, length * dim).Select(_ => T.CreateTruncating(0.1 * rng.Normal())).ToArray());
    }

    public IEnumerable<Param<T>> Parameters => [Tokens, Positions];

    public T[] Forward(T[] x, int batch, bool training)
    {
        Buffer.Sized(ref _ids, x.Length);
        for (int i = 0; i < x.Length; i++) _ids[i] = int.CreateTruncating(x[i]);
        var y = Buffer.Sized(ref _y, x.Length * _dim);
        Span<T> tok = Tokens.Value, pos = Positions.Value;
        for (int r = 0; r < _ids.Length; r++)
            TensorPrimitives.Add(tok.Slice(_ids[r] * _dim, _dim), pos.Slice(r % _length * _dim, _dim), y.AsSpan(r * _dim, _dim));
        return y;
    }

    public T[] Backward(T[] dy)
    {
        Span<T> gt = Tokens.Grad, gp = Positions.Grad;
        for (int r = 0; r < _ids.Length; r++)
        {
            var d = dy.AsSpan(r * _dim, _dim);
            var a = gt.Slice(_ids[r] * _dim, _dim); TensorPrimitives.Add(a, d, a);
            var b = gp.Slice(r % _length * _dim, _dim); TensorPrimitives.Add(b, d, b);
        }
        return Buffer.Sized(ref _dx, _ids.Length);   // token ids take no gradient: zeros
    }
}

/// <summary>
/// y = s * x with one learnable scalar s: Dynamic Tanh's LLaMA recipe multiplies the embedding
/// output by such a scalar, initialised to sqrt(d_model), so that the values entering tanh are
/// of unit scale.
/// </summary>
public sealed class Scale<T>(double init) : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public Param<T> Factor { get; } = new("scale", [T.CreateTruncating(init)]);
    private T[] _x = [], _y = [], _dx = [];
    public IEnumerable<Param<T>> Parameters => [Factor];

    public T[] Forward(T[] x, int batch, bool training)
    {
        _x = x;
        var y = Buffer.Sized(ref _y, x.Length);
        TensorPrimitives.Multiply<T>(x, Factor.Value[0], y);
        return y;
    }

    public T[] Backward(T[] dy)
    {
        Factor.Grad[0] += TensorPrimitives.Dot<T>(dy, _x);
        var dx = Buffer.Sized(ref _dx, dy.Length);
        TensorPrimitives.Multiply<T>(dy, Factor.Value[0], dx);
        return dx;
    }
}

/// <summary>y = x + inner(x): a residual branch (pre-norm Transformer blocks).</summary>
public sealed class Residual<T>(params ILayer<T>[] inner) : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly Sequential<T> _inner = new(inner);
    private T[] _y = [], _dx = [];
    public IReadOnlyList<ILayer<T>> Inner => _inner.Layers;
    public IEnumerable<Param<T>> Parameters => _inner.Parameters;

    public T[] Forward(T[] x, int batch, bool training)
    {
        var y = Buffer.Sized(ref _y, x.Length);
        TensorPrimitives.Add<T>(_inner.Forward(x, batch, training), x, y);
        return y;
    }

    public T[] Backward(T[] dy)
    {
        var d = dy;
        for (int i = _inner.Layers.Count - 1; i >= 0; i--) d = _inner.Layers[i].Backward(d);
        var dx = Buffer.Sized(ref _dx, dy.Length);
        TensorPrimitives.Add<T>(d, dy, dx);
        return dx;
    }
}

/// <summary>
/// Multi-head causal self-attention over batch sequences of Length tokens (rows of the
/// activation are batch-major tokens): softmax(Q K^T / sqrt(dh)) V with future positions masked,
/// then an output projection.
/// </summary>
public sealed class CausalSelfAttention<T> : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly Linear<T> _q, _k, _v, _o;
    private readonly int _dim, _heads, _length, _dh;
    private T[] _Q = [], _K = [], _V = [], _P = [], _O = [], _dQ = [], _dK = [], _dV = [], _dP = [];
    private int _batch;

    public CausalSelfAttention(int dim, int heads, int length, Rng rng)
    {
        _dim = dim; _heads = heads; _length = length; _dh = dim / heads;
        _q = new Linear<T>(dim, dim, Init.Glorot, rng); _k = new Linear<T>(dim, dim, Init.Glorot, rng);
        _v = new Linear<T>(dim, dim, Init.Glorot, rng); _o = new Linear<T>(dim, dim, Init.Glorot, rng);
    }

    public IEnumerable<Param<T>> Parameters => _q.Parameters.Concat(_k.Parameters).Concat(_v.Parameters).Concat(_o.Parameters);

    public T[] Forward(T[] x, int batch, bool training)
    {
        int sequences = batch / _length;
        _batch = batch;
        _Q = _q.Forward(x, batch, training); _K = _k.Forward(x, batch, training); _V = _v.Forward(x, batch, training);
        Buffer.Sized(ref _P, sequences * _heads * _length * _length);
        var o = Buffer.Sized(ref _O, batch * _dim);
        Array.Clear(o);
        T scale = T.One / T.Sqrt(T.CreateTruncating(_dh));
        for (int s = 0; s < sequences; s++)
            for (int h = 0; h < _heads; h++)
                for (int i = 0; i < _length; i++)
                {
                    var p = _P.AsSpan(((s * _heads + h) * _length + i) * _length, _length);
                    var qi = _Q.AsSpan((s * _length + i) * _dim + h * _dh, _dh);
                    for (int j = 0; j <= i; j++) p[j] = TensorPrimitives.Dot<T>(qi, _K.AsSpan((s * _length + j) * _dim + h * _dh, _dh)) * scale;
                    TensorPrimitives.SoftMax<T>(p[..(i + 1)], p[..(i + 1)]);
                    var oi = o.AsSpan((s * _length + i) * _dim + h * _dh, _dh);
                    for (int j = 0; j <= i; j++) TensorPrimitives.MultiplyAdd(_V.AsSpan((s * _length + j) * _dim + h * _dh, _dh), p[j], oi, oi);
                }
        return _o.Forward(o, batch, training);
    }

    public T[] Backward(T[] dy)
    {
        var dO = _o.Backward(dy);
        var dQ = Buffer.Sized(ref _dQ, _Q.Length); var dK = Buffer.Sized(ref _dK, _K.Length); var dV = Buffer.Sized(ref _dV, _V.Length);
        var dP = Buffer.Sized(ref _dP, _length);
        Array.Clear(dQ); Array.Clear(dK); Array.Clear(dV);
        T scale = T.One / T.Sqrt(T.CreateTruncating(_dh));
        int sequences = _batch / _length;
        for (int s = 0; s < sequences; s++)
            for (int h = 0; h < _heads; h++)
                for (int i = 0; i < _length; i++)
                {
                    var p = _P.AsSpan(((s * _heads + h) * _length + i) * _length, _length);
                    var doi = dO.AsSpan((s * _length + i) * _dim + h * _dh, _dh);
                    T dot = T.Zero;
                    for (int j = 0; j <= i; j++)
                    {
                        int at = (s * _length + j) * _dim + h * _dh;
                        dP[j] = TensorPrimitives.Dot<T>(doi, _V.AsSpan(at, _dh));
                        var dv = dV.AsSpan(at, _dh); TensorPrimitives.MultiplyAdd(doi, p[j], dv, dv);
                        dot += p[j] * dP[j];
                    }
                    var qi = _Q.AsSpan((s * _length + i) * _dim + h * _dh, _dh);
                    var dqi = dQ.AsSpan((s * _length + i) * _dim + h * _dh, _dh);
                    for (int j = 0; j <= i; j++)
                    {
                        int at = (s * _length + j) * _dim + h * _dh;
                        T ds = p[j] * (dP[j] - dot) * scale;   // softmax backward, then the score scale
                        TensorPrimitives.MultiplyAdd(_K.AsSpan(at, _dh), ds, dqi, dqi);
                        var dk = dK.AsSpan(at, _dh); TensorPrimitives.MultiplyAdd(qi, ds, dk, dk);
                    }
                }
        var dx = _q.Backward(dQ);
        TensorPrimitives.Add<T>(dx, _k.Backward(dK), dx);
        TensorPrimitives.Add<T>(dx, _v.Backward(dV), dx);
        return dx;
    }
}
