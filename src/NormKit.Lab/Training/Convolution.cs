using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Kernels;
using NormKit.Lab.Engine;

namespace NormKit.Lab.Training;

/// <summary>
/// 2D convolution over NCHW: square kernel, stride, zero padding, optional bias. The whole batch's
/// input patches are unfolded into col[K = in * k * k, N * P] (im2col, P = output positions per
/// sample; kept for backward), so the forward is one matrix product Y[out, N * P] = W[out, K] col,
/// reordered to NCHW, and the backward two: dW += dY col^T and dcol = W^T dY, folded back into dx
/// (col2im). The unfold, fold and reorders run per sample on NormKit's worker pool: samples write
/// disjoint memory, so results are bitwise identical for any thread count.
/// </summary>
public sealed unsafe class Conv2d<T> : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public Param<T> Weight { get; }   // [out, in * k * k]
    public Param<T>? Bias { get; }
    private readonly ConvGeometry _shape;
    private readonly int _out;
    private int _batch;
    private T[] _col = [], _matrix = [], _y = [];   // sized for _batch
    private T[] _dcol = [], _dx = [];               // sized for _batch on the first backward

    public int InChannels => _shape.Channels;
    public int OutChannels => _out;
    public int Kernel => _shape.Kernel;
    public int Stride => _shape.Stride;
    public int Padding => _shape.Padding;
    public int Height => _shape.Height;
    public int Width => _shape.Width;
    public int OutHeight => _shape.OutHeight;
    public int OutWidth => _shape.OutWidth;

    /// <summary>Stride 1 with a bias.</summary>
    public Conv2d(int inChannels, int outChannels, int kernel, int padding, int height, int width, Rng rng)
        : this(inChannels, outChannels, kernel, stride: 1, padding, height, width, bias: true, rng) { }

    public Conv2d(int inChannels, int outChannels, int kernel, int stride, int padding, int height, int width, bool bias, Rng rng)
    {
        LayerArguments.AtLeast(inChannels, 1, nameof(inChannels));
        LayerArguments.AtLeast(outChannels, 1, nameof(outChannels));
        LayerArguments.AtLeast(kernel, 1, nameof(kernel));
        LayerArguments.AtLeast(stride, 1, nameof(stride));
        LayerArguments.AtLeast(padding, 0, nameof(padding));
        LayerArguments.AtLeast(height, 1, nameof(height));
        LayerArguments.AtLeast(width, 1, nameof(width));
        if (height + 2 * padding < kernel || width + 2 * padding < kernel)
            throw new ArgumentException($"kernel must be at most the padded input size, min({height}, {width}) + 2 * {padding} = {Math.Min(height, width) + 2 * padding}, but was {kernel}.", nameof(kernel));
        _shape = new ConvGeometry(inChannels, height, width, kernel, stride, padding);
        _out = outChannels;
        int fanIn = _shape.Patch;
        var w = new T[outChannels * fanIn];
        double std = Math.Sqrt(2.0 / fanIn);   // Kaiming, for the ReLUs that follow
        for (int i = 0; i < w.Length; i++) w[i] = T.CreateTruncating(rng.Normal() * std);
        Weight = new Param<T>("weight", w);
        if (bias) Bias = new Param<T>("bias", new T[outChannels]);
    }

    public IEnumerable<Param<T>> Parameters => Bias is null ? [Weight] : [Weight, Bias];

    public T[] Forward(T[] x, int batch, bool training)
    {
        LayerArguments.AtLeast(batch, 1, nameof(batch));
        LayerArguments.Length(x, batch, [InChannels, Height, Width], "Conv2d input", nameof(x));
        if (batch != _batch)
        {
            _batch = batch;
            _col = new T[_shape.Patch * Columns];
            _matrix = new T[_out * Columns];
            _y = new T[batch * _out * _shape.Positions];
            _dcol = _dx = [];
        }
        Span<T> bias = Bias is null ? default : Bias.Value;
        fixed (T* images = x, col = _col, matrix = _matrix, y = _y, b = bias)
        {
            var job = new SampleJob { Shape = _shape, OutChannels = _out, Columns = Columns, Images = images, Col = col, Matrix = matrix, Nchw = y, Bias = b };
            WorkerPool.For(batch, &job, &UnfoldSample);
            Gemm.Multiply<T>(false, false, _out, Columns, _shape.Patch, Weight.Value, _shape.Patch, _col, Columns, _matrix, Columns, accumulate: false);
            WorkerPool.For(batch, &job, &MatrixToNchw);
        }
        return _y;
    }

    public T[] Backward(T[] dy)
    {
        if (_batch == 0) throw new InvalidOperationException("Conv2d.Backward needs a Forward first.");
        LayerArguments.Length(dy, _batch, [_out, OutHeight, OutWidth], "Conv2d output gradient", nameof(dy));
        if (_dx.Length == 0)
        {
            _dcol = new T[_col.Length];
            _dx = new T[_batch * InChannels * Height * Width];
        }
        int patch = _shape.Patch;
        fixed (T* dOut = dy, matrix = _matrix, dcol = _dcol, dx = _dx)
        {
            var job = new SampleJob { Shape = _shape, OutChannels = _out, Columns = Columns, Images = dx, Col = dcol, Matrix = matrix, Nchw = dOut };
            WorkerPool.For(_batch, &job, &NchwToMatrix);
            Gemm.Multiply<T>(false, true, _out, patch, Columns, _matrix, Columns, _col, Columns, Weight.Grad, patch, accumulate: true);
            if (Bias is not null)
            {
                Span<T> gBias = Bias.Grad;
                for (int o = 0; o < _out; o++) gBias[o] += TensorPrimitives.Sum<T>(_matrix.AsSpan(o * Columns, Columns));
            }
            Gemm.Multiply<T>(true, false, patch, Columns, _out, Weight.Value, patch, _matrix, Columns, _dcol, Columns, accumulate: false);
            WorkerPool.For(_batch, &job, &FoldSample);
        }
        return _dx;
    }

    private int Columns => _batch * _shape.Positions;

    // One sample's share of a pass; it lives on the caller's stack while WorkerPool.For runs.
    private struct SampleJob
    {
        public ConvGeometry Shape;
        public int OutChannels, Columns;
        public T* Images, Col, Matrix, Nchw, Bias;   // Bias is null without one
    }

    private static void UnfoldSample(void* state, int n)
    {
        var j = (SampleJob*)state;
        j->Shape.Walk(j->Images + n * j->Shape.InputSize, j->Col + n * j->Shape.Positions, j->Columns, fold: false);
    }

    private static void FoldSample(void* state, int n)
    {
        var j = (SampleJob*)state;
        j->Shape.Walk(j->Images + n * j->Shape.InputSize, j->Col + n * j->Shape.Positions, j->Columns, fold: true);
    }

    // y[n, o, q] = matrix[o, n * P + q] + b[o]
    private static void MatrixToNchw(void* state, int n)
    {
        var j = (SampleJob*)state;
        int p = j->Shape.Positions;
        for (int o = 0; o < j->OutChannels; o++)
        {
            var source = new ReadOnlySpan<T>(j->Matrix + o * j->Columns + n * p, p);
            var target = new Span<T>(j->Nchw + (n * j->OutChannels + o) * p, p);
            if (j->Bias == null) source.CopyTo(target);
            else TensorPrimitives.Add(source, j->Bias[o], target);
        }
    }

    // matrix[o, n * P + q] = dy[n, o, q]
    private static void NchwToMatrix(void* state, int n)
    {
        var j = (SampleJob*)state;
        int p = j->Shape.Positions;
        for (int o = 0; o < j->OutChannels; o++)
            new ReadOnlySpan<T>(j->Nchw + (n * j->OutChannels + o) * p, p).CopyTo(new Span<T>(j->Matrix + o * j->Columns + n * p, p));
    }
}

