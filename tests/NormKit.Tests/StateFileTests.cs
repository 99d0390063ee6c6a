using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Text;
using NormKit.Layers;
using NormKit.Serialization;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>
/// State files that cannot load garbage: the data layout checked as the reference reader does,
/// every malformed header an InvalidDataException naming the file, values checked, NormKit's
/// SHA-256 verified; and loading part of a real PyTorch checkpoint.
/// </summary>
[Trait("Category", "Interop")]
public sealed class StateFileTests : IDisposable
{
    private readonly string _tmp = Directory.CreateTempSubdirectory("normkit-statefile-").FullName;
    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    private string NewPath() => Path.Combine(_tmp, Guid.NewGuid().ToString("N") + ".safetensors");

    private string Write(byte[] bytes) { string p = NewPath(); File.WriteAllBytes(p, bytes); return p; }

    // A trained BatchNorm2d(8): every state tensor holds distinct values.
    private static BatchNorm2d<float> Trained()
    {
        var bn = new BatchNorm2d<float>(8);
        Data.F(Data.Normal(3, 8, 1, 0.2)).CopyTo(Guard.Span(bn.Weight!));
        Data.F(Data.Normal(4, 8)).CopyTo(Guard.Span(bn.Bias!));
        bn.Forward(Tensor.Create(Data.F(Data.Normal(5, 4 * 8 * 9, 2, 3)), [4, 8, 3, 3]));
        return bn;
    }

    private static float[][] State(BatchNorm2d<float> bn) =>
        [Guard.Span(bn.Weight!).ToArray(), Guard.Span(bn.Bias!).ToArray(), Guard.Span(bn.RunningMean!).ToArray(), Guard.Span(bn.RunningVar!).ToArray(), [bn.NumBatchesTracked]];

    // Loading must throw InvalidDataException with every fragment and leave the layer as it was.
    private static InvalidDataException Refused(string path, params string[] fragments) => Refused(path, StateDictLoadOptions.Default, fragments);

    private static InvalidDataException Refused(string path, StateDictLoadOptions options, params string[] fragments)
    {
        var bn = Trained();
        var before = State(bn);
        var e = Assert.Throws<InvalidDataException>(() => StateDict.Load(path, options, ("", (NormLayer<float>)bn)));
        foreach (var f in fragments) Assert.Contains(f, e.Message);
        var after = State(bn);
        for (int k = 0; k < before.Length; k++) Assert.Equal(before[k], after[k]);
        return e;
    }

    [Fact]
    public void A_header_length_a_few_bytes_off_is_refused_and_names_the_file_and_a_key()
    {
        string good = NewPath();
        StateDict.Save(good, ("", (NormLayer<float>)Trained()));
        byte[] bytes = File.ReadAllBytes(good);
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        int padding = n - Encoding.UTF8.GetString(bytes, 8, n).TrimEnd(' ').Length;
        for (int delta = -7; delta <= 7; delta++)
        {
            if (delta == 0) continue;
            var b = (byte[])bytes.Clone();
            BinaryPrimitives.WriteUInt64LittleEndian(b, (ulong)(n + delta));
            string path = Write(b);
            var e = Refused(path, path);
            // Shorter by no more than the padding, the JSON still parses: the layout check refuses it and names the last tensor.
            if (delta < 0 && -delta <= padding) Assert.Contains("'num_batches_tracked'", e.Message);
        }
    }

