using NormKit.Layers;

namespace NormKit.Benchmarks;

/// <summary>A NormKit call on preallocated buffers, through the span API that allocates nothing.</summary>
public sealed class NormKitOp
{
    private readonly Action _run;
    private readonly float[] _result;
    private readonly Action? _widen;   // 16-bit cases: copies the result into _result as float

    /// <param name="x">The input in memory order (channels last when the case is).</param>
    /// <param name="dy">The output gradient, for "fwd+bwd".</param>
    public NormKitOp(BenchCase c, float[] x, float[] dy)
    {
        if (c.Element != "float")
        {
            (_run, _result, _widen) = c.Element == "Half" ? Low<Half>(c, x, dy, v => (Half)v, h => (float)h) : Low<BFloat16>(c, x, dy, v => (BFloat16)v, b => (float)b);
            return;
        }
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

    // A 16-bit case: the Mixed layers (float parameters), or Mixed.BatchNorm in eval; the result is
    // widened to float for the comparison.
    private static (Action Run, float[] Result, Action Widen) Low<TLow>(BenchCase c, float[] x, float[] dy, Func<float, TLow> narrow, Func<TLow, float> widen)
        where TLow : unmanaged
    {
        int[] shape = c.MemoryShape;
        TLow[] lx = Array.ConvertAll(x, v => narrow(v)), ldy = Array.ConvertAll(dy, v => narrow(v));
        var y = new TLow[x.Length];
        var dx = new TLow[x.Length];
        bool backward = c.Mode == "fwd+bwd";
        var result = new float[x.Length];
        void Widen() { var from = backward ? dx : y; for (int i = 0; i < result.Length; i++) result[i] = widen(from[i]); }
        switch (c.Op)
        {
            case "LayerNorm":
            case "RMSNorm":
                MixedRowNorm<TLow> row = c.Op == "LayerNorm" ? new MixedLayerNorm<TLow>(shape[^1]) : new MixedRMSNorm<TLow>(shape[^1], eps: BenchCase.RmsEps);
                return (backward
                    ? () => { row.Forward(lx, shape, y); row.Backward(ldy, lx, shape, dx); }
                    : () => row.Forward(lx, shape, y), result, Widen);
            case "BatchNorm2d" when c.Mode == "eval":
                int ch = c.Shape[1];
                float[] mean = new float[ch], variance = Enumerable.Repeat(1f, ch).ToArray(), w = Enumerable.Repeat(1f, ch).ToArray(), b = new float[ch];
                return (() => Mixed.BatchNorm<TLow>(lx, shape, y, mean, variance, w, b, training: false), result, Widen);
            default:
                throw new ArgumentException($"No 16-bit case for {c.Op} {c.Mode}");
        }
    }

    public void Run() => _run();

    /// <summary>y after a forward, dx after a forward and backward (memory order), from one more call.</summary>
    public float[] Output() { Run(); _widen?.Invoke(); return (float[])_result.Clone(); }
}