/// <summary>The index arithmetic of a convolution: kernel k, stride s and zero padding p over C x H x W inputs.</summary>
internal readonly struct ConvGeometry
{
    public readonly int Channels, Height, Width, Kernel, Stride, Padding, OutHeight, OutWidth;

    public ConvGeometry(int channels, int height, int width, int kernel, int stride, int padding)
    {
        Channels = channels; Height = height; Width = width; Kernel = kernel; Stride = stride; Padding = padding;
        OutHeight = (height + 2 * padding - kernel) / stride + 1;
        OutWidth = (width + 2 * padding - kernel) / stride + 1;
    }

    /// <summary>K: the length of one unfolded patch.</summary>
    public int Patch => Channels * Kernel * Kernel;
    /// <summary>P: output positions per sample.</summary>
    public int Positions => OutHeight * OutWidth;
    public int InputSize => Channels * Height * Width;

    /// <summary>
    /// Unfold (im2col): col[(i k + u) k + v, r OW + c] = image[i, r s + u - p, c s + v - p], 0 outside
    /// the image; col's rows are <paramref name="rowStride"/> apart. Fold (col2im) is its adjoint:
    /// image = 0, then image[i, r s + u - p, c s + v - p] += col[...].
    /// </summary>
    public unsafe void Walk<T>(T* image, T* col, int rowStride, bool fold) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (fold) new Span<T>(image, InputSize).Clear();
        for (int i = 0; i < Channels; i++)
            for (int u = 0; u < Kernel; u++)
            {
                var (r0, r1) = Inside(u - Padding, Height, OutHeight);
                for (int v = 0; v < Kernel; v++)
                {
                    T* row = col + ((i * Kernel + u) * Kernel + v) * rowStride;
                    var (c0, c1) = Inside(v - Padding, Width, OutWidth);
                    if (!fold)
                    {
                        new Span<T>(row, r0 * OutWidth).Clear();
                        new Span<T>(row + r1 * OutWidth, (OutHeight - r1) * OutWidth).Clear();
                        if (Stride == 1 && OutWidth == Width && r1 > r0)
                        {
                            // A "same" conv: the rows' inside parts are one contiguous run of the image,
                            // copied at once; then the padding columns, which the run wraps, are zeroed.
                            T* first = image + (i * Height + r0 + u - Padding) * Width + v - Padding;
                            new ReadOnlySpan<T>(first + c0, (r1 - r0 - 1) * Width + c1 - c0).CopyTo(new Span<T>(row + r0 * OutWidth + c0, (r1 - r0 - 1) * Width + c1 - c0));
                            for (int r = r0; r < r1; r++)
                            {
                                T* colRow = row + r * OutWidth;
                                for (int c = 0; c < c0; c++) colRow[c] = T.Zero;
                                for (int c = c1; c < OutWidth; c++) colRow[c] = T.Zero;
                            }
                            continue;
                        }
                    }
                    for (int r = r0; r < r1; r++)
                    {
                        T* colRow = row + r * OutWidth;
                        // The image row this output row reads, at the input column of output column 0.
                        T* imageRow = image + (i * Height + r * Stride + u - Padding) * Width + v - Padding;
                        if (fold)
                        {
                            if (Stride == 1)
                            {
                                var target = new Span<T>(imageRow + c0, c1 - c0);
                                TensorPrimitives.Add(target, new ReadOnlySpan<T>(colRow + c0, c1 - c0), target);
                            }
                            else for (int c = c0; c < c1; c++) imageRow[c * Stride] += colRow[c];
                        }
                        else
                        {
                            // The padding edges are a few elements: a loop beats Span.Clear's call.
                            for (int c = 0; c < c0; c++) colRow[c] = T.Zero;
                            for (int c = c1; c < OutWidth; c++) colRow[c] = T.Zero;
                            if (Stride == 1) new ReadOnlySpan<T>(imageRow + c0, c1 - c0).CopyTo(new Span<T>(colRow + c0, c1 - c0));
                            else for (int c = c0; c < c1; c++) colRow[c] = imageRow[c * Stride];
                        }
                    }
                }
            }
    }

    // The outputs o in [first, end) of count whose input index o * Stride + offset lies in [0, size).
    private (int First, int End) Inside(int offset, int size, int count)
    {
        int first = Math.Min(count, offset >= 0 ? 0 : (-offset + Stride - 1) / Stride);
        int end = size - 1 - offset < 0 ? 0 : Math.Min(count, (size - 1 - offset) / Stride + 1);
        return (first, Math.Max(first, end));
    }
}

