using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Layers;
using NormKit.Serialization;
using NormKit.Tests.Reference;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>
/// Filter Response Normalization with TLU against a float64 reference written here from the
/// paper's formulas (plain loops, no library code), finite differences for every gradient,
/// the two layouts, the learned eps, state files, validation, threads and allocations.
/// </summary>
[Collection("Threads")]
public class FilterResponseNormTests
{
    // ---------------- the reference, in double ----------------

    private sealed record Ref(double[] Z, double[] Dx, double[] Dw, double[] Db, double[] Dtau, double DepsTotal, double MinGap);

    /// <summary>
    /// nu2 = mean(x^2) over the S positions of (n, c); x_hat = x / sqrt(nu2 + eps); y = w x_hat + b;
    /// z = max(y, tau). Backward by the chain rule, the max's gradient to y where y &gt;= tau.
    /// </summary>
    private static Ref Reference(double[] x, double[] dz, int N, int C, int S, bool cl, double[] w, double[] b, double[]? tau, double eps)
    {
        var z = new double[x.Length]; var dx = new double[x.Length];
        var dw = new double[C]; var db = new double[C]; var dtau = new double[C];
        double deps = 0, gap = double.PositiveInfinity;
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++)
            {
                double q = 0;
                for (int s = 0; s < S; s++) { double v = x[Oracle.At(n, c, s, C, S, cl)]; q += v * v; }
                double nu2 = q / S, r = 1 / Math.Sqrt(nu2 + eps);
                var dxh = new double[S];
                double dot = 0;   // Σ dxhat * x_hat
                for (int s = 0; s < S; s++)
                {
                    int i = Oracle.At(n, c, s, C, S, cl);
                    double xh = x[i] * r, y = w[c] * xh + b[c];
                    z[i] = tau is null ? y : Math.Max(y, tau[c]);
                    double g = dz[i];
                    if (tau is not null)
                    {
                        gap = Math.Min(gap, Math.Abs(y - tau[c]));
                        if (y < tau[c]) { dtau[c] += g; g = 0; }
                    }
                    db[c] += g; dw[c] += g * xh;
                    dxh[s] = g * w[c];
                    dot += dxh[s] * xh;
                }
                for (int s = 0; s < S; s++)
                {
                    int i = Oracle.At(n, c, s, C, S, cl);
                    dx[i] = r * (dxh[s] - x[i] * r * dot / S);
                    deps += dxh[s] * -0.5 * x[i] * r * r * r;
                }
            }
        return new Ref(z, dx, dw, db, dtau, deps, gap);
    }

    // ---------------- helpers ----------------

    private static int[] Shape(int n, int c, int[] spatial, bool cl) => cl ? [n, .. spatial, c] : [n, c, .. spatial];

    private static void Set<T>(NormLayer<T> layer, string name, double[] values) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var t = layer.Tensors.Single(t => t.Name == name);
        Check.Arr<T>(values).CopyTo(Guard.Span(t.Value));
    }

    private static T[] Grad<T>(NormLayer<T> layer, string name) where T : unmanaged, IFloatingPointIeee754<T> =>
        Guard.Span(layer.Tensors.Single(t => t.Name == name).Grad!).ToArray();

    private sealed record Case(int N, int C, int[] Spatial, bool Cl, bool Tlu, bool Learned)
    {
        public int S => Spatial.Aggregate(1, (a, d) => a * d);
        public int Count => N * C * S;
        public override string ToString() => $"N={N} C={C} spatial=[{string.Join(",", Spatial)}] cl={Cl} tlu={Tlu} learned={Learned}";
    }

    // Inputs, parameters and a gradient; tau is set between the smallest and largest y of each
    // channel so that the TLU both passes and clips.
    private sealed record Inputs(double[] X, double[] Dz, double[] W, double[] B, double[]? Tau, double EpsLearned);

    private static Inputs Make(Case k, int seed)
    {
        var x = Data.RoundToFloat(Data.Normal(seed, k.Count, 0.3, 1.5));
        var dz = Data.RoundToFloat(Data.Normal(seed + 1, k.Count));
        var w = Data.RoundToFloat(Data.Normal(seed + 2, k.C, 1, 0.3));
        var b = Data.RoundToFloat(Data.Normal(seed + 3, k.C, 0, 0.5));
        double[]? tau = k.Tlu ? Data.RoundToFloat(Data.Normal(seed + 4, k.C, -0.2, 0.3)) : null;
        return new Inputs(x, dz, w, b, tau, k.Learned ? 0.03125 : 0);   // an exact binary fraction: the same in float
    }

    private static FilterResponseNorm<T> Layer<T>(Case k, Inputs d, double eps) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var frn = new FilterResponseNorm<T>(k.C, eps, learnedEps: k.Learned, tlu: k.Tlu, channelsLast: k.Cl);
        Set(frn, "weight", d.W); Set(frn, "bias", d.B);
        if (k.Tlu) Set(frn, "tau", d.Tau!);
        if (k.Learned) Set(frn, "eps", [d.EpsLearned]);
        return frn;
    }

    public static TheoryData<int, int, int[], bool, bool, bool> Cases()
    {
        var d = new TheoryData<int, int, int[], bool, bool, bool>();
        foreach (bool cl in new[] { false, true })
        {
            d.Add(2, 3, [5], cl, true, false);
            d.Add(2, 4, [3, 5], cl, true, true);
            d.Add(3, 5, [], cl, true, true);          // rank 2: one value per plane
            d.Add(2, 6, [4, 4], cl, false, false);    // no TLU
            d.Add(2, 17, [3, 11], cl, true, false);   // odd sizes: vector tails
            d.Add(1, 8, [1, 1], cl, true, true);      // 1x1 maps
            d.Add(2, 3, [2, 3, 2], cl, true, false);  // rank 5
        }
        return d;
    }

    // ---------------- tests ----------------

    [Theory, MemberData(nameof(Cases))]
    public void Forward_and_backward_match_the_float64_reference(int n, int c, int[] spatial, bool cl, bool tlu, bool learned)
    {
        var k = new Case(n, c, spatial, cl, tlu, learned);
        var d = Make(k, 10 * n + c);
        const double eps = 1e-6;
        var e = Reference(d.X, d.Dz, n, c, k.S, cl, d.W, d.B, d.Tau, eps + d.EpsLearned);
        int[] shape = Shape(n, c, spatial, cl);
        Paths.ForEach(p =>
        {
            One<float>();
            One<double>();
            void One<T>() where T : unmanaged, IFloatingPointIeee754<T>
            {
                var tol = Tol.For<T>();
                var frn = Layer<T>(k, d, eps);
                var z = new T[k.Count]; var dx = new T[k.Count];
                frn.Forward(Check.Arr<T>(d.X), shape, z);
                frn.Backward(Check.Arr<T>(d.Dz), Check.Arr<T>(d.X), shape, dx);
                string at = $"{typeof(T).Name} {k} ({p})";
                Check.Close(e.Z, z, tol, $"z {at}");
                Check.Close(e.Dx, dx, tol, $"dx {at}");
                Check.Close(e.Dw, Grad(frn, "weight"), tol, $"dWeight {at}");
                Check.Close(e.Db, Grad(frn, "bias"), tol, $"dBias {at}");
                if (tlu) Check.Close(e.Dtau, Grad(frn, "tau"), tol, $"dTau {at}");
                if (learned) Check.Close([e.DepsTotal], Grad(frn, "eps"), tol, $"dEps {at}");
            }
        });
    }

    [Theory]
    [InlineData(2, 3, new[] { 2, 3 }, false)]
    [InlineData(2, 3, new[] { 2, 3 }, true)]
    [InlineData(4, 3, new int[0], false)]   // rank 2, where the learned eps matters most
    public void Every_gradient_matches_finite_differences(int n, int c, int[] spatial, bool cl)
    {
        var k = new Case(n, c, spatial, cl, Tlu: true, Learned: true);
        var d = Make(k, 40 + n);
        const double eps = 1e-6;
        // Away from the TLU's kink: a step of 1e-6 must not cross it.
        Assert.True(Reference(d.X, d.Dz, n, c, k.S, cl, d.W, d.B, d.Tau, eps + d.EpsLearned).MinGap > 1e-3, "a test point lies on the TLU's kink");
        int[] shape = Shape(n, c, spatial, cl);

        double Loss(double[] x, double[] w, double[] b, double[] tau, double epsLearned)
        {
            var frn = Layer<double>(k, d with { W = w, B = b, Tau = tau, EpsLearned = epsLearned }, eps);
            var z = new double[x.Length];
            frn.Forward(x, shape, z);
            return Oracle.Dot(z, d.Dz);
        }

        var layer = Layer<double>(k, d, eps);
        var dx = new double[k.Count];
        layer.Forward(d.X, shape, new double[k.Count]);
        layer.Backward(d.Dz, d.X, shape, dx);
        var tau0 = d.Tau!;
        Check.Close(Oracle.NumericalGradient(v => Loss(v, d.W, d.B, tau0, d.EpsLearned), d.X), dx, Tol.GradCheck, "dx");
        Check.Close(Oracle.NumericalGradient(v => Loss(d.X, v, d.B, tau0, d.EpsLearned), d.W), Grad(layer, "weight"), Tol.GradCheck, "dWeight");
        Check.Close(Oracle.NumericalGradient(v => Loss(d.X, d.W, v, tau0, d.EpsLearned), d.B), Grad(layer, "bias"), Tol.GradCheck, "dBias");
        Check.Close(Oracle.NumericalGradient(v => Loss(d.X, d.W, d.B, v, d.EpsLearned), tau0), Grad(layer, "tau"), Tol.GradCheck, "dTau");
        Check.Close(Oracle.NumericalGradient(v => Loss(d.X, d.W, d.B, tau0, v[0]), [d.EpsLearned]), Grad(layer, "eps"), Tol.GradCheck, "dEps");

        // A negative learned eps: |eps_learned| enters the forward, so its gradient changes sign.
        var neg = Layer<double>(k, d with { EpsLearned = -d.EpsLearned }, eps);
        neg.Forward(d.X, shape, new double[k.Count]);
        neg.Backward(d.Dz, d.X, shape, new double[k.Count]);
        Check.Close(Oracle.NumericalGradient(v => Loss(d.X, d.W, d.B, tau0, v[0]), [-d.EpsLearned]), Grad(neg, "eps"), Tol.GradCheck, "dEps at a negative eps_learned");
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public void Channels_last_gives_the_numbers_of_channels_first(bool tlu, bool learned)
    {
        const int n = 3, c = 5, h = 4, w = 6, s = h * w;
        var k = new Case(n, c, [h, w], false, tlu, learned);
        var d = Make(k, 77);
        var dzFirst = d.Dz;
        // The same tensor in (N, H, W, C).
        var xLast = new double[k.Count]; var dzLast = new double[k.Count];
        for (int a = 0; a < n; a++) for (int ch = 0; ch < c; ch++) for (int p = 0; p < s; p++)
                {
                    xLast[Oracle.At(a, ch, p, c, s, true)] = d.X[Oracle.At(a, ch, p, c, s, false)];
                    dzLast[Oracle.At(a, ch, p, c, s, true)] = dzFirst[Oracle.At(a, ch, p, c, s, false)];
                }
        Run<float>(); Run<double>();
        void Run<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            var first = Layer<T>(k, d, 1e-6);
            var last = Layer<T>(k with { Cl = true }, d, 1e-6);
            var z1 = new T[k.Count]; var dx1 = new T[k.Count]; var z2 = new T[k.Count]; var dx2 = new T[k.Count];
            first.Forward(Check.Arr<T>(d.X), [n, c, h, w], z1);
            first.Backward(Check.Arr<T>(dzFirst), Check.Arr<T>(d.X), [n, c, h, w], dx1);
            last.Forward(Check.Arr<T>(xLast), [n, h, w, c], z2);
            last.Backward(Check.Arr<T>(dzLast), Check.Arr<T>(xLast), [n, h, w, c], dx2);
            var z2First = new double[k.Count]; var dx2First = new double[k.Count];
            for (int a = 0; a < n; a++) for (int ch = 0; ch < c; ch++) for (int p = 0; p < s; p++)
                    {
                        z2First[Oracle.At(a, ch, p, c, s, false)] = Check.ToDouble(z2[Oracle.At(a, ch, p, c, s, true)]);
                        dx2First[Oracle.At(a, ch, p, c, s, false)] = Check.ToDouble(dx2[Oracle.At(a, ch, p, c, s, true)]);
                    }
            var tol = Tol.For<T>();
            Check.Close(z2First, z1, tol, $"{typeof(T).Name} z");
            Check.Close(dx2First, dx1, tol, $"{typeof(T).Name} dx");
            foreach (var t in first.Tensors)
                Check.Close(Grad(last, t.Name).Select(v => Check.ToDouble(v)).ToArray(), Grad(first, t.Name), tol, $"{typeof(T).Name} d{t.Name}");
        }
    }

    [Fact]
    public void Rank_2_input_uses_the_learned_eps()
    {
        // A fully connected layer's output: each (n, c) is one value, x_hat = x / sqrt(x^2 + eps_total).
        const int n = 6, c = 4;
        var x = Data.RoundToFloat(Data.Normal(5, n * c, 0, 0.05));   // small activations, where eps decides
        var frn = new FilterResponseNorm<double>(c, learnedEps: true, tlu: false);
        Assert.Equal(1e-4, Guard.Span(frn.EpsLearned!)[0]);
        Assert.Equal(1e-6 + 1e-4, frn.EpsTotal, 15);
        var z = new double[x.Length];
        frn.Forward(x, [n, c], z);
        for (int i = 0; i < x.Length; i++)
            Assert.Equal(x[i] / Math.Sqrt(x[i] * x[i] + 1e-6 + 1e-4), z[i], 14);
        // Without the learned eps the same input is squashed towards sign(x).
        var plain = new FilterResponseNorm<double>(c, tlu: false);
        var zp = new double[x.Length];
        plain.Forward(x, [n, c], zp);
        Assert.True(zp.Zip(z).Any(t => Math.Abs(t.First - t.Second) > 0.01), "the learned eps changed nothing");
        // And training moves it: its gradient is non-zero.
        frn.Backward(Data.Normal(6, x.Length), x, [n, c], new double[x.Length]);
        Assert.NotEqual(0.0, Guard.Span(frn.EpsLearnedGrad!)[0]);
    }

    [Fact]
    public void Rank_2_gradient_keeps_its_digits_when_eps_is_small()
    {
        // One value per plane: dx = w eps (x^2 + eps)^(-3/2) dy, some eps / x^2 = 1e-6 of the two
        // terms the general formula subtracts. Checked relative to dx itself (no atol), tighter than Tol.F32.
        const int n = 8, c = 3;
        var x = Data.RoundToFloat(Data.Normal(7, n * c, 0, 1).Select(v => v + Math.Sign(v) * 0.5).ToArray());
        var dz = Data.RoundToFloat(Data.Normal(8, n * c));
        double[] w = [1, 0.5, 2], b = [0, 0, 0];
        var e = Reference(x, dz, n, c, 1, false, w, b, null, 1e-6);
        var frn = new FilterResponseNorm<float>(c, tlu: false);
        Set(frn, "weight", w);
        var dx = new float[n * c];
        frn.Forward(Data.F(x), [n, c], new float[n * c]);
        frn.Backward(Data.F(dz), Data.F(x), [n, c], dx);
        Check.Close(e.Dx, dx, new Tol(1e-5, 0), "dx");
    }

    [Fact]
    public void Eval_gives_the_bits_of_train()
    {
        var k = new Case(2, 4, [3, 3], false, true, true);
        var d = Make(k, 3);
        var frn = Layer<float>(k, d, 1e-6);
        var x = Data.F(d.X); var dz = Data.F(d.Dz);
        float[] z1 = new float[k.Count], z2 = new float[k.Count], dx1 = new float[k.Count], dx2 = new float[k.Count];
        frn.Forward(x, [2, 4, 3, 3], z1);
        frn.Backward(dz, x, [2, 4, 3, 3], dx1);
        frn.Eval();
        Assert.False(frn.Training);
        frn.Forward(x, [2, 4, 3, 3], z2);
        frn.Backward(dz, x, [2, 4, 3, 3], dx2);
        Check.BitEqual<float>(z1, z2, "z");
        Check.BitEqual<float>(dx1, dx2, "dx");
    }

    [Fact]
    public void Parameters_have_TF_Addons_roles_under_their_state_dict_names()
    {
        Assert.Equal(["weight", "bias", "tau"], new FilterResponseNorm<float>(3).Tensors.Select(t => t.Name));
        Assert.Equal(["weight", "bias", "tau", "eps"], new FilterResponseNorm<float>(3, learnedEps: true).Tensors.Select(t => t.Name));
        Assert.Equal(["weight", "bias"], new FilterResponseNorm<float>(3, tlu: false).Tensors.Select(t => t.Name));
        var frn = new FilterResponseNorm<float>(3, learnedEps: true);
        Assert.All(frn.Tensors, t => Assert.True(t.IsParameter));
        Assert.Equal([1L], frn.EpsLearned!.Lengths.ToArray().Select(v => (long)v));
        Assert.Equal(1e-6, frn.Eps);
        // ResetParameters: gamma 1, beta 0, tau 0, eps_learned 1e-4.
        foreach (var t in frn.Tensors) Guard.Span(t.Value).Fill(7);
        frn.ResetParameters();
        Assert.Equal([1f, 1f, 1f], Guard.Span(frn.Weight!).ToArray());
        Assert.Equal([0f, 0f, 0f], Guard.Span(frn.Bias!).ToArray());
        Assert.Equal([0f, 0f, 0f], Guard.Span(frn.Tau!).ToArray());
        Assert.Equal([1e-4f], Guard.Span(frn.EpsLearned!).ToArray());
    }

    [Fact]
    public void State_round_trips_through_safetensors()
    {
        string dir = Directory.CreateTempSubdirectory("normkit-frn-").FullName;
        try
        {
            string path = Path.Combine(dir, "frn.safetensors");
            var k = new Case(2, 5, [2, 2], false, true, true);
            var d = Make(k, 9);
            var a = Layer<float>(k, d, 1e-6);
            StateDict.Save(path, ("block.norm", (NormLayer<float>)a));
            var b = new FilterResponseNorm<float>(5, learnedEps: true);
            StateDict.Load(path, ("block.norm", (NormLayer<float>)b));
            foreach (var t in a.Tensors)
                Check.BitEqual<float>(Guard.Span(t.Value), Guard.Span(b.Tensors.Single(u => u.Name == t.Name).Value), t.Name);
            var x = Data.F(d.X);
            float[] za = new float[k.Count], zb = new float[k.Count];
            a.Forward(x, [2, 5, 2, 2], za);
            b.Forward(x, [2, 5, 2, 2], zb);
            Check.BitEqual<float>(za, zb, "z after load");
            Check.Close(Reference(d.X, d.Dz, 2, 5, 4, false, d.W, d.B, d.Tau, 1e-6 + d.EpsLearned).Z, zb, Tol.F32, "z of the loaded layer against the reference");
            // A layer without the learned eps does not take the file strictly: "eps" is unexpected.
            Assert.Throws<InvalidDataException>(() => StateDict.Load(path, ("block.norm", (NormLayer<float>)new FilterResponseNorm<float>(5))));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Bad_arguments_name_argument_expected_and_actual_and_change_nothing()
    {
        var e1 = Assert.Throws<ArgumentOutOfRangeException>(() => new FilterResponseNorm<float>(0));
        Assert.Equal("numFeatures", e1.ParamName); Assert.Contains("must be > 0 but was 0", e1.Message);
        var e2 = Assert.Throws<ArgumentOutOfRangeException>(() => new FilterResponseNorm<float>(4, eps: double.NaN));
        Assert.Equal("eps", e2.ParamName); Assert.Contains("NaN", e2.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new FilterResponseNorm<float>(4, eps: 0));

        var k = new Case(2, 4, [3], false, true, true);
        var d = Make(k, 21);
        var frn = Layer<float>(k, d, 1e-6);
        var x = Data.F(d.X); var dz = Data.F(d.Dz);
        var e3 = Assert.Throws<InvalidOperationException>(() => frn.Backward(dz, x, [2, 4, 3], new float[k.Count]));
        Assert.Contains("without a matching Forward", e3.Message);
        var z = new float[k.Count]; var dx = new float[k.Count];
        frn.Forward(x, [2, 4, 3], z);
        frn.Backward(dz, x, [2, 4, 3], dx);
        var state = frn.Tensors.Select(t => (Guard.Span(t.Value).ToArray(), Guard.Span(t.Grad!).ToArray())).ToArray();

        var r = Assert.Throws<ArgumentException>(() => frn.Forward(Tensor.Create(new float[8], [8])));
        Assert.Equal("input", r.ParamName); Assert.Contains("rank >= 2", r.Message); Assert.Contains("[8]", r.Message);
        var ch = Assert.Throws<ArgumentException>(() => frn.Forward(Tensor.Create(new float[2 * 5 * 3], [2, 5, 3])));
        Assert.Contains("5 channels", ch.Message); Assert.Contains("NumFeatures = 4", ch.Message);
        var last = new FilterResponseNorm<float>(4, channelsLast: true);
        var cl = Assert.Throws<ArgumentException>(() => last.Forward(Tensor.Create(new float[2 * 4 * 3], [2, 4, 3])));
        Assert.Contains("3 channels", cl.Message); Assert.Contains("(N, *spatial, C)", last.GetType().GetProperty("ExpectedShape",
            System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(last) as string);
        var len = Assert.Throws<ArgumentException>(() => frn.Forward(x, [2, 4, 3], new float[k.Count - 1]));
        Assert.Equal("output", len.ParamName); Assert.Contains($"needs {k.Count}", len.Message);
        Assert.Throws<ArgumentException>(() => frn.Forward(new float[10 * 4 * 3], [10, 4, 3], new float[10]));   // would grow the buffers
        var bs = Assert.Throws<ArgumentException>(() => frn.Backward(dz, x, [4, 4, 3], new float[k.Count]));
        Assert.Contains("[2, 4, 3]", bs.Message);

        // Nothing changed: parameters, gradients and the saved statistics of the last good forward.
        for (int i = 0; i < state.Length; i++)
        {
            Assert.Equal(state[i].Item1, Guard.Span(frn.Tensors[i].Value).ToArray());
            Assert.Equal(state[i].Item2, Guard.Span(frn.Tensors[i].Grad!).ToArray());
        }
        frn.ZeroGrad();
        var dx2 = new float[k.Count];
        frn.Backward(dz, x, [2, 4, 3], dx2);
        Check.BitEqual<float>(dx, dx2, "dx after failed calls");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Any_thread_count_gives_the_same_bits(bool cl)
    {
        // Enough planes and rows for many chunks of every pass. In double too: a change of
        // summation order that rounding to float hides shows in double's last bits.
        var k = new Case(8, 24, [20, 20], cl, true, true);
        var d = Make(k, 31);
        int[] shape = Shape(8, 24, [20, 20], cl);
        Same<float>(); Same<double>();
        void Same<T>() where T : unmanaged, IFloatingPointIeee754<T>
        {
            (T[], T[], T[][]) Run(int threads)
            {
                var frn = Layer<T>(k, d, 1e-6);
                var z = new T[k.Count]; var dx = new T[k.Count];
                Paths.WithThreads(threads, () =>
                {
                    frn.Forward(Check.Arr<T>(d.X), shape, z);
                    frn.Backward(Check.Arr<T>(d.Dz), Check.Arr<T>(d.X), shape, dx);
                });
                return (z, dx, frn.Tensors.Select(t => Guard.Span(t.Grad!).ToArray()).ToArray());
            }
            Paths.SameBitsOnAnyThreadCount<T>(Run, "z");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Span_forward_and_backward_allocate_nothing(int threads)
    {
        var x = Data.F(Data.Normal(1, 8 * 16 * 24 * 16));
        var dy = Data.F(Data.Normal(2, x.Length));
        var y = new float[x.Length]; var dx = new float[x.Length];
        var first = new FilterResponseNorm<float>(16, learnedEps: true);
        var last = new FilterResponseNorm<float>(16, channelsLast: true);
        var fc = new FilterResponseNorm<float>(16, learnedEps: true);
        Paths.WithThreads(threads, () =>
        {
            Assert.Equal(0, AllocationTests.Allocated(() => first.Forward(x, [8, 16, 24, 16], y)));
            Assert.Equal(0, AllocationTests.Allocated(() => first.Backward(dy, x, [8, 16, 24, 16], dx)));
            Assert.Equal(0, AllocationTests.Allocated(() => last.Forward(x, [8, 24, 16, 16], y)));
            Assert.Equal(0, AllocationTests.Allocated(() => last.Backward(dy, x, [8, 24, 16, 16], dx)));
            Assert.Equal(0, AllocationTests.Allocated(() => fc.Forward(x, [x.Length / 16, 16], y)));
            Assert.Equal(0, AllocationTests.Allocated(() => fc.Backward(dy, x, [x.Length / 16, 16], dx)));
        });
    }
}
