using System.Text.Json;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>
/// The BatchNormalization and LayerNormalization cases of ONNX's backend node tests
/// (tests/fixtures/onnx, copied from ONNX with its Apache-2.0 notice), with ONNX's conventions mapped to NormKit's: BatchNormalization's
/// momentum m weights the old running value (NormKit's momentum = 1 - m) and its training
/// running_var is the biased variance; epsilon is a float32 attribute.
/// </summary>
// Fast, and touches every kernel: .ci/run runs it on every instruction-set leg.
[Trait("Category", "Interop")]
public class OnnxConformanceTests
{
    // The cases ship in tests/fixtures/onnx (copied unchanged, with their licence); NORMKIT_ONNX_CASES overrides.
    private static string CasesDir() =>
        Environment.GetEnvironmentVariable("NORMKIT_ONNX_CASES") is { Length: > 0 } env ? env : Repo.Fixtures("onnx");

    private static readonly Lazy<JsonElement[]> Cases = new(() =>
    {
        string file = Path.Combine(CasesDir(), "cases.json");
        Assert.True(File.Exists(file), $"ONNX conformance cases not found at {file} (set NORMKIT_ONNX_CASES)");
        using var doc = JsonDocument.Parse(File.ReadAllText(file));
        return doc.RootElement.GetProperty("cases").EnumerateArray().Select(e => e.Clone()).ToArray();
    });

    public static TheoryData<string> Named(string op)
    {
        var d = new TheoryData<string>();
        foreach (var c in Cases.Value)
            if (c.GetProperty("op").GetString() == op) d.Add(c.GetProperty("name").GetString()!);
        return d;
    }

    public static TheoryData<string> BatchNormCases() => Named("BatchNormalization");
    public static TheoryData<string> LayerNormCases() => Named("LayerNormalization");
    public static TheoryData<string> GroupNormCases() => Named("GroupNormalization");
    public static TheoryData<string> InstanceNormCases() => Named("InstanceNormalization");
    public static TheoryData<string> RmsNormCases() => Named("RMSNormalization");

    private static (JsonElement Case, TensorProto[] In, TensorProto[] Out) Load(string name)
    {
        var c = Cases.Value.Single(e => e.GetProperty("name").GetString() == name);
        string dir = Path.Combine(CasesDir(), name);
        TensorProto[] Files(string key) => c.GetProperty(key).EnumerateArray()
            .Select(f => TensorProto.Read(Path.Combine(dir, f.GetProperty("file").GetString()!))).ToArray();
        return (c, Files("inputs"), Files("outputs"));
    }

    private static double Attr(JsonElement c, string name, double fallback) =>
        c.GetProperty("attributes").TryGetProperty(name, out var v) ? v.GetDouble() : fallback;

    [Theory, MemberData(nameof(BatchNormCases))]
    public void BatchNormalization(string name)
    {
        var (c, inputs, outputs) = Load(name);
        double eps = (float)Attr(c, "epsilon", 1e-5);
        double onnxMomentum = (float)Attr(c, "momentum", 0.9);
        bool training = Attr(c, "training_mode", 0) == 1;
        var x = inputs[0];
        var y = new float[x.Data.Length];
        var runningMean = (float[])inputs[3].Data.Clone();
        var runningVar = (float[])inputs[4].Data.Clone();
        Functional.BatchNorm<float>(x.Data, x.Dims, y, runningMean, runningVar, inputs[1].Data, inputs[2].Data,
            training, momentum: 1 - onnxMomentum, eps: eps, unbiasedRunningVar: false);
        Check.Close(Data.D(outputs[0].Data), y, Tol.Onnx, $"{name} Y");
        Check.Close(Data.D(outputs[0].Data), y, Tol.F32, $"{name} Y (float32 tolerance)");
        if (training)
        {
            Check.Close(Data.D(outputs[1].Data), runningMean, Tol.F32, $"{name} running_mean");
            Check.Close(Data.D(outputs[2].Data), runningVar, Tol.F32, $"{name} running_var");
        }
    }

    [Theory, MemberData(nameof(LayerNormCases))]
    public void LayerNormalization(string name)
    {
        var (c, inputs, outputs) = Load(name);
        double eps = (float)Attr(c, "epsilon", 1e-5);
        var x = inputs[0];
        int axis = (int)Attr(c, "axis", -1);
        if (axis < 0) axis += x.Dims.Length;
        int[] normalized = x.Dims[axis..];
        int rows = x.Dims[..axis].Aggregate(1, (a, d) => a * d);
        var y = new float[x.Data.Length];
        var mean = new double[rows];
        var rstd = new double[rows];
        Functional.LayerNorm<float>(x.Data, x.Dims, normalized, y, inputs[1].Data, inputs[2].Data, eps, mean, rstd);
        Check.Close(Data.D(outputs[0].Data), y, Tol.Onnx, $"{name} Y");
        Check.Close(Data.D(outputs[0].Data), y, Tol.F32, $"{name} Y (float32 tolerance)");
        Check.Close(Data.D(outputs[1].Data), mean, Tol.F32, $"{name} Mean");
        Check.Close(Data.D(outputs[2].Data), rstd, Tol.F32, $"{name} InvStdDev");
    }

    [Theory, MemberData(nameof(GroupNormCases))]
    public void GroupNormalization(string name)
    {
        var (c, inputs, outputs) = Load(name);
        var x = inputs[0];
        var y = new float[x.Data.Length];
        Functional.GroupNorm<float>(x.Data, x.Dims, (int)Attr(c, "num_groups", 0), y, inputs[1].Data, inputs[2].Data, (float)Attr(c, "epsilon", 1e-5));
        Check.Close(Data.D(outputs[0].Data), y, Tol.Onnx, $"{name} Y");
        Check.Close(Data.D(outputs[0].Data), y, Tol.F32, $"{name} Y (float32 tolerance)");
    }

    [Theory, MemberData(nameof(InstanceNormCases))]
    public void InstanceNormalization(string name)
    {
        var (c, inputs, outputs) = Load(name);
        var x = inputs[0];
        var y = new float[x.Data.Length];
        Functional.InstanceNorm<float>(x.Data, x.Dims, y, weight: inputs[1].Data, bias: inputs[2].Data, eps: (float)Attr(c, "epsilon", 1e-5));
        Check.Close(Data.D(outputs[0].Data), y, Tol.Onnx, $"{name} Y");
        Check.Close(Data.D(outputs[0].Data), y, Tol.F32, $"{name} Y (float32 tolerance)");
    }

    [Theory, MemberData(nameof(RmsNormCases))]
    public void RMSNormalization(string name)
    {
        var (c, inputs, outputs) = Load(name);
        var x = inputs[0];
        int axis = (int)Attr(c, "axis", -1);
        if (axis < 0) axis += x.Dims.Length;
        var y = new float[x.Data.Length];
        Functional.RmsNorm<float>(x.Data, x.Dims, x.Dims[axis..], y, inputs[1].Data, (float)Attr(c, "epsilon", 1e-5));
        Check.Close(Data.D(outputs[0].Data), y, Tol.Onnx, $"{name} Y");
        Check.Close(Data.D(outputs[0].Data), y, Tol.F32, $"{name} Y (float32 tolerance)");
    }

    [Fact]
    public void The_case_list_holds_all_46_cases()
    {
        Assert.Equal(4, BatchNormCases().Count);
        Assert.Equal(19, LayerNormCases().Count);
        Assert.Equal(2, GroupNormCases().Count);
        Assert.Equal(2, InstanceNormCases().Count);
        Assert.Equal(19, RmsNormCases().Count);
    }
}
