namespace NormKit.Benchmarks;

/// <summary>One benchmarked configuration: an op, a shape, a layout and a mode.</summary>
/// <param name="Mode">"fwd" (training forward; LayerNorm/RMSNorm/GroupNorm/InstanceNorm have one forward),
/// "fwd+bwd" (training forward then backward), "eval" (BatchNorm with running statistics).</param>
/// <param name="Element">"float", or "Half" / "BFloat16" for activations in 16 bits (float parameters, the Mixed layers).</param>
public sealed record BenchCase(string Op, int[] Shape, bool ChannelsLast, string Mode, string Element = "float")
{
    public long Elements => Shape.Aggregate(1L, (a, d) => a * d);

    /// <summary>Bytes per activation element: 4 for float, 2 for Half and BFloat16.</summary>
    public int ElementBytes => Element == "float" ? 4 : 2;

    /// <summary>Minimal traffic: forward reads x and writes y (2 elements' bytes per element);
    /// forward+backward adds reading x and dy and writing dx (5 in all).</summary>
    public long MinimalBytes => Elements * ElementBytes * (Mode == "fwd+bwd" ? 5 : 2);

    public string ShapeText => "[" + string.Join(",", Shape) + "]";
    public string Layout => Op.StartsWith("BatchNorm2d") ? (ChannelsLast ? "NHWC" : "NCHW") : "";
    public string Key => $"{Op}{(Element == "float" ? "" : " " + Element)} {ShapeText} {Layout} {Mode}".Replace("  ", " ");

    /// <summary>The same case in float, for a 16-bit case's comparison.</summary>
    public BenchCase AsFloat => this with { Element = "float" };
    public override string ToString() => Key;

    /// <summary>The shape as stored in memory (channels-last puts C last).</summary>
    public int[] MemoryShape => ChannelsLast ? [Shape[0], .. Shape[2..], Shape[1]] : Shape;

    public static IReadOnlyList<BenchCase> All()
    {
        var list = new List<BenchCase>();
        foreach (var op in new[] { "LayerNorm", "RMSNorm" })
            foreach (var s in new[] { new[] { 8192, 768 }, [2048, 1024], [65536, 64], [4096, 4096] })
                foreach (var m in new[] { "fwd", "fwd+bwd" })
                    list.Add(new(op, s, false, m));
        foreach (var s in new[] { new[] { 32, 64, 56, 56 }, [64, 256, 14, 14] })
            foreach (bool cl in new[] { false, true })
                foreach (var m in new[] { "fwd", "fwd+bwd", "eval" })
                    list.Add(new("BatchNorm2d", s, cl, m));
        foreach (var m in new[] { "fwd", "fwd+bwd", "eval" })
            list.Add(new("BatchNorm1d", [256, 1024], false, m));
        foreach (var op in new[] { "GroupNorm(32)", "InstanceNorm2d" })
            foreach (var m in new[] { "fwd", "fwd+bwd" })
                list.Add(new(op, [32, 64, 56, 56], false, m));
        // BatchNorm's fixes on a vision shape, the Transformer's norms on a token shape.
        foreach (var op in new[] { "BatchRenorm", "GhostBatchNorm(8)", "FRN" })
            foreach (var m in new[] { "fwd", "fwd+bwd" })
                list.Add(new(op, [32, 64, 56, 56], false, m));
        foreach (var op in new[] { "PowerNorm", "DynamicTanh" })
            foreach (var m in new[] { "fwd", "fwd+bwd" })
                list.Add(new(op, [8192, 768], false, m));
        // 16-bit activations: half the bytes of the float rows above on the same shapes.
        foreach (var (op, element) in new[] { ("LayerNorm", "Half"), ("LayerNorm", "BFloat16"), ("RMSNorm", "Half") })
            foreach (var s in new[] { new[] { 8192, 768 }, [4096, 4096] })
                foreach (var m in new[] { "fwd", "fwd+bwd" })
                    list.Add(new(op, s, false, m, element));
        list.Add(new("BatchNorm2d", [32, 64, 56, 56], false, "eval", "Half"));
        return list;
    }

    /// <summary>RMSNorm's eps in every column (ONNX's default; NormKit's and PyTorch's default is the float epsilon).</summary>
    public const double RmsEps = 1e-5;

    /// <summary>A handful of small cases for the CI smoke run.</summary>
    public static IReadOnlyList<BenchCase> Smoke() =>
    [
        new("LayerNorm", [64, 256], false, "fwd+bwd"),
        new("RMSNorm", [64, 256], false, "fwd"),
        new("BatchNorm2d", [4, 8, 6, 6], true, "fwd+bwd"),
        new("BatchNorm2d", [4, 8, 6, 6], false, "eval"),
        new("GroupNorm(32)", [2, 64, 4, 4], false, "fwd"),
        new("InstanceNorm2d", [2, 64, 4, 4], false, "fwd"),
        new("BatchRenorm", [8, 4, 3, 3], false, "fwd+bwd"),
        new("GhostBatchNorm(8)", [16, 4, 3, 3], false, "fwd+bwd"),
        new("FRN", [2, 4, 3, 3], false, "fwd+bwd"),
        new("PowerNorm", [16, 8], false, "fwd+bwd"),
        new("DynamicTanh", [16, 8], false, "fwd+bwd"),
        new("LayerNorm", [64, 256], false, "fwd+bwd", "Half"),
        new("RMSNorm", [64, 256], false, "fwd", "BFloat16"),
        new("BatchNorm2d", [4, 8, 6, 6], false, "eval", "Half"),
    ];

    /// <summary>Whether ONNX Runtime (inference only, NCHW only) has this case.</summary>
    public bool OrtHasIt => Element == "float" && !ChannelsLast && Op is "LayerNorm" or "RMSNorm" or "BatchNorm2d" or "BatchNorm1d" or "GroupNorm(32)" or "InstanceNorm2d"
        && (Op.StartsWith("BatchNorm") ? Mode == "eval" : Mode == "fwd");

    /// <summary>Whether the PyTorch peer has this case: its modules, or the official composition (RMSNorm, FRN, Dynamic Tanh); Batch Renormalization, ghost batches and PowerNorm have no PyTorch reference; 16-bit cases are NormKit against its own float rows.</summary>
    public bool TorchHasIt => Element == "float" && Op is not ("BatchRenorm" or "GhostBatchNorm(8)" or "PowerNorm");

    /// <summary>The input x (uniform in [-1, 3)) and output gradient dy (uniform in [-0.5, 0.5)) in memory order, the same for every peer.</summary>
    public (float[] X, float[] Dy) Inputs()
    {
        var rng = new Random(1);
        var x = new float[Elements];
        var dy = new float[Elements];
        for (int i = 0; i < x.Length; i++) { x[i] = (float)(rng.NextDouble() * 4 - 1); dy[i] = (float)(rng.NextDouble() - 0.5); }
        return (x, dy);
    }
}
