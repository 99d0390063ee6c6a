using NormKit.Kernels;
using NormKit.Layers;
using NormKit.Tests.Reference;
using NormKit.Tests.Support;

namespace NormKit.Tests;

[Trait("Category", "Kernel")]
public class LayerNormTests
{
    public static TheoryData<int> Lengths() => new(Paths.Lengths);

    private static (T[] Y, double[] Mean, double[] Rstd) Run<T>(double[] x, int rows, int cols, double[]? w, double[]? b, double eps = 1e-5)
        where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
    {
        var y = new T[x.Length];
        var mean = new double[rows];
        var rstd = new double[rows];
        Functional.LayerNorm<T>(Check.Arr<T>(x), [rows, cols], [cols], y, w is null ? default : Check.Arr<T>(w), b is null ? default : Check.Arr<T>(b), eps, mean, rstd);
        return (y, mean, rstd);
    }

    [Theory, MemberData(nameof(Lengths))]
    public void Forward_matches_reference_for_every_length_path_and_type(int cols)
    {
        const int rows = 3;
        var x = Data.RoundToFloat(Data.Normal(cols, rows * cols, 0.5, 2));
        var w = Data.RoundToFloat(Data.Normal(cols + 1, cols, 1, 0.5));
        var b = Data.RoundToFloat(Data.Normal(cols + 2, cols));
        var (ey, em, er) = Oracle.LayerNorm(x, rows, cols, w, b, 1e-5);
        Paths.ForEach(p =>
        {
            var (yf, mf, rf) = Run<float>(x, rows, cols, w, b);
            Check.Close(ey, yf, Tol.F32, $"float y ({p})");
            Check.Close(em, mf, Tol.F64, $"float mean ({p})");
            Check.Close(er, rf, Tol.F64, $"float rstd ({p})");
            var (yd, md, rd) = Run<double>(x, rows, cols, w, b);
            Check.Close(ey, yd, Tol.F64, $"double y ({p})");
            Check.Close(em, md, Tol.F64, $"double mean ({p})");
            Check.Close(er, rd, Tol.F64, $"double rstd ({p})");
        });
    }

    [Theory]
    [InlineData(true, true)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(false, false)]
    public void Forward_with_weight_or_bias_absent(bool hasW, bool hasB)
    {
        const int rows = 4, cols = 37;
        var x = Data.Normal(1, rows * cols);
        var w = hasW ? Data.Normal(2, cols) : null;
        var b = hasB ? Data.Normal(3, cols) : null;
        var (ey, _, _) = Oracle.LayerNorm(x, rows, cols, w, b, 1e-5);
        Paths.ForEach(p => Check.Close(ey, Run<double>(x, rows, cols, w, b).Y, Tol.F64, $"y ({p})"));
    }

