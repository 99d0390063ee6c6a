using System.Runtime.CompilerServices;

namespace NormKit.Kernels;

/// <summary>Conversions between the element type and double, folded away by the JIT.</summary>
internal static class Num
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double D<T>(T v) where T : unmanaged =>
        typeof(T) == typeof(float) ? Unsafe.As<T, float>(ref v) : Unsafe.As<T, double>(ref v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T From<T>(double v) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) { float f = (float)v; return Unsafe.As<float, T>(ref f); }
        return Unsafe.As<double, T>(ref v);
    }

    /// <summary>
    /// A double mean as hi + lo in T: hi is the nearest T, lo what it misses. The element-wise
    /// passes subtract ((x - hi) - lo), so x - mean stays accurate under a large offset.
    /// </summary>
    internal static void Split<T>(double mean, out T hi, out T lo) where T : unmanaged
    {
        hi = From<T>(mean);
        lo = From<T>(mean - D(hi));
    }

    public static void EnsureSupported<T>()
    {
        if (typeof(T) != typeof(float) && typeof(T) != typeof(double))
            throw new NotSupportedException($"NormKit supports float and double elements, not {typeof(T).Name}.");
    }
}
