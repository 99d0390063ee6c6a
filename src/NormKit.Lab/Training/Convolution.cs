using System.Numerics;
using System.Numerics.Tensors;

namespace NormKit.Lab.Training;

/// <summary>
/// 2D convolution, NCHW, square kernel, stride 1, zero padding. Each output position's input
/// patch is gathered into a row (im2col, kept for backward), so the forward is a dot product of
/// contiguous rows per (channel, position) and the backward two row updates.
/// </summary>
public sealed class Conv2d<T> : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public Param<T> Weight { get; }   // [out, in * k * k]
    public Param<T> Bias { get; }
    private readonly int _in, _out, _k, _pad, _h, _w;
    private T[] _cols = [];            // per sample: [H * W, in * k * k]
    private int _batch;

    public int OutChannels => _out;

    public Conv2d(int inChannels, int outChannels, int kernel, int padding, int height, int width, Rng rng)
    {
        _in = inChannels; _out = outChannels; _k = kernel; _pad = padding; _h = height; _w = width;
        int fanIn = inChannels * kernel * kernel;
        var w = new T[outChannels * fanIn];
        double std = Math.Sqrt(2.0 / fanIn);   // Kaiming, for the ReLUs that follow
        for (int i = 0; i < w.Length; i++) w[i] = T.CreateTruncating(rng.Normal() * std);
        Weight = new Param<T>("weight", w);
        Bias = new Param<T>("bias", new T[outChannels]);
        if (2 * padding != kernel - 1) throw new ArgumentException($"Only 'same' convolutions are supported: padding {padding} for kernel {kernel} needs {(kernel - 1) / 2}.", nameof(padding));
    }

    public IEnumerable<Param<T>> Parameters => [Weight, Bias];

    public T[] Forward(T[] x, int batch, bool training)
    {
        _batch = batch;
        int p = _h * _w, kk = _in * _k * _k;
        _cols = new T[batch * p * kk];
        var y = new T[batch * _out * p];
        Span<T> w = Weight.Value, b = Bias.Value;
        for (int n = 0; n < batch; n++)
        {
            var cols = _cols.AsSpan(n * p * kk, p * kk);
            Im2Col(x.AsSpan(n * _in * p, _in * p), cols);
            for (int o = 0; o < _out; o++)
            {
                var wo = w.Slice(o * kk, kk);
                var yo = y.AsSpan((n * _out + o) * p, p);
                for (int q = 0; q < p; q++) yo[q] = TensorPrimitives.Dot<T>(wo, cols.Slice(q * kk, kk)) + b[o];
            }
        }
        return y;
    }

    public T[] Backward(T[] dy)
    {
        int p = _h * _w, kk = _in * _k * _k;
        var dx = new T[_batch * _in * p];
        var dcols = new T[p * kk];
        Span<T> w = Weight.Value, gw = Weight.Grad, gb = Bias.Grad;
        for (int n = 0; n < _batch; n++)
        {
            var cols = _cols.AsSpan(n * p * kk, p * kk);
            Array.Clear(dcols);
            for (int o = 0; o < _out; o++)
            {
                var dyo = dy.AsSpan((n * _out + o) * p, p);
                var wo = w.Slice(o * kk, kk);
                var gwo = gw.Slice(o * kk, kk);
                for (int q = 0; q < p; q++)
                {
                    T g = dyo[q];
                    if (g == T.Zero) continue;
                    TensorPrimitives.MultiplyAdd(cols.Slice(q * kk, kk), g, gwo, gwo);
                    var dc = dcols.AsSpan(q * kk, kk);
                    TensorPrimitives.MultiplyAdd(wo, g, dc, dc);
                }
                gb[o] += TensorPrimitives.Sum<T>(dyo);
            }
            Col2Im(dcols, dx.AsSpan(n * _in * p, _in * p));
        }
        return dx;
    }

    // cols[q = r * W + c, (i * k + u) * k + v] = x[i, r + u - pad, c + v - pad] (0 outside).
    private void Im2Col(Span<T> x, Span<T> cols) => Unfold(x, cols, scatter: false);

    // The adjoint of Im2Col: dx[i, r + u - pad, c + v - pad] += dcols[q, (i * k + u) * k + v].
    private void Col2Im(Span<T> dcols, Span<T> dx) => Unfold(dx, dcols, scatter: true);

    // One walk over (output position, input channel, kernel offset) serves both directions.
    private void Unfold(Span<T> image, Span<T> cols, bool scatter)
    {
        int kk = _in * _k * _k;
        for (int r = 0; r < _h; r++)
            for (int c = 0; c < _w; c++)
            {
                var row = cols.Slice((r * _w + c) * kk, kk);
                int j = 0;
                for (int i = 0; i < _in; i++)
                    for (int u = 0; u < _k; u++)
                        for (int v = 0; v < _k; v++, j++)
                        {
                            int rr = r + u - _pad, cc = c + v - _pad;
                            bool inside = rr >= 0 && rr < _h && cc >= 0 && cc < _w;
                            if (scatter) { if (inside) image[(i * _h + rr) * _w + cc] += row[j]; }
                            else row[j] = inside ? image[(i * _h + rr) * _w + cc] : T.Zero;
                        }
            }
    }
}

/// <summary>2 x 2 max pooling with stride 2 over NCHW (H and W even); backward routes each gradient to its maximum.</summary>
public sealed class MaxPool2<T>(int channels, int height, int width) : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private int[] _argmax = [];
    private int _batch;

    public IEnumerable<Param<T>> Parameters => [];

    public T[] Forward(T[] x, int batch, bool training)
    {
        _batch = batch;
        int oh = height / 2, ow = width / 2;
        var y = new T[batch * channels * oh * ow];
        _argmax = new int[y.Length];
        for (int plane = 0; plane < batch * channels; plane++)
            for (int r = 0; r < oh; r++)
                for (int c = 0; c < ow; c++)
                {
                    int first = plane * height * width + 2 * r * width + 2 * c, best = first;
                    if (x[first + 1] > x[best]) best = first + 1;
                    if (x[first + width] > x[best]) best = first + width;
                    if (x[first + width + 1] > x[best]) best = first + width + 1;
                    int o = (plane * oh + r) * ow + c;
                    y[o] = x[best];
                    _argmax[o] = best;
                }
        return y;
    }

    public T[] Backward(T[] dy)
    {
        var dx = new T[_batch * channels * height * width];
        for (int o = 0; o < dy.Length; o++) dx[_argmax[o]] += dy[o];
        return dx;
    }
}
