using NormKit.Layers;

namespace NormKit.Benchmarks;

/// <summary>A NormKit call on preallocated buffers, through the span API that allocates nothing.</summary>
public sealed class NormKitOp
{
    private readonly Action _run;
    public NormKitOp(BenchCase c)
    {
        int[] shape = c.MemoryShape;
        var rng = new Random(1);
        var x = new float[c.Elements]; var y = new float[c.Elements];
        var dy = new float[c.Elements]; var dx = new float[c.Elements];
        for (int i = 0; i < x.Length; i++) { x[i] = (float)(rng.NextDouble() * 4 - 1); dy[i] = (float)(rng.NextDouble() - 0.5); }
        bool backward = c.Mode == "fwd+bwd";
        int channels = c.Shape.Length > 1 ? c.Shape[1] : 1;
        switch (c.Op)
        {
            case "LayerNorm":
            case "RMSNorm":
                RowNorm<float> row = c.Op == "LayerNorm" ? new LayerNorm<float>(shape[^1]) : new RMSNorm<float>(shape[^1]);
                _run = backward
                    ? () => { row.Forward(x, shape, y); row.Backward(dy, x, shape, dx); }
                    : () => row.Forward(x, shape, y);
                break;
            default:
                ChannelNorm<float> layer = c.Op switch
                {
                    "BatchNorm2d" => new BatchNorm2d<float>(channels, channelsLast: c.ChannelsLast),
                    "BatchNorm1d" => new BatchNorm1d<float>(channels),
                    "GroupNorm(32)" => new GroupNorm<float>(32, channels),
                    "InstanceNorm2d" => new InstanceNorm2d<float>(channels),
                    _ => throw new ArgumentException($"Unknown op {c.Op}"),
                };
                if (c.Mode == "eval") layer.Eval();
                _run = backward
                    ? () => { layer.Forward(x, shape, y); layer.Backward(dy, x, shape, dx); }
                    : () => layer.Forward(x, shape, y);
                break;
        }
    }

    public void Run() => _run();
}
