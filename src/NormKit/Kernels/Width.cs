using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace NormKit.Kernels;

/// <summary>The state of one kernel call: its pointers and sizes, and the width it dispatched to.</summary>
internal interface IKernelJob
{
    SimdPath Path { get; }
}

/// <summary>
/// A kernel body written once for every width: <see cref="Run"/> is instantiated for
/// W512, W256 and W128. With <c>simd</c> false (the scalar path) it runs its scalar loops only,
/// which are the specification the vector loops must match.
/// </summary>
internal interface IKernelBody<T, TJob> where T : unmanaged
{
    static abstract void Run<W, TV, TD>(ref TJob job, int chunk, bool simd) where W : IWidth<T, TV, TD>;
}

/// <summary>
/// The one width dispatch of every kernel: the job's path is switched on once per chunk of
/// work, and everything below runs specialised for that width.
/// </summary>
internal static unsafe class Width
{
    /// <summary>Runs <typeparamref name="TBody"/> over chunks 0..chunks-1 on the worker pool.</summary>
    public static void For<T, TJob, TBody>(int chunks, ref TJob job)
        where T : unmanaged where TJob : unmanaged, IKernelJob where TBody : IKernelBody<T, TJob>
    {
        fixed (TJob* pj = &job) WorkerPool.For(chunks, pj, &Chunk<T, TJob, TBody>);
    }

    /// <summary>Runs one chunk of <typeparamref name="TBody"/> on the calling thread.</summary>
    public static void Inline<T, TJob, TBody>(ref TJob job, int chunk)
        where T : unmanaged where TJob : unmanaged, IKernelJob where TBody : IKernelBody<T, TJob>
    {
        fixed (TJob* pj = &job) Chunk<T, TJob, TBody>(pj, chunk);
    }

    private static void Chunk<T, TJob, TBody>(void* state, int chunk)
        where T : unmanaged where TJob : unmanaged, IKernelJob where TBody : IKernelBody<T, TJob>
    {
        ref TJob j = ref Unsafe.AsRef<TJob>(state);
        switch (j.Path)
        {
            case SimdPath.Vector512: TBody.Run<W512<T>, Vector512<T>, Vector512<double>>(ref j, chunk, true); break;
            case SimdPath.Vector256: TBody.Run<W256<T>, Vector256<T>, Vector256<double>>(ref j, chunk, true); break;
            case SimdPath.Vector128: TBody.Run<W128<T>, Vector128<T>, Vector128<double>>(ref j, chunk, true); break;
            default: TBody.Run<W128<T>, Vector128<T>, Vector128<double>>(ref j, chunk, false); break;
        }
    }
}