    [Theory, MemberData(nameof(Lengths))]
    public void Backward_matches_reference_for_every_length_path_and_type(int cols)
    {
        const int rows = 5;
        var x = Data.RoundToFloat(Data.Normal(cols, rows * cols, -1, 3));
        var w = Data.RoundToFloat(Data.Normal(cols + 7, cols, 1, 0.5));
        var dy = Data.RoundToFloat(Data.Normal(cols + 9, rows * cols));
        var (edx, edw, edb) = Oracle.LayerNormBackward(dy, x, rows, cols, w, 1e-5);
        Paths.ForEach(p =>
        {
            BackwardOne<float>(Tol.F32);
            BackwardOne<double>(Tol.F64);
            void BackwardOne<T>(Tol tol) where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
            {
                var (_, mean, rstd) = Run<T>(x, rows, cols, w, null);
                var dx = new T[x.Length];
                var dw = Check.Arr<T>(Enumerable.Repeat(0.25, cols).ToArray());   // accumulates onto 0.25
                var db = Check.Arr<T>(Enumerable.Repeat(-0.5, cols).ToArray());
                Functional.LayerNormBackward<T>(Check.Arr<T>(dy), Check.Arr<T>(x), [rows, cols], [cols], mean, rstd, Check.Arr<T>(w), dx, dw, db);
                Check.Close(edx, dx, tol, $"{typeof(T).Name} dx ({p})");
                Check.Close(edw.Select(v => v + 0.25).ToArray(), dw, tol, $"{typeof(T).Name} dWeight ({p})");
                Check.Close(edb.Select(v => v - 0.5).ToArray(), db, tol, $"{typeof(T).Name} dBias ({p})");
            }
        });
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 7)]
    [InlineData(4, 19)]
    [InlineData(2, 70)]
    public void Backward_agrees_with_finite_differences_of_forward(int rows, int cols)
    {
        var x = Data.Normal(11, rows * cols, 0.3, 1.7);
        var w = Data.Normal(12, cols, 1, 0.5);
        var b = Data.Normal(13, cols);
        var dy = Data.Normal(14, rows * cols);   // random upstream gradient: loss = sum(y * dy)
        double Loss(double[] xx, double[] ww, double[] bb)
        {
            var y = new double[xx.Length];
            Functional.LayerNorm<double>(xx, [rows, cols], [cols], y, ww, bb, 1e-5);
            return Oracle.Dot(y, dy);
        }
        var mean = new double[rows]; var rstd = new double[rows];
        Functional.LayerNorm<double>(x, [rows, cols], [cols], new double[x.Length], w, b, 1e-5, mean, rstd);
        var dx = new double[x.Length]; var dw = new double[cols]; var db = new double[cols];
        Functional.LayerNormBackward<double>(dy, x, [rows, cols], [cols], mean, rstd, w, dx, dw, db);
        Check.Close(Oracle.NumericalGradient(v => Loss(v, w, b), x), dx, Tol.GradCheck, "dx");
        Check.Close(Oracle.NumericalGradient(v => Loss(x, v, b), w), dw, Tol.GradCheck, "dWeight");
        Check.Close(Oracle.NumericalGradient(v => Loss(x, w, v), b), db, Tol.GradCheck, "dBias");
    }

    [Theory]
    [InlineData(1000, 64)]
    [InlineData(4096, 33)]
    public void Parameter_gradients_over_many_rows_stay_within_float_tolerance(int rows, int cols)
    {
        var x = Data.RoundToFloat(Data.Normal(rows, rows * cols, 1, 2));
        var dy = Data.RoundToFloat(Data.Normal(cols, rows * cols));
        var w = Data.RoundToFloat(Data.Normal(3, cols, 1, 0.3));
        var (_, edw, edb) = Oracle.LayerNormBackward(dy, x, rows, cols, w, 1e-5);
        Paths.ForEach(p =>
        {
            var mean = new double[rows]; var rstd = new double[rows];
            Functional.LayerNorm<float>(Data.F(x), [rows, cols], [cols], new float[x.Length], Data.F(w), default, 1e-5, mean, rstd);
            var dw = new float[cols]; var db = new float[cols];
            Functional.LayerNormBackward<float>(Data.F(dy), Data.F(x), [rows, cols], [cols], mean, rstd, Data.F(w), new float[x.Length], dw, db);
            Check.Close(edw, dw, Tol.F32, $"dWeight ({p})");
            Check.Close(edb, db, Tol.F32, $"dBias ({p})");
        });
    }

    [Fact]
    public void Slices_of_larger_buffers_leave_neighbours_untouched()
    {
        const int rows = 3, cols = 45, pad = 13;
        var x = Data.Normal(5, rows * cols);
        var buffer = new float[rows * cols + 2 * pad];
        Array.Fill(buffer, float.NaN);
        var xin = new float[rows * cols + 2 * pad];
        Data.F(x).CopyTo(xin, pad);
        var (ey, _, _) = Oracle.LayerNorm(Data.RoundToFloat(x), rows, cols, null, null, 1e-5);
        Paths.ForEach(p =>
        {
            Array.Fill(buffer, float.NaN);
            Functional.LayerNorm<float>(xin.AsSpan(pad, rows * cols), [rows, cols], [cols], buffer.AsSpan(pad, rows * cols));
            Check.Close(ey, buffer.AsSpan(pad, rows * cols), Tol.F32, $"y ({p})");
            Assert.All(buffer[..pad], v => Assert.True(float.IsNaN(v)));
            Assert.All(buffer[(pad + rows * cols)..], v => Assert.True(float.IsNaN(v)));
        });
    }

    [Fact]
    public void Element_wise_pass_is_bitwise_identical_on_every_path()
    {
        // The normalize pass (statistics fixed) must match the scalar specification bit for bit.
        foreach (int n in Paths.Lengths)
        {
            var x = Data.F(Data.Normal(n, n, 3, 2));
            var w = Data.F(Data.Normal(n + 1, n));
            var b = Data.F(Data.Normal(n + 2, n));
            var scalar = new float[n];
            unsafe
            {
                fixed (float* pw = w, pb = b)
                {
                    RowKernel.NormalizeRow(ref x[0], ref scalar[0], pw, pb, n, 2.9f, 1e-8f, 0.51f, SimdPath.Scalar);
                    foreach (var p in Paths.Available())
                    {
                        var y = new float[n];
                        RowKernel.NormalizeRow(ref x[0], ref y[0], pw, pb, n, 2.9f, 1e-8f, 0.51f, p);
                        Check.BitEqual<float>(scalar, y, $"n={n} {p}");
                    }
                }
            }
        }
    }

    [Fact]
    public void Layer_forward_backward_match_functional_and_accumulate_gradients()
    {
        var ln = new LayerNorm<float>([3, 4]);
        Assert.Equal([3, 4], ln.NormalizedShape);
        Assert.Equal(1e-5, ln.Eps);
        Assert.True(ln.ElementwiseAffine && ln.HasBias);
        Assert.All(Guard.Span(ln.Weight!).ToArray(), v => Assert.Equal(1f, v));
        Assert.All(Guard.Span(ln.Bias!).ToArray(), v => Assert.Equal(0f, v));
        var w = Data.F(Data.Normal(1, 12, 1, 0.3));
        w.CopyTo(Guard.Span(ln.Weight!));
        var x = Data.RoundToFloat(Data.Normal(2, 2 * 5 * 12));
        var dy = Data.RoundToFloat(Data.Normal(3, 2 * 5 * 12));
        var input = System.Numerics.Tensors.Tensor.Create(Data.F(x), [2, 5, 3, 4]);
        var y = ln.Forward(input);
        var (ey, _, _) = Oracle.LayerNorm(x, 10, 12, Data.D(w), null, 1e-5);
        Check.Close(ey, Guard.Span(y), Tol.F32, "y");
        var dx = ln.Backward(System.Numerics.Tensors.Tensor.Create(Data.F(dy), [2, 5, 3, 4]));
        ln.Backward(System.Numerics.Tensors.Tensor.Create(Data.F(dy), [2, 5, 3, 4]));
        var (edx, edw, edb) = Oracle.LayerNormBackward(dy, x, 10, 12, Data.D(w), 1e-5);
        Check.Close(edx, Guard.Span(dx), Tol.F32, "dx");
        Check.Close(edw.Select(v => 2 * v).ToArray(), Guard.Span(ln.WeightGrad!), Tol.F32, "dWeight accumulated twice");
        Check.Close(edb.Select(v => 2 * v).ToArray(), Guard.Span(ln.BiasGrad!), Tol.F32, "dBias accumulated twice");
        ln.ZeroGrad();
        Assert.All(Guard.Span(ln.WeightGrad!).ToArray(), v => Assert.Equal(0f, v));
        // Same in eval: LayerNorm has no mode-dependent behaviour.
        ln.Eval();
        Check.BitEqual<float>(Guard.Span(y), Guard.Span(ln.Forward(input)), "eval equals train");
    }

    [Fact]
    public void Layer_without_affine_or_bias_has_no_such_parameters()
    {
        var none = new LayerNorm<double>(8, elementwiseAffine: false);
        Assert.Null(none.Weight); Assert.Null(none.Bias); Assert.Null(none.WeightGrad);
        var noBias = new LayerNorm<double>(8, bias: false);
        Assert.NotNull(noBias.Weight); Assert.Null(noBias.Bias);
        var x = Data.Normal(4, 3 * 8);
        var y = noBias.Forward(System.Numerics.Tensors.Tensor.Create(x, [3, 8]));
        Check.Close(Oracle.LayerNorm(x, 3, 8, null, null, 1e-5).Y, Guard.Span(y), Tol.F64, "y");
    }
}

