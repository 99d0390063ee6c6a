using NormKit.Kernels;
using NormKit.Layers;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>
/// .ci/run re-runs the kernel tests with DOTNET_EnableAVX512F=0, DOTNET_EnableAVX2=0 and
/// DOTNET_EnableHWIntrinsic=0, setting NORMKIT_EXPECT_SIMD to the path each leg must take.
/// This test proves that path is the one the kernels really dispatched to.
/// </summary>
[Trait("Category", "Kernel")]
public class SimdPathTests
{
    [Fact]
    public void The_expected_instruction_set_path_really_runs()
    {
        var expected = Environment.GetEnvironmentVariable("NORMKIT_EXPECT_SIMD") is { Length: > 0 } e
            ? Enum.Parse<SimdPath>(e)
            : Simd.HardwarePath;
        Assert.Equal(expected, Simd.HardwarePath);
        Assert.Equal(expected, Simd.ActivePath);
        long before = Simd.DispatchCount(expected);
        var x = Data.F(Data.Normal(1, 8 * 100));
        var ln = new LayerNorm<float>(100);
        ln.Forward(x, [8, 100], new float[x.Length]);
        ln.Backward(x, x, [8, 100], new float[x.Length]);
        var bn = new BatchNorm1d<float>(10);
        bn.Forward(x, [8, 10, 10], new float[x.Length]);
        bn.Backward(x, x, [8, 10, 10], new float[x.Length]);
        // LayerNorm: forward, backward; BatchNorm: its fused forward and backward (one dispatch each).
        Assert.True(Simd.DispatchCount(expected) >= before + 4, $"{expected} dispatched {Simd.DispatchCount(expected) - before} times");
    }
}
