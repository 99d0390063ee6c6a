using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Layers;
using NormKit.Serialization;
using NormKit.Tests.Reference;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>
/// Dynamic Tanh against a float64 reference written here (plain loops, Math.Tanh), finite
/// differences for dx, alpha, weight and bias, LayerNorm's input shapes, state files,
/// validation, threads and allocations.
/// </summary>
[Collection("Threads")]
public class DynamicTanhTests
{
    // ---------------- the reference, in double ----------------

    /// <summary>
    /// y = w tanh(alpha x) + b per row of cols; t = tanh(alpha x): dx = dy w alpha (1 - t^2),
    /// dalpha = Σ dy w x (1 - t^2), dw = Σ rows dy t, db = Σ rows dy.
    /// </summary>
    private static (double[] Y, double[] Dx, double Dalpha, double[] Dw, double[] Db) Reference(
        double[] x, double[] dy, int cols, double alpha, double[] w, double[]? b)
    {
        var y = new double[x.Length]; var dx = new double[x.Length];
        var dw = new double[cols]; var db = new double[cols];
        double da = 0;
        for (int i = 0; i < x.Length; i++)
        {
            int j = i % cols;
            double t = Math.Tanh(alpha * x[i]), s = 1 - t * t;
            y[i] = w[j] * t + (b?[j] ?? 0);
            dx[i] = dy[i] * w[j] * alpha * s;
            da += dy[i] * w[j] * x[i] * s;
            dw[j] += dy[i] * t;
            db[j] += dy[i];
        }
        return (y, dx, da, dw, db);
    }

    // ---------------- helpers ----------------

    private static void Set<T>(NormLayer<T> layer, string name, double[] values) where T : unmanaged, IFloatingPointIeee754<T> =>
        Check.Arr<T>(values).CopyTo(Guard.Span(layer.Tensors.Single(t => t.Name == name).Value));

    private static T[] Grad<T>(NormLayer<T> layer, string name) where T : unmanaged, IFloatingPointIeee754<T> =>
        Guard.Span(layer.Tensors.Single(t => t.Name == name).Grad!).ToArray();

    private sealed record Inputs(double[] X, double[] Dy, double Alpha, double[] W, double[]? B);

    private static Inputs Make(int count, int cols, bool bias, int seed) => new(
        Data.RoundToFloat(Data.Normal(seed, count, 0.2, 2)),
        Data.RoundToFloat(Data.Normal(seed + 1, count)),
        0.6875,   // an exact binary fraction: the same alpha in float and double
        Data.RoundToFloat(Data.Normal(seed + 2, cols, 1, 0.3)),
        bias ? Data.RoundToFloat(Data.Normal(seed + 3, cols, 0, 0.5)) : null);

