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

    /// <summary>
    /// Checks that a layer's output, input gradient and parameter gradients are bitwise the same on
    /// 2 and 3 threads as on 1; <paramref name="run"/> builds a fresh layer and runs it on that many threads.
    /// </summary>
    public static void SameBitsOnAnyThreadCount<T>(Func<int, (T[] Y, T[] Dx, T[][] Grads)> run, string output = "y") where T : unmanaged
    {
        var one = run(1);
        foreach (int threads in new[] { 2, 3 })
        {
            var many = run(threads);
            string at = $"{typeof(T).Name}, {threads} threads";
            Check.BitEqual<T>(one.Y, many.Y, $"{output}, {at}");
            Check.BitEqual<T>(one.Dx, many.Dx, $"dx, {at}");
            for (int i = 0; i < one.Grads.Length; i++) Check.BitEqual<T>(one.Grads[i], many.Grads[i], $"grad {i}, {at}");
        }
    }

    /// <summary>Lengths 1..33, then around every vector width up to 257.</summary>
    public static readonly int[] Lengths =
        [.. Enumerable.Range(1, 33), 47, 48, 49, 63, 64, 65, 95, 96, 97, 127, 128, 129, 191, 192, 193, 255, 256, 257];
}
