using System.Runtime.Intrinsics;
using NormKit.Kernels;
using NormKit.Layers;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>
/// .ci/run re-runs the kernel tests with DOTNET_EnableAVX512=0, DOTNET_EnableAVX2=0 and
/// DOTNET_EnableHWIntrinsic=0, setting NORMKIT_EXPECT_SIMD to the path each leg must take.
/// This test proves that path is the one the kernels really dispatched to. Without the
/// variable (a plain dotnet test) the expected path is the widest width the runtime itself
/// accelerates, and its results are compared with the scalar path's.
/// </summary>
[Trait("Category", "Kernel")]
public class SimdPathTests
{
    // The runtime's own answer, independent of NormKit's dispatcher. On CPUs where .NET keeps
    // Vector512 off by default (some Intel parts), this is Vector256 although cpuinfo lists AVX-512.
    private static SimdPath RuntimeWidest =>
        Vector512.IsHardwareAccelerated ? SimdPath.Vector512 :
        Vector256.IsHardwareAccelerated ? SimdPath.Vector256 :
        Vector128.IsHardwareAccelerated ? SimdPath.Vector128 : SimdPath.Scalar;

    private static float[][] Run()
    {
        var x = Data.F(Data.Normal(1, 8 * 100, 0.5, 2));
        var dy = Data.F(Data.Normal(2, x.Length));
        var ln = new LayerNorm<float>(100);
        var bn = new BatchNorm1d<float>(10);
        float[] y1 = new float[x.Length], dx1 = new float[x.Length], y2 = new float[x.Length], dx2 = new float[x.Length];
        ln.Forward(x, [8, 100], y1);
        ln.Backward(dy, x, [8, 100], dx1);
        bn.Forward(x, [8, 10, 10], y2);
        bn.Backward(dy, x, [8, 10, 10], dx2);
        return [y1, dx1, y2, dx2];
    }

    [Fact]
    public void The_expected_instruction_set_path_really_runs()
    {
        var expected = Environment.GetEnvironmentVariable("NORMKIT_EXPECT_SIMD") is { Length: > 0 } e
            ? Enum.Parse<SimdPath>(e)
            : RuntimeWidest;
        Assert.Equal(expected, Simd.HardwarePath);
        Assert.Equal(expected, Simd.ActivePath);
        long before = Simd.DispatchCount(expected);
        var simd = Run();
        // LayerNorm: forward, backward; BatchNorm: its fused forward and backward (one dispatch each).
        Assert.True(Simd.DispatchCount(expected) >= before + 4, $"{expected} dispatched {Simd.DispatchCount(expected) - before} times");

        // The same calls on the scalar path, the specification: equal within float32 tolerance
        // (element-wise passes match bit for bit; reductions may sum in another order).
        long scalarBefore = Simd.DispatchCount(SimdPath.Scalar);
        float[][] scalar = null!;
        Paths.ForEach(p => { if (p == SimdPath.Scalar) scalar = Run(); });
        Assert.True(Simd.DispatchCount(SimdPath.Scalar) >= scalarBefore + 4, "the scalar path ran");
        string[] names = ["LayerNorm y", "LayerNorm dx", "BatchNorm y", "BatchNorm dx"];
        for (int k = 0; k < names.Length; k++) Check.Close(Data.D(scalar[k]), simd[k], Tol.F32, $"{names[k]}: {expected} against Scalar");
    }
}
