using NormKit.Kernels;

namespace NormKit.Tests.Support;

/// <summary>Runs a check once per instruction-set path this machine has (scalar up to the widest).</summary>
public static class Paths
{
    public static IEnumerable<SimdPath> Available()
    {
        for (var p = SimdPath.Scalar; p <= Simd.HardwarePath; p++) yield return p;
    }

    public static void ForEach(Action<SimdPath> check)
    {
        foreach (var p in Available())
        {
            Simd.Limit = p;
            try { check(p); }
            finally { Simd.Limit = null; }
        }
    }

    /// <summary>Runs <paramref name="action"/> with the given degree of parallelism, restoring the old one.</summary>
    public static void WithThreads(int threads, Action action)
    {
        int old = NormKitThreading.MaxDegreeOfParallelism;
        NormKitThreading.MaxDegreeOfParallelism = threads;
        try { action(); }
        finally { NormKitThreading.MaxDegreeOfParallelism = old; }
    }

    /// <summary>Lengths 1..33, then around every vector width up to 257.</summary>
    public static readonly int[] Lengths =
        [.. Enumerable.Range(1, 33), 47, 48, 49, 63, 64, 65, 95, 96, 97, 127, 128, 129, 191, 192, 193, 255, 256, 257];
}