/// <summary>Global average pooling: NCHW to [N, C], the mean of each plane; backward spreads dy / (H W) over it.</summary>
public sealed class GlobalAvgPool<T> : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly int _channels, _height, _width;
    private readonly T _planeSize;
    private T[] _y = [], _dx = [];
    private int _batch;

    public GlobalAvgPool(int channels, int height, int width)
    {
        LayerArguments.AtLeast(channels, 1, nameof(channels));
        LayerArguments.AtLeast(height, 1, nameof(height));
        LayerArguments.AtLeast(width, 1, nameof(width));
        (_channels, _height, _width) = (channels, height, width);
        _planeSize = T.CreateTruncating(height * width);
    }

    public IEnumerable<Param<T>> Parameters => [];

    public T[] Forward(T[] x, int batch, bool training)
    {
        LayerArguments.AtLeast(batch, 1, nameof(batch));
        LayerArguments.Length(x, batch, [_channels, _height, _width], "GlobalAvgPool input", nameof(x));
        if (batch != _batch) { _batch = batch; _y = new T[batch * _channels]; _dx = new T[x.Length]; }
        int plane = _height * _width;
        for (int i = 0; i < _y.Length; i++) _y[i] = TensorPrimitives.Sum<T>(x.AsSpan(i * plane, plane)) / _planeSize;
        return _y;
    }

    public T[] Backward(T[] dy)
    {
        if (_batch == 0) throw new InvalidOperationException("GlobalAvgPool.Backward needs a Forward first.");
        LayerArguments.Length(dy, _batch, [_channels], "GlobalAvgPool output gradient", nameof(dy));
        int plane = _height * _width;
        for (int i = 0; i < dy.Length; i++) _dx.AsSpan(i * plane, plane).Fill(dy[i] / _planeSize);
        return _dx;
    }
}

