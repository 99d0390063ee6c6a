using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace NormKit.Kernels;

/// <summary>The 16-bit element types a float kernel can read and write directly (None: the kernel's own T).</summary>
internal enum LowType : byte { None = 0, Half = 1, BFloat16 = 2 }

/// <summary>
/// Row conversions between Half or BFloat16 and float, and the per-worker float scratch row they
/// go through. The row kernels read a 16-bit row into the scratch, run the float row math on it
/// and write the row back rounded once, so memory sees 2 bytes per element each way.
/// </summary>
internal static unsafe class LowPrecision
{
    /// <summary>The <see cref="LowType"/> of <typeparamref name="TLow"/>; throws for any other type.</summary>
    public static LowType Of<TLow>() where TLow : unmanaged
    {
        if (typeof(TLow) == typeof(Half)) return LowType.Half;
        if (typeof(TLow) == typeof(BFloat16)) return LowType.BFloat16;
        throw new NotSupportedException($"Mixed precision takes Half or BFloat16, not {typeof(TLow).Name}.");
    }

    // The scratch is one slot of `stride` floats per worker (WorkerPool.CurrentWorker: the
    // calling thread, then each helper), rented from ArrayPool by the calling thread for the
    // call, as RowKernel's gradient partials are: helper threads never allocate or rent, so the
    // exact allocation count sees nothing on them, and the pool keeps the array for the next
    // call (no allocation in steady state). A row of a few thousand floats stays in L1/L2
    // between the conversion and the float math on it.

    /// <summary>Rents the scratch of a call of <paramref name="chunks"/> chunks: <paramref name="slots"/> slots of <paramref name="stride"/> floats.</summary>
    public static float[] RentScratch(int stride, int chunks, out int slots)
    {
        slots = WorkerPool.ScratchSlots(chunks);
        return System.Buffers.ArrayPool<float>.Shared.Rent(checked(slots * stride));
    }

    /// <summary>
    /// The current thread's slot of a call's scratch. A helper started after the call was sized
    /// (by another thread raising the degree of parallelism at the same moment) has none and
    /// uses a scratch of its own, which it allocates once.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float* Slot(float* scratch, int stride, int slots)
    {
        int w = WorkerPool.CurrentWorker;
        return w < slots ? scratch + (nint)w * stride : Scratch(stride);
    }

    [ThreadStatic] private static float[]? t_scratch;

    // This thread's own scratch, at least `length` floats: pinned (pinned object heap), grown, never shrunk.
    private static float* Scratch(int length)
    {
        var s = t_scratch;
        if (s is null || s.Length < length)
        {
            // Rounded up to 1024 floats so that rows of slightly different lengths do not regrow it.
            s = GC.AllocateUninitializedArray<float>((length + 1023) & ~1023, pinned: true);
            t_scratch = s;
        }
        return (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(s));
    }

    /// <summary>dst[i] = (float)src[i], exact. Without simd the scalar casts (the specification).</summary>
    public static void Widen(LowType type, ushort* src, float* dst, int n, SimdPath path)
    {
        if (type == LowType.Half)
        {
            if (path != SimdPath.Scalar) TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src, n), new Span<float>(dst, n));
            else for (int i = 0; i < n; i++) dst[i] = (float)((Half*)src)[i];
            return;
        }
        // bfloat16 is the upper half of the float32 bits: widening is a 16-bit shift.
        int k = 0;
        if (path == SimdPath.Vector512)
            for (; k <= n - 32; k += 32)
            {
                var (lo, hi) = Vector512.Widen(Vector512.Load(src + k));
                Vector512.ShiftLeft(lo, 16).AsSingle().Store(dst + k);
                Vector512.ShiftLeft(hi, 16).AsSingle().Store(dst + k + 16);
            }
        else if (path == SimdPath.Vector256)
            for (; k <= n - 16; k += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(src + k));
                Vector256.ShiftLeft(lo, 16).AsSingle().Store(dst + k);
                Vector256.ShiftLeft(hi, 16).AsSingle().Store(dst + k + 8);
            }
        else if (path == SimdPath.Vector128)
            for (; k <= n - 8; k += 8)
            {
                var (lo, hi) = Vector128.Widen(Vector128.Load(src + k));
                Vector128.ShiftLeft(lo, 16).AsSingle().Store(dst + k);
                Vector128.ShiftLeft(hi, 16).AsSingle().Store(dst + k + 4);
            }
        for (; k < n; k++) dst[k] = (float)BFloat16.FromRaw(src[k]);
    }

    /// <summary>dst[i] = (TLow)src[i], rounded to nearest even as the scalar casts. Without simd the scalar casts (the specification).</summary>
    public static void Narrow(LowType type, float* src, ushort* dst, int n, SimdPath path)
    {
        if (type == LowType.Half)
        {
            if (path != SimdPath.Scalar) TensorPrimitives.ConvertToHalf(new ReadOnlySpan<float>(src, n), new Span<Half>(dst, n));
            else for (int i = 0; i < n; i++) ((Half*)dst)[i] = (Half)src[i];
            return;
        }
        int k = 0;
        if (path == SimdPath.Vector512)
            for (; k <= n - 32; k += 32)
                Vector512.Narrow(ToBf16(Vector512.Load(src + k)), ToBf16(Vector512.Load(src + k + 16))).Store(dst + k);
        else if (path == SimdPath.Vector256)
            for (; k <= n - 16; k += 16)
                Vector256.Narrow(ToBf16(Vector256.Load(src + k)), ToBf16(Vector256.Load(src + k + 8))).Store(dst + k);
        else if (path == SimdPath.Vector128)
            for (; k <= n - 8; k += 8)
                Vector128.Narrow(ToBf16(Vector128.Load(src + k)), ToBf16(Vector128.Load(src + k + 4))).Store(dst + k);
        for (; k < n; k++) dst[k] = ((BFloat16)src[k]).RawValue;
    }

    // The bfloat16 bits of each float in the low 16 bits of a uint, as BFloat16's explicit cast:
    // round to nearest even, and a NaN stays a quiet NaN with its sign.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> ToBf16(Vector512<float> v)
    {
        var bits = v.AsUInt32();
        var rounded = (bits + (Vector512.Create(0x7FFFu) + ((bits >> 16) & Vector512<uint>.One))) >> 16;
        return Vector512.ConditionalSelect(Vector512.Equals(v, v).AsUInt32(), rounded, (bits >> 16) | Vector512.Create(0x40u));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> ToBf16(Vector256<float> v)
    {
        var bits = v.AsUInt32();
        var rounded = (bits + (Vector256.Create(0x7FFFu) + ((bits >> 16) & Vector256<uint>.One))) >> 16;
        return Vector256.ConditionalSelect(Vector256.Equals(v, v).AsUInt32(), rounded, (bits >> 16) | Vector256.Create(0x40u));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<uint> ToBf16(Vector128<float> v)
    {
        var bits = v.AsUInt32();
        var rounded = (bits + (Vector128.Create(0x7FFFu) + ((bits >> 16) & Vector128<uint>.One))) >> 16;
        return Vector128.ConditionalSelect(Vector128.Equals(v, v).AsUInt32(), rounded, (bits >> 16) | Vector128.Create(0x40u));
    }
}

/// <summary>A 16-bit input and output a float pass reads and writes instead of float buffers (Type None: not used).</summary>
internal readonly unsafe struct LowIO(LowType type, ushort* x, ushort* y)
{
    public LowType Type { get; } = type;
    public ushort* X { get; } = x;
    public ushort* Y { get; } = y;
}
