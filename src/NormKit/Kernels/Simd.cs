using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace NormKit.Kernels;

/// <summary>The instruction-set paths a kernel can take, narrowest first.</summary>
public enum SimdPath
{
    /// <summary>Plain scalar loops: the readable specification every other path must match.</summary>
    Scalar = 0,
    /// <summary>128-bit vectors (SSE / NEON).</summary>
    Vector128 = 1,
    /// <summary>256-bit vectors (AVX2).</summary>
    Vector256 = 2,
    /// <summary>512-bit vectors (AVX-512).</summary>
    Vector512 = 3,
}

/// <summary>
/// Chooses the instruction-set path. The widest hardware-accelerated width is used; the
/// environment variables DOTNET_EnableAVX512=0 (.NET 10 no longer reads DOTNET_EnableAVX512F alone), DOTNET_EnableAVX2=0 and
/// DOTNET_EnableHWIntrinsic=0 step it down to Vector256, Vector128 and Scalar.
/// </summary>
public static class Simd
{
    /// <summary>The widest path this process can run.</summary>
    public static SimdPath HardwarePath { get; } =
        Vector512.IsHardwareAccelerated ? SimdPath.Vector512 :
        Vector256.IsHardwareAccelerated ? SimdPath.Vector256 :
        Vector128.IsHardwareAccelerated ? SimdPath.Vector128 : SimdPath.Scalar;

    [ThreadStatic] private static SimdPath? t_limit;

    /// <summary>
    /// The path kernels called from this thread take: <see cref="HardwarePath"/>, lowered by <see cref="Limit"/>.
    /// </summary>
    public static SimdPath ActivePath => t_limit is { } l && l < HardwarePath ? l : HardwarePath;

    /// <summary>
    /// An upper bound on the path for kernel calls made from the current thread (null: no
    /// bound). Lets tests compare every path the hardware has within one process.
    /// </summary>
    public static SimdPath? Limit { get => t_limit; set => t_limit = value; }

    // Counts of kernel dispatches per path, so a test can prove which path really ran.
    private static readonly long[] s_dispatches = new long[4];

    /// <summary>How many kernel calls took each path since the process started.</summary>
    public static long DispatchCount(SimdPath path) => Volatile.Read(ref s_dispatches[(int)path]);

    internal static SimdPath Dispatch()
    {
        SimdPath p = ActivePath;
        Interlocked.Increment(ref s_dispatches[(int)p]);
        return p;
    }
}

/// <summary>
/// One vector width as a set of static operations, so each kernel is written once as a
/// generic method and instantiated for 128, 256 and 512 bits. <typeparamref name="T"/> is
/// float or double; <typeparamref name="TV"/> is a vector of T and <typeparamref name="TD"/>
/// a vector of double of the same width, used for wide accumulation.
/// </summary>
internal interface IWidth<T, TV, TD> where T : unmanaged
{
    /// <summary>Elements of T per vector.</summary>
    static abstract int Count { get; }
    /// <summary>Elements of T consumed by one <see cref="LoadWide"/>: twice the doubles per vector.</summary>
    static abstract int WideCount { get; }
    static abstract TV Load(ref T p, nuint i);
    static abstract void Store(TV v, ref T p, nuint i);
    static abstract TV Splat(T v);
    static abstract TV Add(TV a, TV b);
    static abstract TV Sub(TV a, TV b);
    static abstract TV Mul(TV a, TV b);
    /// <summary>IEEE 754 maximum per element (NaN propagates), as T.Max.</summary>
    static abstract TV Max(TV a, TV b);
    /// <summary>v where a &gt;= b, else 0, per element (a NaN compares false).</summary>
    static abstract TV WhereGreaterOrEqual(TV a, TV b, TV v);
    /// <summary>Loads WideCount elements from p + i as two vectors of double.</summary>
    static abstract void LoadWide(ref T p, nuint i, out TD lo, out TD hi);
    /// <summary>Stores two vectors of double as WideCount elements of T at p + i, rounded as a scalar cast (the inverse of <see cref="LoadWide"/>).</summary>
    static abstract void StoreWide(TD lo, TD hi, ref T p, nuint i);
    /// <summary>Converts one vector of T to two vectors of double (the high half is zero for double).</summary>
    static abstract void Widen(TV v, out TD lo, out TD hi);
    static abstract TD LoadD(ref double p, nuint i);
    static abstract void StoreD(TD v, ref double p, nuint i);
    static abstract TD SplatD(double v);
    static abstract TD AddD(TD a, TD b);
    static abstract TD SubD(TD a, TD b);
    static abstract TD MulD(TD a, TD b);
    /// <summary>IEEE 754 division per lane: the same bits as the scalar division of each lane.</summary>
    static abstract TD DivD(TD a, TD b);
    static abstract TD ZeroD { get; }
    static abstract double SumD(TD v);
}