/// <summary>2 x 2 max pooling with stride 2 over NCHW (H and W even); backward routes each gradient to its maximum.</summary>
public sealed class MaxPool2<T>(int channels, int height, int width) : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private int[] _argmax = [];
    private T[] _y = [], _dx = [];
    private int _batch;

    public IEnumerable<Param<T>> Parameters => [];

    public T[] Forward(T[] x, int batch, bool training)
    {
        int oh = height / 2, ow = width / 2;
        if (batch != _batch)
        {
            _batch = batch;
            _y = new T[batch * channels * oh * ow];
            _argmax = new int[_y.Length];
            _dx = new T[batch * channels * height * width];
        }
        for (int plane = 0; plane < batch * channels; plane++)
            for (int r = 0; r < oh; r++)
                for (int c = 0; c < ow; c++)
                {
                    int first = plane * height * width + 2 * r * width + 2 * c, best = first;
                    if (x[first + 1] > x[best]) best = first + 1;
                    if (x[first + width] > x[best]) best = first + width;
                    if (x[first + width + 1] > x[best]) best = first + width + 1;
                    int o = (plane * oh + r) * ow + c;
                    _y[o] = x[best];
                    _argmax[o] = best;
                }
        return _y;
    }

    public T[] Backward(T[] dy)
    {
        Array.Clear(_dx);
        for (int o = 0; o < dy.Length; o++) _dx[_argmax[o]] += dy[o];
        return _dx;
    }
}

/// <summary>Argument checks shared by the lab's layers: each message names the argument, what it must be and what it was.</summary>
internal static class LayerArguments
{
    public static void AtLeast(int value, int min, string name)
    {
        if (value < min) throw new ArgumentOutOfRangeException(name, value, $"{name} must be >= {min} but was {value}.");
    }

    /// <summary>Checks that <paramref name="values"/> holds batch x sampleShape elements.</summary>
    public static void Length<T>(T[] values, int batch, ReadOnlySpan<int> sampleShape, string what, string name)
    {
        int expected = batch;
        foreach (int d in sampleShape) expected *= d;
        if (values.Length != expected)
            throw new ArgumentException($"{what} must have {batch} x {string.Join(" x ", sampleShape.ToArray())} = {expected} values (batch {batch}) but had {values.Length}.", name);
    }
}