    private static DynamicTanh<T> Layer<T>(int[] normalizedShape, Inputs d) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var dyt = new DynamicTanh<T>(normalizedShape, bias: d.B is not null);
        Set(dyt, "alpha", [d.Alpha]); Set(dyt, "weight", d.W);
        if (d.B is not null) Set(dyt, "bias", d.B);
        return dyt;
    }

    private static int Product(int[] s) => s.Aggregate(1, (a, v) => a * v);

    public static TheoryData<int[], int[], bool> Cases() => new()
    {
        { [4, 16], [16], true },
        { [3, 33], [33], true },         // vector tails
        { [2, 3, 7], [7], false },       // no bias
        { [2, 5, 3, 4], [3, 4], true },  // multi-dim normalizedShape
        { [2, 3, 4], [2, 3, 4], false }, // the whole input is one row
        { [40, 1], [1], true },          // one element per row
        { [5], [5], true },              // no leading dims
    };

    // ---------------- tests ----------------

    [Theory, MemberData(nameof(Cases))]
    public void Forward_and_backward_match_the_float64_reference(int[] shape, int[] normalizedShape, bool bias)
    {
        int count = Product(shape), cols = Product(normalizedShape);
        var d = Make(count, cols, bias, count + cols);
        var e = Reference(d.X, d.Dy, cols, d.Alpha, d.W, d.B);
        Paths.ForEach(p =>
        {
            One<float>();
            One<double>();
            void One<T>() where T : unmanaged, IFloatingPointIeee754<T>
            {
                var tol = Tol.For<T>();
                var dyt = Layer<T>(normalizedShape, d);
                var y = new T[count]; var dx = new T[count];
                dyt.Forward(Check.Arr<T>(d.X), shape, y);
                dyt.Backward(Check.Arr<T>(d.Dy), Check.Arr<T>(d.X), shape, dx);
                string at = $"{typeof(T).Name} [{string.Join(",", shape)}] ({p})";
                Check.Close(e.Y, y, tol, $"y {at}");
                Check.Close(e.Dx, dx, tol, $"dx {at}");
                Check.Close([e.Dalpha], Grad(dyt, "alpha"), tol, $"dAlpha {at}");
                Check.Close(e.Dw, Grad(dyt, "weight"), tol, $"dWeight {at}");
                if (bias) Check.Close(e.Db, Grad(dyt, "bias"), tol, $"dBias {at}");
            }
        });
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Every_gradient_matches_finite_differences(bool bias)
    {
        int[] shape = [2, 3, 2, 4], ns = [2, 4];
        int count = Product(shape), cols = Product(ns);
        var d = Make(count, cols, bias, 50);
        double Loss(Inputs v)
        {
            var y = new double[count];
            Layer<double>(ns, v).Forward(v.X, shape, y);
            return Oracle.Dot(y, d.Dy);
        }
        var dyt = Layer<double>(ns, d);
        var dx = new double[count];
        dyt.Forward(d.X, shape, new double[count]);
        dyt.Backward(d.Dy, d.X, shape, dx);
        Check.Close(Oracle.NumericalGradient(v => Loss(d with { X = v }), d.X), dx, Tol.GradCheck, "dx");
        Check.Close(Oracle.NumericalGradient(v => Loss(d with { Alpha = v[0] }), [d.Alpha]), Grad(dyt, "alpha"), Tol.GradCheck, "dAlpha");
        Check.Close(Oracle.NumericalGradient(v => Loss(d with { W = v }), d.W), Grad(dyt, "weight"), Tol.GradCheck, "dWeight");
        if (bias) Check.Close(Oracle.NumericalGradient(v => Loss(d with { B = v }), d.B!), Grad(dyt, "bias"), Tol.GradCheck, "dBias");
    }

    [Fact]
    public void Multi_dim_normalized_shape_is_the_flattened_last_dim()
    {
        var d = Make(2 * 5 * 12, 12, true, 8);
        var multi = Layer<float>([3, 4], d);
        var flat = Layer<float>([12], d);
        float[] y1 = new float[d.X.Length], y2 = new float[d.X.Length], dx1 = new float[d.X.Length], dx2 = new float[d.X.Length];
        multi.Forward(Data.F(d.X), [2, 5, 3, 4], y1);
        multi.Backward(Data.F(d.Dy), Data.F(d.X), [2, 5, 3, 4], dx1);
        flat.Forward(Data.F(d.X), [10, 12], y2);
        flat.Backward(Data.F(d.Dy), Data.F(d.X), [10, 12], dx2);
        Check.BitEqual<float>(y1, y2, "y");
        Check.BitEqual<float>(dx1, dx2, "dx");
        foreach (var name in new[] { "alpha", "weight", "bias" }) Check.BitEqual<float>(Grad(multi, name), Grad(flat, name), "d" + name);
        Assert.Equal([3L, 4L], multi.Weight.Lengths.ToArray().Select(v => (long)v));
        Assert.Equal([3, 4], multi.NormalizedShape);
    }

    [Fact]
    public void Without_bias_there_is_no_bias_parameter()
    {
        var dyt = new DynamicTanh<double>(6, alphaInit: 0.8, bias: false);
        Assert.False(dyt.HasBias);
        Assert.Null(dyt.Bias); Assert.Null(dyt.BiasGrad);
        Assert.Equal(["alpha", "weight"], dyt.Tensors.Select(t => t.Name));
        var x = Data.Normal(4, 12);
        var y = new double[12];
        dyt.Forward(x, [2, 6], y);
        Check.Close(x.Select(v => Math.Tanh(0.8 * v)).ToArray(), y, Tol.F64, "y without bias");
    }

    [Fact]
    public void Parameters_follow_the_official_order_and_reset_restores_alpha()
    {
        // jiachenzhu/DyT dynamic_tanh.py registers alpha, weight, bias in this order.
        var dyt = new DynamicTanh<float>([2, 3], alphaInit: 0.25);
        Assert.Equal(["alpha", "weight", "bias"], dyt.Tensors.Select(t => t.Name));
        Assert.All(dyt.Tensors, t => Assert.True(t.IsParameter));
        Assert.Equal([1L], dyt.Alpha.Lengths.ToArray().Select(v => (long)v));
        Assert.Equal(0.25, dyt.AlphaInit);
        Assert.Equal([0.25f], Guard.Span(dyt.Alpha).ToArray());
        Assert.Equal(0.5f, Guard.Span(new DynamicTanh<float>(3).Alpha)[0]);
        foreach (var t in dyt.Tensors) Guard.Span(t.Value).Fill(7);
        dyt.ResetParameters();
        Assert.Equal([0.25f], Guard.Span(dyt.Alpha).ToArray());
        Assert.All(Guard.Span(dyt.Weight).ToArray(), v => Assert.Equal(1f, v));
        Assert.All(Guard.Span(dyt.Bias!).ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Eval_gives_the_bits_of_train()
    {
        var d = Make(6 * 10, 10, true, 2);
        var dyt = Layer<float>([10], d);
        float[] y1 = new float[60], y2 = new float[60], dx1 = new float[60], dx2 = new float[60];
        dyt.Forward(Data.F(d.X), [6, 10], y1);
        dyt.Backward(Data.F(d.Dy), Data.F(d.X), [6, 10], dx1);
        dyt.Eval();
        dyt.Forward(Data.F(d.X), [6, 10], y2);
        dyt.Backward(Data.F(d.Dy), Data.F(d.X), [6, 10], dx2);
        Check.BitEqual<float>(y1, y2, "y");
        Check.BitEqual<float>(dx1, dx2, "dx");
    }

    [Fact]
    public void Tensor_forward_and_backward_match_the_span_overloads()
    {
        var d = Make(4 * 8, 8, true, 6);
        var a = Layer<double>([8], d);
        var b = Layer<double>([8], d);
        var y = a.Forward(Tensor.Create(d.X, [4, 8]));
        var dx = a.Backward(Tensor.Create(d.Dy, [4, 8]));
        var ys = new double[32]; var dxs = new double[32];
        b.Forward(d.X, [4, 8], ys);
        b.Backward(d.Dy, d.X, [4, 8], dxs);
        Check.BitEqual<double>(ys, Guard.Span(y), "y");
        Check.BitEqual<double>(dxs, Guard.Span(dx), "dx");
        b.ZeroGrad();
        Assert.All(b.Tensors, t => Assert.All(Guard.Span(t.Grad!).ToArray(), v => Assert.Equal(0.0, v)));
    }

    [Fact]
    public void State_round_trips_through_safetensors()
    {
        string dir = Directory.CreateTempSubdirectory("normkit-dyt-").FullName;
        try
        {
            string path = Path.Combine(dir, "dyt.safetensors");
            var d = Make(3 * 6, 6, true, 12);
            var a = Layer<double>([6], d);
            StateDict.Save(path, ("blocks.0.norm1", (NormLayer<double>)a));
            var b = new DynamicTanh<double>(6);
            StateDict.Load(path, ("blocks.0.norm1", (NormLayer<double>)b));
            foreach (var t in a.Tensors)
                Check.BitEqual<double>(Guard.Span(t.Value), Guard.Span(b.Tensors.Single(u => u.Name == t.Name).Value), t.Name);
            var ya = new double[18]; var yb = new double[18];
            a.Forward(d.X, [3, 6], ya);
            b.Forward(d.X, [3, 6], yb);
            Check.BitEqual<double>(ya, yb, "y after load");
            Check.Close(Reference(d.X, d.Dy, 6, d.Alpha, d.W, d.B).Y, yb, Tol.F64, "y of the loaded layer against the reference");
            // Into float, as a checkpoint saved in float64 loads into a float32 model.
            var f = new DynamicTanh<float>(6);
            StateDict.Load(path, ("blocks.0.norm1", (NormLayer<float>)f));
            Assert.Equal((float)d.Alpha, Guard.Span(f.Alpha)[0]);
            // Without a bias the file's "bias" is unexpected in a strict load.
            Assert.Throws<InvalidDataException>(() => StateDict.Load(path, ("blocks.0.norm1", (NormLayer<double>)new DynamicTanh<double>(6, bias: false))));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Bad_arguments_name_argument_expected_and_actual_and_change_nothing()
    {
        var e1 = Assert.Throws<ArgumentOutOfRangeException>(() => new DynamicTanh<float>(4, alphaInit: double.NaN));
        Assert.Equal("alphaInit", e1.ParamName); Assert.Contains("finite", e1.Message); Assert.Contains("NaN", e1.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new DynamicTanh<float>(4, alphaInit: double.PositiveInfinity));
        var e2 = Assert.Throws<ArgumentException>(() => new DynamicTanh<float>(Array.Empty<int>()));
        Assert.Equal("normalizedShape", e2.ParamName); Assert.Contains("at least one dimension", e2.Message);
        Assert.Contains("[3, 0]", Assert.Throws<ArgumentException>(() => new DynamicTanh<float>([3, 0])).Message);
        Assert.Throws<ArgumentNullException>(() => new DynamicTanh<float>(null!));
        Assert.Throws<NotSupportedException>(() => new DynamicTanh<Half>(4));

        var d = Make(2 * 3 * 4, 12, true, 3);
        var dyt = Layer<float>([3, 4], d);
        var x = Data.F(d.X); var dy = Data.F(d.Dy);
        Assert.Throws<InvalidOperationException>(() => dyt.Backward(dy, x, [2, 3, 4], new float[24]));
        var dx = new float[24];
        dyt.Forward(x, [2, 3, 4], new float[24]);
        dyt.Backward(dy, x, [2, 3, 4], dx);
        var state = dyt.Tensors.Select(t => (Guard.Span(t.Value).ToArray(), Guard.Span(t.Grad!).ToArray())).ToArray();

        var s = Assert.Throws<ArgumentException>(() => dyt.Forward(Tensor.Create(new float[24], [2, 4, 3])));
        Assert.Equal("inputShape", s.ParamName);
        Assert.Contains("expected input with shape [*, 3, 4], but got input of size [2, 4, 3]", s.Message);
        var len = Assert.Throws<ArgumentException>(() => dyt.Forward(x, [2, 3, 4], new float[23]));
        Assert.Equal("output", len.ParamName); Assert.Contains("needs 24", len.Message);
        var ov = Assert.Throws<ArgumentException>(() => dyt.Backward(dy, x, [2, 3, 4], dy));
        Assert.Equal("gradInput", ov.ParamName); Assert.Contains("overlaps", ov.Message);
        var bs = Assert.Throws<ArgumentException>(() => dyt.Backward(new float[12], new float[12], [1, 3, 4], new float[12]));
        Assert.Contains("[2, 3, 4]", bs.Message);

        for (int i = 0; i < state.Length; i++)
        {
            Assert.Equal(state[i].Item1, Guard.Span(dyt.Tensors[i].Value).ToArray());
            Assert.Equal(state[i].Item2, Guard.Span(dyt.Tensors[i].Grad!).ToArray());
        }
        Assert.Equal(dy, Data.F(d.Dy));   // the overlapping call wrote nothing
    }

    [Fact]
    public void Any_thread_count_gives_the_same_bits()
    {
        // 2048 rows of 96: many forward chunks and the most backward blocks, merged in order.
        // In double too: a change of summation order that rounding to float hides shows in double's last bits.
        int rows = 2048, cols = 96;
        var d = Make(rows * cols, cols, true, 17);
        Same<float>(); Same<double>();
        void Same<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            (T[], T[], T[][]) Run(int threads)
            {
                var dyt = Layer<T>([cols], d);
                var y = new T[rows * cols]; var dx = new T[rows * cols];
                Paths.WithThreads(threads, () =>
                {
                    dyt.Forward(Check.Arr<T>(d.X), [rows, cols], y);
                    dyt.Backward(Check.Arr<T>(d.Dy), Check.Arr<T>(d.X), [rows, cols], dx);
                });
                return (y, dx, dyt.Tensors.Select(t => Guard.Span(t.Grad!).ToArray()).ToArray());
            }
            Paths.SameBitsOnAnyThreadCount<T>(Run);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Span_forward_and_backward_allocate_nothing(int threads)
    {
        var x = Data.F(Data.Normal(1, 64 * 768));
        var dy = Data.F(Data.Normal(2, x.Length));
        var y = new float[x.Length]; var dx = new float[x.Length];
        var dyt = new DynamicTanh<float>(768);
        var noBias = new DynamicTanh<float>(768, bias: false);
        Paths.WithThreads(threads, () =>
        {
            Assert.Equal(0, AllocationTests.Allocated(() => dyt.Forward(x, [64, 768], y)));
            Assert.Equal(0, AllocationTests.Allocated(() => dyt.Backward(dy, x, [64, 768], dx)));
            Assert.Equal(0, AllocationTests.Allocated(() => noBias.Forward(x, [64, 768], y)));
            Assert.Equal(0, AllocationTests.Allocated(() => noBias.Backward(dy, x, [64, 768], dx)));
        });
    }
}