internal readonly struct W128<T> : IWidth<T, Vector128<T>, Vector128<double>> where T : unmanaged
{
    public static int Count => Vector128<T>.Count;
    public static int WideCount => 2 * Vector128<double>.Count;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<T> Load(ref T p, nuint i) => Vector128.LoadUnsafe(ref p, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector128<T> v, ref T p, nuint i) => v.StoreUnsafe(ref p, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<T> Splat(T v) => Vector128.Create(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<T> Add(Vector128<T> a, Vector128<T> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<T> Sub(Vector128<T> a, Vector128<T> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<T> Mul(Vector128<T> a, Vector128<T> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<T> Max(Vector128<T> a, Vector128<T> b) => Vector128.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<T> WhereGreaterOrEqual(Vector128<T> a, Vector128<T> b, Vector128<T> v) => Vector128.GreaterThanOrEqual(a, b) & v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadWide(ref T p, nuint i, out Vector128<double> lo, out Vector128<double> hi)
    {
        if (typeof(T) == typeof(float))
            (lo, hi) = Vector128.Widen(Vector128.LoadUnsafe(ref Unsafe.As<T, float>(ref p), i));
        else
        {
            lo = Vector128.LoadUnsafe(ref Unsafe.As<T, double>(ref p), i);
            hi = Vector128.LoadUnsafe(ref Unsafe.As<T, double>(ref p), i + (nuint)Vector128<double>.Count);
        }
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreWide(Vector128<double> lo, Vector128<double> hi, ref T p, nuint i)
    {
        if (typeof(T) == typeof(float))
            Vector128.Narrow(lo, hi).StoreUnsafe(ref Unsafe.As<T, float>(ref p), i);
        else
        {
            lo.StoreUnsafe(ref Unsafe.As<T, double>(ref p), i);
            hi.StoreUnsafe(ref Unsafe.As<T, double>(ref p), i + (nuint)Vector128<double>.Count);
        }
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Widen(Vector128<T> v, out Vector128<double> lo, out Vector128<double> hi)
    {
        if (typeof(T) == typeof(float)) (lo, hi) = Vector128.Widen(v.As<T, float>());
        else { lo = v.As<T, double>(); hi = Vector128<double>.Zero; }
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<double> LoadD(ref double p, nuint i) => Vector128.LoadUnsafe(ref p, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void StoreD(Vector128<double> v, ref double p, nuint i) => v.StoreUnsafe(ref p, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<double> SplatD(double v) => Vector128.Create(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<double> AddD(Vector128<double> a, Vector128<double> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<double> SubD(Vector128<double> a, Vector128<double> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<double> MulD(Vector128<double> a, Vector128<double> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<double> DivD(Vector128<double> a, Vector128<double> b) => a / b;
    public static Vector128<double> ZeroD => Vector128<double>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double SumD(Vector128<double> v) => Vector128.Sum(v);
}

internal readonly struct W256<T> : IWidth<T, Vector256<T>, Vector256<double>> where T : unmanaged
{
    public static int Count => Vector256<T>.Count;
    public static int WideCount => 2 * Vector256<double>.Count;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<T> Load(ref T p, nuint i) => Vector256.LoadUnsafe(ref p, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector256<T> v, ref T p, nuint i) => v.StoreUnsafe(ref p, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<T> Splat(T v) => Vector256.Create(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<T> Add(Vector256<T> a, Vector256<T> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<T> Sub(Vector256<T> a, Vector256<T> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<T> Mul(Vector256<T> a, Vector256<T> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<T> Max(Vector256<T> a, Vector256<T> b) => Vector256.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<T> WhereGreaterOrEqual(Vector256<T> a, Vector256<T> b, Vector256<T> v) => Vector256.GreaterThanOrEqual(a, b) & v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadWide(ref T p, nuint i, out Vector256<double> lo, out Vector256<double> hi)
    {
        if (typeof(T) == typeof(float))
            (lo, hi) = Vector256.Widen(Vector256.LoadUnsafe(ref Unsafe.As<T, float>(ref p), i));
        else
        {
            lo = Vector256.LoadUnsafe(ref Unsafe.As<T, double>(ref p), i);
            hi = Vector256.LoadUnsafe(ref Unsafe.As<T, double>(ref p), i + (nuint)Vector256<double>.Count);
        }
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreWide(Vector256<double> lo, Vector256<double> hi, ref T p, nuint i)
    {
        if (typeof(T) == typeof(float))
            Vector256.Narrow(lo, hi).StoreUnsafe(ref Unsafe.As<T, float>(ref p), i);
        else
        {
            lo.StoreUnsafe(ref Unsafe.As<T, double>(ref p), i);
            hi.StoreUnsafe(ref Unsafe.As<T, double>(ref p), i + (nuint)Vector256<double>.Count);
        }
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Widen(Vector256<T> v, out Vector256<double> lo, out Vector256<double> hi)
    {
        if (typeof(T) == typeof(float)) (lo, hi) = Vector256.Widen(v.As<T, float>());
        else { lo = v.As<T, double>(); hi = Vector256<double>.Zero; }
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> LoadD(ref double p, nuint i) => Vector256.LoadUnsafe(ref p, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void StoreD(Vector256<double> v, ref double p, nuint i) => v.StoreUnsafe(ref p, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> SplatD(double v) => Vector256.Create(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> AddD(Vector256<double> a, Vector256<double> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> SubD(Vector256<double> a, Vector256<double> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> MulD(Vector256<double> a, Vector256<double> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> DivD(Vector256<double> a, Vector256<double> b) => a / b;
    public static Vector256<double> ZeroD => Vector256<double>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double SumD(Vector256<double> v) => Vector256.Sum(v);
}

internal readonly struct W512<T> : IWidth<T, Vector512<T>, Vector512<double>> where T : unmanaged
{
    public static int Count => Vector512<T>.Count;
    public static int WideCount => 2 * Vector512<double>.Count;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<T> Load(ref T p, nuint i) => Vector512.LoadUnsafe(ref p, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector512<T> v, ref T p, nuint i) => v.StoreUnsafe(ref p, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<T> Splat(T v) => Vector512.Create(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<T> Add(Vector512<T> a, Vector512<T> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<T> Sub(Vector512<T> a, Vector512<T> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<T> Mul(Vector512<T> a, Vector512<T> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<T> Max(Vector512<T> a, Vector512<T> b) => Vector512.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> WhereGreaterOrEqual(Vector512<T> a, Vector512<T> b, Vector512<T> v) => Vector512.GreaterThanOrEqual(a, b) & v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadWide(ref T p, nuint i, out Vector512<double> lo, out Vector512<double> hi)
    {
        if (typeof(T) == typeof(float))
            (lo, hi) = Vector512.Widen(Vector512.LoadUnsafe(ref Unsafe.As<T, float>(ref p), i));
        else
        {
            lo = Vector512.LoadUnsafe(ref Unsafe.As<T, double>(ref p), i);
            hi = Vector512.LoadUnsafe(ref Unsafe.As<T, double>(ref p), i + (nuint)Vector512<double>.Count);
        }
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreWide(Vector512<double> lo, Vector512<double> hi, ref T p, nuint i)
    {
        if (typeof(T) == typeof(float))
            Vector512.Narrow(lo, hi).StoreUnsafe(ref Unsafe.As<T, float>(ref p), i);
        else
        {
            lo.StoreUnsafe(ref Unsafe.As<T, double>(ref p), i);
            hi.StoreUnsafe(ref Unsafe.As<T, double>(ref p), i + (nuint)Vector512<double>.Count);
        }
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Widen(Vector512<T> v, out Vector512<double> lo, out Vector512<double> hi)
    {
        if (typeof(T) == typeof(float)) (lo, hi) = Vector512.Widen(v.As<T, float>());
        else { lo = v.As<T, double>(); hi = Vector512<double>.Zero; }
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> LoadD(ref double p, nuint i) => Vector512.LoadUnsafe(ref p, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void StoreD(Vector512<double> v, ref double p, nuint i) => v.StoreUnsafe(ref p, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> SplatD(double v) => Vector512.Create(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> AddD(Vector512<double> a, Vector512<double> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> SubD(Vector512<double> a, Vector512<double> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> MulD(Vector512<double> a, Vector512<double> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> DivD(Vector512<double> a, Vector512<double> b) => a / b;
    public static Vector512<double> ZeroD => Vector512<double>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double SumD(Vector512<double> v) => Vector512.Sum(v);
}
