using System.Numerics.Tensors;
using NormKit.Layers;
using NormKit.Serialization;
using NormKit.Tests.Support;
using Xunit.Abstractions;

namespace NormKit.Tests;

/// <summary>
/// State saved by real PyTorch (tests/fixtures/pytorch, made by make_fixtures.py) loads into
/// NormKit's layers and gives PyTorch's outputs and gradients, in training and eval; NormKit
/// saves the same keys, dtypes, shapes and values.
/// </summary>
// Fast, and touches every kernel: .ci/run runs it on every instruction-set leg.
[Trait("Category", "Interop")]
public sealed class PyTorchInteropTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _tmp = Directory.CreateTempSubdirectory("normkit-state-").FullName;

    // Compares at float32 tolerance and reports the largest absolute difference.
    private void Compare(SafeTensor expected, ReadOnlySpan<float> actual, string what)
    {
        var e = expected.ToDoubles();
        Check.Close(e, actual, Tol.F32, what);
        double worst = 0;
        for (int i = 0; i < e.Length; i++) worst = Math.Max(worst, Math.Abs(e[i] - actual[i]));
        output.WriteLine($"{what}: largest |difference| {worst:E2} over {e.Length} values");
    }
    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    private static string Fixtures() => Repo.Fixtures("pytorch");

    private static NormLayer<float> Make(string name) => name switch
    {
        "batchnorm1d" => new BatchNorm1d<float>(4),
        "batchnorm1d_3d" => new BatchNorm1d<float>(3, momentum: null),
        "batchnorm2d" => new BatchNorm2d<float>(3),
        "layernorm" => new LayerNorm<float>(6),
        "layernorm_2d" => new LayerNorm<float>([2, 3]),
        "groupnorm" => new GroupNorm<float>(2, 6),
        "instancenorm2d" => new InstanceNorm2d<float>(3, affine: true, trackRunningStats: true),
        "batchnorm3d" => new BatchNorm3d<float>(3),
        "batchnorm2d_channels_last" => new BatchNorm2d<float>(5, channelsLast: true),
        "groupnorm_noaffine" => new GroupNorm<float>(3, 6, affine: false),
        "instancenorm2d_noaffine" => new InstanceNorm2d<float>(3, trackRunningStats: true),
        "instancenorm1d" => new InstanceNorm1d<float>(4),
        _ => throw new ArgumentException(name),
    };

    public static TheoryData<string> Names() => new(["batchnorm1d", "batchnorm1d_3d", "batchnorm2d", "layernorm", "layernorm_2d", "groupnorm", "instancenorm2d",
        "batchnorm3d", "batchnorm2d_channels_last", "groupnorm_noaffine", "instancenorm2d_noaffine", "instancenorm1d"]);

    [Fact]
    public void Every_fixture_records_the_PyTorch_version_that_made_it()
    {
        var files = Directory.GetFiles(Fixtures(), "*.safetensors");
        Assert.True(files.Length >= 2 * Names().Count + 2, $"{files.Length} fixture files");
        foreach (var f in files)
        {
            var meta = SafeTensors.ReadFile(f).Metadata;
            Assert.True(meta.TryGetValue("torch", out var v) && v.Length > 0, $"{Path.GetFileName(f)} records no torch version");
        }
    }

    private static Tensor<float> T(SafeTensor t) => Tensor.Create(Data.F(t.ToDoubles()), t.Shape.Select(d => (nint)d).ToArray());

    private static LayerTensor<float>? Named(NormLayer<float> l, string name) => l.Tensors.FirstOrDefault(t => t.Name == name);

    [Theory, MemberData(nameof(Names))]
    public void PyTorch_state_loads_and_reproduces_training_and_eval(string name)
    {
        string dir = Fixtures();
        var io = SafeTensors.Read(Path.Combine(dir, $"{name}.io.safetensors"));
        var layer = Make(name);
        StateDict.Load(Path.Combine(dir, $"{name}.state.safetensors"), ("", layer));
        var state = SafeTensors.Read(Path.Combine(dir, $"{name}.state.safetensors"));
        if (state.TryGetValue("num_batches_tracked", out var nbt))
            Assert.Equal((long)nbt.ToDoubles()[0], ((TrackedChannelNorm<float>)layer).NumBatchesTracked);

        var y = layer.Forward(T(io["x"]));
        Compare(io["y_train"], Guard.Span(y), $"{name} training output");
        var dx = layer.Backward(T(io["dy"]));
        Compare(io["dx_train"], Guard.Span(dx), $"{name} input gradient");
        // Every gradient and buffer PyTorch recorded, and nothing PyTorch lacks.
        foreach (var t in layer.Tensors)
        {
            if (t.IsParameter) Compare(io[$"grad_{t.Name}"], Guard.Span(t.Grad!), $"{name} {t.Name} gradient");
            else Compare(io[$"after_{t.Name}"], Guard.Span(t.Value), $"{name} {t.Name} after training forward");
        }
        Assert.Equal(io.Keys.Count(k => k.StartsWith("grad_") || k.StartsWith("after_")), layer.Tensors.Count);
        layer.Eval();
        Compare(io["y_eval"], Guard.Span(layer.Forward(T(io["x"]))), $"{name} eval output");
    }

    [Theory, MemberData(nameof(Names))]
    public void NormKit_saves_what_PyTorch_saved(string name)
    {
        string source = Path.Combine(Fixtures(), $"{name}.state.safetensors");
        var layer = Make(name);
        StateDict.Load(source, ("", layer));
        string saved = Path.Combine(_tmp, "saved.safetensors");
        StateDict.Save(saved, ("", layer));
        var expected = SafeTensors.Read(source);
        var actual = SafeTensors.Read(saved);
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (key, e) in expected)
        {
            Assert.Equal(e.DType, actual[key].DType);
            Assert.Equal(e.Shape, actual[key].Shape);
            Assert.Equal(e.Bytes, actual[key].Bytes);
        }
    }

    [Fact]
    public void Prefixes_and_num_batches_tracked_forms()
    {
        var a = new BatchNorm1d<double>(2); var b = new LayerNorm<double>(3);
        a.Forward(new double[] { 1, 2, 3, 5 }, [2, 2], new double[4]);
        string path = Path.Combine(_tmp, "two.safetensors");
        StateDict.Save(path, ("block.0.norm", a), ("head", b));
        var keys = SafeTensors.Read(path).Keys.ToHashSet();
        Assert.Equal(new HashSet<string> { "block.0.norm.weight", "block.0.norm.bias", "block.0.norm.running_mean", "block.0.norm.running_var",
            "block.0.norm.num_batches_tracked", "head.weight", "head.bias" }, keys);
        var a2 = new BatchNorm1d<double>(2); var b2 = new LayerNorm<double>(3);
        StateDict.Load(path, ("block.0.norm", a2), ("head", b2));
        Assert.Equal(1, a2.NumBatchesTracked);
        Assert.Equal(Guard.Span(a.RunningVar!).ToArray(), Guard.Span(a2.RunningVar!).ToArray());

        // num_batches_tracked of shape [1], and absent (loads as 0).
        var st = SafeTensors.Read(path);
        SafeTensors.Write(path, st.Select(kv => (kv.Key, kv.Key.EndsWith("num_batches_tracked") ? kv.Value with { Shape = [1] } : kv.Value)));
        StateDict.Load(path, ("block.0.norm", a2), ("head", b2));
        Assert.Equal(1, a2.NumBatchesTracked);
        SafeTensors.Write(path, st.Where(kv => !kv.Key.EndsWith("num_batches_tracked")).Select(kv => (kv.Key, kv.Value)));
        StateDict.Load(path, ("block.0.norm", a2), ("head", b2));
        Assert.Equal(0, a2.NumBatchesTracked);
    }

    [Fact]
    public void Bad_files_give_clear_errors_and_change_nothing()
    {
        string good = Path.Combine(Fixtures(), "batchnorm2d.state.safetensors");
        byte[] bytes = File.ReadAllBytes(good);
        var bn = new BatchNorm2d<float>(3);
        var ln = new LayerNorm<float>(6);
        Guard.Span(ln.Weight!).Fill(7);
        float[] before = Guard.Span(bn.RunningVar!).ToArray();
        string Write(byte[] b) { string p = Path.Combine(_tmp, Guid.NewGuid() + ".safetensors"); File.WriteAllBytes(p, b); return p; }
        void Fails(string path, string fragment, params (string, NormLayer<float>)[] modules)
        {
            var e = Assert.Throws<InvalidDataException>(() => StateDict.Load(path, modules.Length > 0 ? modules : [("", bn)]));
            Assert.Contains(fragment, e.Message);
            Assert.Equal(before, Guard.Span(bn.RunningVar!).ToArray());
            Assert.Equal(0, bn.NumBatchesTracked);
            Assert.All(Guard.Span(ln.Weight!).ToArray(), v => Assert.Equal(7f, v));
        }
        Fails(Write(bytes[..5]), "truncated");
        Fails(Write(bytes[..(bytes.Length - 4)]), "truncated");
        var wrongLength = (byte[])bytes.Clone();
        BitConverter.GetBytes((ulong)bytes.Length).CopyTo(wrongLength, 0);
        Fails(Write(wrongLength), "wrong header length");
        var st = SafeTensors.Read(good);
        string Rewrite(Func<KeyValuePair<string, SafeTensor>, (string, SafeTensor)?> f)
        {
            string p = Path.Combine(_tmp, Guid.NewGuid() + ".safetensors");
            SafeTensors.Write(p, st.Select(f).Where(v => v != null).Select(v => v!.Value));
            return p;
        }
        Fails(Rewrite(kv => kv.Key == "bias" ? null : (kv.Key, kv.Value)), "missing key 'bias'");
        Fails(Rewrite(kv => (kv.Key == "bias" ? "biases" : kv.Key, kv.Value)), "missing key 'bias'");
        Fails(Rewrite(kv => kv.Key == "weight" ? (kv.Key, kv.Value with { Shape = [1, 3] }) : (kv.Key, kv.Value)), "key 'weight' has shape [1, 3] in the file but the layer expects [3]");
        var extra = Rewrite(kv => (kv.Key, kv.Value));
        SafeTensors.Write(extra, st.Select(kv => (kv.Key, kv.Value)).Append(("extra.weight", SafeTensors.FromFloats([1f], [1]))));
        Fails(extra, "unexpected key 'extra.weight'");
        var raw = System.Text.Encoding.UTF8.GetString(bytes);
        Fails(Write(System.Text.Encoding.UTF8.GetBytes(raw.Replace("\"F32\"", "\"Q32\""))), "unknown dtype 'Q32'");
        // All or nothing over several modules: the LayerNorm part is fine, the BatchNorm part is not.
        string both = Path.Combine(_tmp, "both.safetensors");
        StateDict.Save(both, ("a", (NormLayer<float>)new LayerNorm<float>(6)), ("b", new BatchNorm2d<float>(4)));
        Fails(both, "key 'b.weight' has shape [4] in the file but the layer expects [3]", ("a", ln), ("b", bn));
    }
}