/// <summary>
/// LayerNorm over a few long rows (LayerNorm over [C, H, W] of a small batch): backward splits
/// the rows into a few blocks whose parameter-gradient partials are merged by chunks of columns.
/// </summary>
[Trait("Category", "Kernel")]
[Collection("Threads")]
public class LayerNormLongRowTests
{
    [Theory]
    [InlineData(20, 9001)]   // 3 blocks of up to 8 rows; a vector tail in every row
    [InlineData(32, 12544)]  // [32, 16, 28, 28] normalized over (16, 28, 28)
    public void Backward_of_few_long_rows_matches_reference_and_is_bitwise_identical_for_1_2_and_3_threads(int rows, int cols)
    {
        var x = Data.RoundToFloat(Data.Normal(rows, rows * cols, 0.5, 2));
        var w = Data.RoundToFloat(Data.Normal(cols, cols, 1, 0.5));
        var dy = Data.RoundToFloat(Data.Normal(rows + cols, rows * cols));
        var (edx, edw, edb) = Oracle.LayerNormBackward(dy, x, rows, cols, w, 1e-5);
        Paths.ForEach(p =>
        {
            One<float>(Tol.F32);
            One<double>(Tol.F64);
            void One<T>(Tol tol) where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
            {
                T[][]? first = null;
                foreach (int threads in new[] { 1, 2, 3 })
                {
                    T[][] r = null!;
                    Paths.WithThreads(threads, () =>
                    {
                        var mean = new double[rows]; var rstd = new double[rows];
                        Functional.LayerNorm<T>(Check.Arr<T>(x), [rows, cols], [cols], new T[x.Length], Check.Arr<T>(w), default, 1e-5, mean, rstd);
                        var dx = new T[x.Length];
                        var dw = Check.Arr<T>(Enumerable.Repeat(0.25, cols).ToArray());   // accumulates onto 0.25
                        var db = Check.Arr<T>(Enumerable.Repeat(-0.5, cols).ToArray());
                        Functional.LayerNormBackward<T>(Check.Arr<T>(dy), Check.Arr<T>(x), [rows, cols], [cols], mean, rstd, Check.Arr<T>(w), dx, dw, db);
                        r = [dx, dw, db];
                    });
                    if (first is null)
                    {
                        Check.Close(edx, r[0], tol, $"{typeof(T).Name} dx ({p})");
                        Check.Close(edw.Select(v => v + 0.25).ToArray(), r[1], tol, $"{typeof(T).Name} dWeight ({p})");
                        Check.Close(edb.Select(v => v - 0.5).ToArray(), r[2], tol, $"{typeof(T).Name} dBias ({p})");
                        first = r;
                    }
                    else
                        for (int k = 0; k < 3; k++) Check.BitEqual<T>(first[k], r[k], $"{typeof(T).Name} output {k} ({p}) with {threads} threads");
                }
            }
        });
    }
}
