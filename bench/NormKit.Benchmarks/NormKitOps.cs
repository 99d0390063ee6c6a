using NormKit.Layers;

namespace NormKit.Benchmarks;

/// <summary>A NormKit call on preallocated buffers, through the span API that allocates nothing.</summary>
public sealed class NormKitOp
{
    private readonly Action _run;
    private readonly float[] _result;

    /// <param name="x">The input in memory order (channels last when the case is).</param>
    /// <param name="dy">The output gradient, for "fwd+bwd".</param>
    public NormKitOp(BenchCase c, float[] x, float[] dy)
    {
        int[] shape = c.MemoryShape;
        var y = new float[c.Elements];
        var dx = new float[c.Elements];
        bool backward = c.Mode == "fwd+bwd";
        _result = backward ? dx : y;
        int channels = c.Shape.Length > 1 ? c.Shape[1] : 1;
        NormLayer<float> layer = c.Op switch
        {
            "LayerNorm" => new LayerNorm<float>(shape[^1]),
            "RMSNorm" => new RMSNorm<float>(shape[^1], eps: BenchCase.RmsEps),
            "DynamicTanh" => new DynamicTanh<float>(shape[^1]),
            "BatchNorm2d" => new BatchNorm2d<float>(channels, channelsLast: c.ChannelsLast),
            "BatchNorm1d" => new BatchNorm1d<float>(channels),
            "GroupNorm(32)" => new GroupNorm<float>(32, channels),
            "InstanceNorm2d" => new InstanceNorm2d<float>(channels),
            "BatchRenorm" => new BatchRenorm<float>(channels),
            "GhostBatchNorm(8)" => new GhostBatchNorm<float>(channels, 8),
            "FRN" => new FilterResponseNorm<float>(channels),
            "PowerNorm" => new PowerNorm<float>(channels),
            _ => throw new ArgumentException($"Unknown op {c.Op}"),
        };
        if (c.Mode == "eval") layer.Eval();
        _run = backward
            ? () => { layer.Forward(x, shape, y); layer.Backward(dy, x, shape, dx); }
            : () => layer.Forward(x, shape, y);
    }

    public void Run() => _run();

    /// <summary>y after a forward, dx after a forward and backward (memory order), from one more call.</summary>
    public float[] Output() { Run(); return (float[])_result.Clone(); }
}
