using Microsoft.ML.OnnxRuntime;

namespace NormKit.Benchmarks;

/// <summary>
/// ONNX Runtime (CPU, in-process) running the single-node model of a case with preallocated
/// input and output tensors and the given intra-op thread count.
/// </summary>
public sealed class OrtOp : IDisposable
{
    private readonly InferenceSession _session;
    private readonly OrtValue _x, _y;
    private readonly RunOptions _options = new();
    private readonly string[] _inputNames = ["X"], _outputNames = ["Y"];
    private readonly OrtValue[] _inputs, _outputs;
    public string Model { get; }

    /// <param name="x">The input (NCHW; ONNX Runtime runs no channels-last case).</param>
    public OrtOp(BenchCase c, int threads, float[] x)
    {
        int[] shape = c.Shape;
        int ch = shape[1];
        float[] Ones(int n) => Enumerable.Repeat(1f, n).ToArray();
        float[] Zeros(int n) => new float[n];
        int[] normalized = shape[1..];
        byte[] model;
        (model, Model) = c.Op switch
        {
            "LayerNorm" => (OnnxModel.SingleNode("LayerNormalization", 17, shape, [("W", Ones(shape[^1])), ("B", Zeros(shape[^1]))], [("axis", null, -1), ("epsilon", 1e-5f, null)]), "LayerNormalization-17"),
            "RMSNorm" => RmsModel(shape),
            "BatchNorm2d" or "BatchNorm1d" => (OnnxModel.SingleNode("BatchNormalization", 15, shape,
                [("scale", Ones(ch)), ("bias", Zeros(ch)), ("mean", Zeros(ch)), ("var", Ones(ch))], [("epsilon", 1e-5f, null)]), "BatchNormalization-15"),
            "GroupNorm(32)" => (OnnxModel.SingleNode("GroupNormalization", 21, shape, [("scale", Ones(ch)), ("bias", Zeros(ch))], [("num_groups", null, 32), ("epsilon", 1e-5f, null)]), "GroupNormalization-21"),
            "InstanceNorm2d" => (OnnxModel.SingleNode("InstanceNormalization", 17, shape, [("scale", Ones(ch)), ("bias", Zeros(ch))], [("epsilon", 1e-5f, null)]), "InstanceNormalization-17"),
            _ => throw new ArgumentException(c.Op),
        };
        var so = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
        so.GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL;
        try { _session = new InferenceSession(model, so); }
        catch (OnnxRuntimeException) when (c.Op == "RMSNorm")
        {
            // Older runtimes lack RMSNormalization-23; SimplifiedLayerNormalization is the same formula.
            model = OnnxModel.SingleNode("SimplifiedLayerNormalization", 1, shape, [("scale", Ones(shape[^1]))], [("axis", null, -1), ("epsilon", (float)BenchCase.RmsEps, null)]);
            Model = "SimplifiedLayerNormalization";
            _session = new InferenceSession(model, so);
        }
        long[] dims = shape.Select(d => (long)d).ToArray();
        _x = OrtValue.CreateTensorValueFromMemory(x, dims);
        _y = OrtValue.CreateTensorValueFromMemory(new float[c.Elements], dims);
        _inputs = [_x];
        _outputs = [_y];
    }

    private static (byte[], string) RmsModel(int[] shape) =>
        (OnnxModel.SingleNode("RMSNormalization", 23, shape, [("scale", Enumerable.Repeat(1f, shape[^1]).ToArray())], [("axis", null, -1), ("epsilon", (float)BenchCase.RmsEps, null)]), "RMSNormalization-23");

    public void Run() => _session.Run(_options, _inputNames, _inputs, _outputNames, _outputs);

    /// <summary>The output of one run, for a correctness check against NormKit.</summary>
    public float[] Output() { Run(); return _y.GetTensorDataAsSpan<float>().ToArray(); }

    public void Dispose()
    {
        _x.Dispose(); _y.Dispose(); _options.Dispose(); _session.Dispose();
    }
}