    [Fact]
    public void Invalid_UTF8_in_a_tensor_name_is_InvalidDataException_naming_the_file()
    {
        var header = new List<byte>();
        header.AddRange("{\"w"u8.ToArray());
        header.Add(0xFF);   // never valid in UTF-8
        header.AddRange("\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"u8.ToArray());
        while (header.Count % 8 != 0) header.Add((byte)' ');
        var file = new byte[8 + header.Count + 4];
        BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)header.Count);
        header.CopyTo(file, 8);
        string path = Write(file);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("malformed", e.Message);
        Refused(path, path);
    }

    [Fact]
    public void Malformed_headers_are_all_InvalidDataException()
    {
        string[] headers =
        [
            "[1, 2]",
            "{\"w\": 5}",
            "{\"w\": {\"dtype\": 3, \"shape\": [1], \"data_offsets\": [0, 4]}}",
            "{\"w\": {\"dtype\": \"F32\", \"shape\": [\"a\"], \"data_offsets\": [0, 4]}}",
            "{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}",
            "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 99999999999999999999]}}",
            "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}",
            "{\"w\": {\"dtype\": \"F32\", \"shape\": [2147483647, 2147483647, 2147483647], \"data_offsets\": [0, 4]}}",
            "{\"__metadata__\": {\"a\": 1}, \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
            "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
            "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"v\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [2, 6]}}",
            "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
        ];
        foreach (string h in headers)
        {
            byte[] json = Encoding.UTF8.GetBytes(h);
            var file = new byte[8 + json.Length + 8];
            BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)json.Length);
            json.CopyTo(file, 8);
            var e = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(file, "the test file"));
            Assert.StartsWith("the test file: ", e.Message);
        }
    }

    [Fact]
    public void NormKit_files_carry_a_SHA256_that_catches_a_flipped_bit()
    {
        string path = NewPath();
        StateDict.Save(path, ("", (NormLayer<float>)Trained()));
        var meta = SafeTensors.ReadFile(path).Metadata;
        Assert.Equal(64, meta[SafeTensors.ChecksumKey].Length);
        Assert.Equal("pt", meta["format"]);
        byte[] bytes = File.ReadAllBytes(path);
        // The lowest mantissa bit of the first weight (the first tensor): a value that still looks valid.
        static void FlipFirstDataBit(byte[] file) => file[8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(file)] ^= 1;
        FlipFirstDataBit(bytes);
        Refused(Write(bytes), "SHA-256", SafeTensors.ChecksumKey);
        // Without a checksum (as PyTorch writes files), the same flipped bytes load: the checksum is what caught it.
        string plain = NewPath();
        WriteWithoutChecksum(plain, SafeTensors.Read(path));
        byte[] plainBytes = File.ReadAllBytes(plain);
        FlipFirstDataBit(plainBytes);
        File.WriteAllBytes(plain, plainBytes);
        var bn = new BatchNorm2d<float>(8);
        StateDict.Load(plain, ("", (NormLayer<float>)bn));
        Assert.Equal(BitConverter.SingleToInt32Bits(Trained().Weight![0]) ^ 1, BitConverter.SingleToInt32Bits(bn.Weight![0]));
    }

    // A safetensors file as PyTorch's writers make it: no NormKit checksum in the metadata.
    private static void WriteWithoutChecksum(string path, Dictionary<string, SafeTensor> tensors)
    {
        var header = new Dictionary<string, object>();
        long offset = 0;
        foreach (var (k, t) in tensors)
        {
            header[k] = new { dtype = t.DType, shape = t.Shape, data_offsets = new[] { offset, offset + t.Bytes.Length } };
            offset += t.Bytes.Length;
        }
        byte[] json = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(header);
        using var f = File.Create(path);
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)json.Length);
        f.Write(len);
        f.Write(json);
        foreach (var t in tensors.Values) f.Write(t.Bytes);
    }

    [Fact]
    public void Values_no_layer_holds_are_refused_with_key_and_index_unless_validation_is_off()
    {
        string good = NewPath();
        StateDict.Save(good, ("", (NormLayer<float>)Trained()));
        var st = SafeTensors.Read(good);
        string With(string key, SafeTensor t)
        {
            string p = NewPath();
            SafeTensors.Write(p, st.Select(kv => (kv.Key, kv.Key == key ? t : kv.Value)));
            return p;
        }
        float[] Values(string key, int index, float value) { var v = st[key].ToDoubles().Select(d => (float)d).ToArray(); v[index] = value; return v; }
        string nanWeight = With("weight", SafeTensors.FromFloats(Values("weight", 3, float.NaN), [8]));
        Refused(nanWeight, "'weight'", "NaN", "index 3");
        Refused(With("bias", SafeTensors.FromFloats(Values("bias", 0, float.PositiveInfinity), [8])), "'bias'", "index 0");
        Refused(With("running_mean", SafeTensors.FromFloats(Values("running_mean", 7, float.NegativeInfinity), [8])), "'running_mean'", "index 7");
        Refused(With("running_var", SafeTensors.FromFloats(Values("running_var", 5, -0.25f), [8])), "'running_var'", "-0.25", "index 5", ">= 0");
        // Finite as F64 but not as float: what the layer would store is checked.
        var big = st["running_var"].ToDoubles(); big[2] = 1e300;
        Refused(With("running_var", SafeTensors.FromDoubles(big, [8])), "'running_var'", "index 2", "as float");
        Refused(With("num_batches_tracked", SafeTensors.FromInt64(-1)), "'num_batches_tracked'", "-1");
        // Opt-out: loaded as it is.
        var bn = new BatchNorm2d<float>(8);
        StateDict.Load(nanWeight, new StateDictLoadOptions { ValidateValues = false }, ("", (NormLayer<float>)bn));
        Assert.True(float.IsNaN(bn.Weight![3]));
        // A negative zero running variance is a valid zero.
        var zero = st["running_var"].ToDoubles(); zero[1] = -0.0;
        StateDict.Load(With("running_var", SafeTensors.FromDoubles(zero, [8])), ("", (NormLayer<float>)new BatchNorm2d<float>(8)));
    }

    // The fixture holds a whole network's state_dict (features.conv, features.bn, features.fc),
    // written by Debian's PyTorch; only the BatchNorm is NormKit's.
    private static string Checkpoint => Path.Combine(Repo.Fixtures("pytorch"), "checkpoint.safetensors");

    [Fact]
    public void A_strict_load_of_a_whole_checkpoint_names_the_keys_it_cannot_place()
    {
        var strict = new BatchNorm2d<float>(4);
        var e = Assert.Throws<InvalidDataException>(() => StateDict.Load(Checkpoint, ("features.bn", (NormLayer<float>)strict)));
        foreach (string f in new[] { Checkpoint, "unexpected keys", "'features.conv.weight'", "'features.conv.bias'", "'features.fc.weight'", "'features.fc.bias'" })
            Assert.Contains(f, e.Message);
        Assert.DoesNotContain("features.bn", e.Message);
        Assert.All(Guard.Span(strict.RunningVar!).ToArray(), v => Assert.Equal(1f, v));
        Assert.Equal(0, strict.NumBatchesTracked);
        // Under the bn's prefix only its own keys count, so a strict load with a prefix works.
        var bn = new BatchNorm2d<float>(4);
        var result = StateDict.Load(Checkpoint, new StateDictLoadOptions { KeyPrefix = "features.bn." }, ("", (NormLayer<float>)bn));
        Assert.Empty(result.MissingKeys);
        Assert.Empty(result.UnexpectedKeys);
        CheckAgainstPyTorch(bn);
    }

    [Fact]
    public void A_non_strict_load_takes_the_norm_layers_of_a_PyTorch_checkpoint_and_reports_the_rest()
    {
        var bn = new BatchNorm2d<float>(4);
        var ln = new LayerNorm<float>(3);
        Guard.Span(ln.Weight!).Fill(7);
        var result = StateDict.Load(Checkpoint, new StateDictLoadOptions { Strict = false, KeyPrefix = "features." },
            ("bn", (NormLayer<float>)bn), ("head", ln));
        Assert.Equal(["features.head.weight", "features.head.bias"], result.MissingKeys);
        Assert.Equal(["features.conv.bias", "features.conv.weight", "features.fc.bias", "features.fc.weight"], result.UnexpectedKeys);
        Assert.All(Guard.Span(ln.Weight!).ToArray(), v => Assert.Equal(7f, v));   // a layer with no key in the file stays as it was
        CheckAgainstPyTorch(bn);

        // Keys outside the prefix are neither loaded nor reported.
        var other = StateDict.Load(Checkpoint, new StateDictLoadOptions { Strict = false, KeyPrefix = "elsewhere." }, ("bn", (NormLayer<float>)new BatchNorm2d<float>(4)));
        Assert.Equal(["elsewhere.bn.weight", "elsewhere.bn.bias", "elsewhere.bn.running_mean", "elsewhere.bn.running_var", "elsewhere.bn.num_batches_tracked"], other.MissingKeys);
        Assert.Empty(other.UnexpectedKeys);

        // A key that is present but does not fit still throws, strict or not, and nothing changes.
        var wrong = new BatchNorm2d<float>(5);
        var e = Assert.Throws<InvalidDataException>(() => StateDict.Load(Checkpoint, new StateDictLoadOptions { Strict = false }, ("features.bn", (NormLayer<float>)wrong)));
        Assert.Contains("'features.bn.weight' has shape [4] in the file but the layer expects [5]", e.Message);
        Assert.All(Guard.Span(wrong.RunningVar!).ToArray(), v => Assert.Equal(1f, v));
    }

    // The loaded BatchNorm gives PyTorch's eval output and holds the file's values.
    private static void CheckAgainstPyTorch(BatchNorm2d<float> bn)
    {
        var file = SafeTensors.Read(Checkpoint);
        Check.BitEqual<float>(file["features.bn.running_var"].ToDoubles().Select(d => (float)d).ToArray(), Guard.Span(bn.RunningVar!), "running_var");
        Assert.Equal((long)file["features.bn.num_batches_tracked"].ToDoubles()[0], bn.NumBatchesTracked);
        var io = SafeTensors.Read(Path.Combine(Repo.Fixtures("pytorch"), "checkpoint.io.safetensors"));
        bn.Eval();
        var y = bn.Forward(Tensor.Create(Data.F(io["bn_x"].ToDoubles()), [2, 4, 6, 6]));
        Check.Close(io["bn_y_eval"].ToDoubles(), Guard.Span(y), Tol.F32, "eval output");
    }
}
