using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using NormKit.Distributed;
using NormKit.Kernels;
using NormKit.Mpi.Native;

namespace NormKit.Mpi;

/// <summary>
/// MPI_COMM_WORLD as NormKit's <see cref="IAllGather"/>: hand it to <c>SyncBatchNorm</c> in every
/// process of an <c>mpirun -np K</c> job and each layer normalizes with the statistics of the whole
/// batch. The system's MPI library (Open MPI's libmpi.so.40, or MPICH's libmpich.so.12) is opened at
/// run time; set <c>NORMKIT_MPI_LIBRARY</c> to a path to choose another.
/// <para>
/// A failing rank must not leave the others waiting forever in a collective or in MPI_Finalize:
/// an unhandled exception is printed and the job aborted (MPI_Abort); <see cref="Run"/> does the
/// same for an exception out of its body; and <see cref="Dispose"/> waits at most
/// <see cref="FinalizeTimeout"/> for the other ranks before aborting.
/// </para>
/// </summary>
public sealed unsafe class MpiWorld : IAllGather, IDisposable
{
    private static readonly object Gate = new();
    private static MpiWorld? _current;
    private static bool _finalized;

    private readonly MpiLibrary _lib;
    private readonly object _callLock = new();   // MPI_THREAD_SERIALIZED: one call at a time
    private bool _disposed;

    /// <inheritdoc/>
    public int Rank { get; }

    /// <inheritdoc/>
    public int WorldSize { get; }

    /// <summary>
    /// Ranks of this job on this machine, as the launcher announced it (OMPI_COMM_WORLD_LOCAL_SIZE,
    /// MPI_LOCALNRANKS), else 1.
    /// </summary>
    public static int LocalSize =>
        new[] { "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS" }.Select(Environment.GetEnvironmentVariable)
            .Select(v => int.TryParse(v, out int n) && n > 0 ? n : 0).FirstOrDefault(n => n > 0, 1);

    /// <summary>
    /// Splits this machine's cores among its ranks: NormKit's kernels use ProcessorCount / LocalSize
    /// threads (at least 1) in this process, unless NORMKIT_NUM_THREADS says otherwise. K ranks
    /// with all cores each would oversubscribe the machine K-fold.
    /// </summary>
    public static void ShareCores()
    {
        if (Environment.GetEnvironmentVariable("NORMKIT_NUM_THREADS") is { Length: > 0 }) return;
        NormKitThreading.MaxDegreeOfParallelism = Math.Max(1, Environment.ProcessorCount / LocalSize);
    }

    /// <summary>The library file that was opened.</summary>
    public string LibraryPath => _lib.Path;

    /// <summary>Its binary interface.</summary>
    public MpiFlavor Flavor => _lib.Flavor;

    /// <summary>The first line of MPI_Get_library_version.</summary>
    public string LibraryVersion { get; }

    /// <summary>
    /// How long <see cref="Dispose"/> waits for every rank to reach it before aborting the job
    /// (a rank that failed and never comes would otherwise hold the others in MPI_Finalize).
    /// Default 120 s; <c>NORMKIT_MPI_FINALIZE_TIMEOUT_S</c> overrides it.
    /// </summary>
    public TimeSpan FinalizeTimeout { get; set; } = TimeSpan.FromSeconds(
        double.TryParse(Environment.GetEnvironmentVariable("NORMKIT_MPI_FINALIZE_TIMEOUT_S"), out double s) && s > 0 ? s : 120);

    /// <summary>
    /// How long <see cref="AllGather"/> waits for the other ranks before it aborts the job, or null
    /// (the default) to wait as long as MPI does: forever. A rank that neither fails nor arrives
    /// (an endless loop, a deadlock) otherwise holds every other rank. Set it well above the
    /// longest step a rank may legitimately spend between two collectives.
    /// <c>NORMKIT_MPI_COLLECTIVE_TIMEOUT_S</c> sets it too. With a timeout the all-gather is
    /// started non-blocking (MPI_Iallgather) and polled.
    /// </summary>
    public TimeSpan? CollectiveTimeout { get; set; } =
        double.TryParse(Environment.GetEnvironmentVariable("NORMKIT_MPI_COLLECTIVE_TIMEOUT_S"), out double c) && c > 0 ? TimeSpan.FromSeconds(c) : null;

    private MpiWorld(MpiLibrary lib, int rank, int size, string version)
    {
        _lib = lib; Rank = rank; WorldSize = size; LibraryVersion = version;
    }

    /// <summary>
    /// Initializes MPI (once per process) and returns the world. Throws
    /// <see cref="MpiUnavailableException"/> when no MPI library can be loaded and
    /// <see cref="MpiLaunchMismatchException"/> when the launcher and the library disagree.
    /// Started without a launcher it is a world of one.
    /// </summary>
    public static MpiWorld Initialize()
    {
        lock (Gate)
        {
            if (_current is { _disposed: false }) return _current;
            if (_finalized) throw new InvalidOperationException("MPI was finalized in this process and cannot be initialized again (an MPI rule).");
            // Open MPI's and UCX's (MPICH's transport) SIGSEGV/SIGBUS handlers would replace the
            // runtime's, which turns null dereferences into NullReferenceException; keep the runtime's.
            // Set before loading: UCX reads its settings when the library is opened.
            Libc.SetDefaultEnv("OMPI_MCA_opal_signal", "");
            Libc.SetDefaultEnv("UCX_ERROR_SIGNALS", "");
            var lib = MpiLibrary.TryLoad(out string failures)
                ?? throw new MpiUnavailableException($"No MPI library could be loaded ({failures}). Install Open MPI (Debian: apt-get install openmpi-bin) or MPICH, or set NORMKIT_MPI_LIBRARY to the library's path; without MPI, run as one process.");
            int provided, rank, size;
            Check(lib.InitThread(null, 0, MpiLibrary.ThreadSerialized, &provided), "MPI_Init_thread");
            Check(lib.CommRank(lib.CommWorld, &rank), "MPI_Comm_rank");
            Check(lib.CommSize(lib.CommWorld, &size), "MPI_Comm_size");
            var world = new MpiWorld(lib, rank, size, lib.Version());
            if (LauncherWorldSize() is { } launched && launched.Size != size)
            {
                lib.FinalizeMpi();
                _finalized = true;
                throw new MpiLaunchMismatchException(
                    $"This process was started as one of {launched.Size} ({launched.Variable}={launched.Size}), but the MPI library it loaded, " +
                    $"{lib.Path} ({world.LibraryVersion}), sees a world of {size}: the launcher and the library belong to different MPI " +
                    "installations, and every process would train alone on its shard. Start the job with the launcher of the same MPI " +
                    "(mpirun.openmpi for libmpi.so.40, mpiexec.mpich for libmpich.so.12), or set NORMKIT_MPI_LIBRARY to the library that matches the launcher.");
            }
            // Open MPI and MPICH provide MPI_THREAD_SERIALIZED or more; NormKit's calls hold _callLock,
            // so one thread at a time is all it needs (provided is not checked further).
            AppDomain.CurrentDomain.UnhandledException += world.AbortOnUnhandled;
            return _current = world;
        }
    }

    /// <summary>
    /// Like <see cref="Initialize"/>, but returns false with the reason when no MPI library can be
    /// loaded, so the caller can run as one process. A launch mismatch still throws.
    /// </summary>
    public static bool TryInitialize([NotNullWhen(true)] out MpiWorld? world, out string reason)
    {
        try { world = Initialize(); reason = ""; return true; }
        catch (MpiUnavailableException e) { world = null; reason = e.Message; return false; }
    }

    /// <summary>
    /// The world size the launcher announced in the environment (Open MPI's mpirun:
    /// OMPI_COMM_WORLD_SIZE; MPICH's Hydra and PMI-based launchers: PMI_SIZE), or null when the
    /// process was not started by a launcher.
    /// </summary>
    public static (string Variable, int Size)? LauncherWorldSize()
    {
        foreach (string v in (string[])["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"])
            if (int.TryParse(Environment.GetEnvironmentVariable(v), out int n) && n > 0) return (v, n);
        return null;
    }

    /// <summary>
    /// Runs <paramref name="main"/> on the world and finalizes MPI. An exception out of it is
    /// printed with this rank's number and the whole job is aborted, so that no other rank waits
    /// for this one forever. Returns main's exit code.
    /// </summary>
    public static int Run(Func<MpiWorld, int> main)
    {
        var world = Initialize();
        int code;
        try { code = main(world); }
        catch (Exception e) { world.AbortWith(e); throw; /* not reached */ }
        world.Dispose();
        return code;
    }

    /// <inheritdoc/>
    public void AllGather(ReadOnlySpan<double> local, Span<double> gathered)
    {
        long need = (long)WorldSize * local.Length;
        if (gathered.Length != need)
            throw new ArgumentException($"gathered has length {gathered.Length} but WorldSize {WorldSize} x local length {local.Length} needs {need}.", nameof(gathered));
        ObjectDisposedException.ThrowIf(_disposed, this);
        lock (_callLock)
            fixed (double* s = local) fixed (double* r = gathered)
            {
                if (CollectiveTimeout is not { } limit)
                {
                    Check(_lib.Allgather(s, local.Length, _lib.Double, r, local.Length, _lib.Double, _lib.CommWorld), "MPI_Allgather");
                    return;
                }
                nint request = 0;
                Check(_lib.Iallgather(s, local.Length, _lib.Double, r, local.Length, _lib.Double, _lib.CommWorld, &request), "MPI_Iallgather");
                WaitOrAbort(&request, limit, "an all-gather");
            }
    }

    // Polls a non-blocking collective; aborts the job when it has not completed within limit.
    private void WaitOrAbort(nint* request, TimeSpan limit, string what)
    {
        long start = Stopwatch.GetTimestamp();
        for (int spins = 0; ; spins++)
        {
            int done = 0;
            Check(_lib.Test(request, &done, _lib.StatusIgnore), "MPI_Test");
            if (done != 0) return;
            if (Stopwatch.GetElapsedTime(start) > limit)
            {
                Console.Error.WriteLine($"[rank {Rank}/{WorldSize}] {what} waited {limit.TotalSeconds:F0} s for the other ranks (one failed or is stuck); aborting the MPI job.");
                Abort(1);
            }
            if (spins > 10_000) Thread.Sleep(1);   // after a short spin, stop burning a core others may need
        }
    }

    /// <summary>
    /// MPI's own sum of <paramref name="values"/> over every rank, in place (MPI_Allreduce). The
    /// library chooses the order of the additions, so the result may differ in the last bits from
    /// the rank-order sum of <see cref="AllGatherExtensions.AllReduceSum"/>; SyncBatchNorm uses the latter.
    /// </summary>
    public void AllReduceSumUnordered(Span<double> values)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        lock (_callLock)
            fixed (double* v = values)
                Check(_lib.Allreduce((void*)_lib.InPlace, v, values.Length, _lib.Double, _lib.Sum, _lib.CommWorld), "MPI_Allreduce");
    }

    /// <summary>Waits until every rank has called it.</summary>
    public void Barrier()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        lock (_callLock) Check(_lib.Barrier(_lib.CommWorld), "MPI_Barrier");
    }

    /// <summary>Ends every process of the job with <paramref name="errorCode"/> (MPI_Abort).</summary>
    [DoesNotReturn]
    public void Abort(int errorCode = 1)
    {
        Console.Out.Flush(); Console.Error.Flush();
        _lib.Abort(_lib.CommWorld, errorCode);
        Environment.Exit(errorCode);   // MPI_Abort does not return; in case a library's does
    }

    /// <summary>
    /// Finalizes MPI once every rank has reached it. If some rank does not arrive within
    /// <see cref="FinalizeTimeout"/> (it failed, or is stuck), the job is aborted instead of
    /// waiting forever.
    /// </summary>
    public void Dispose()
    {
        lock (Gate)
        {
            if (_disposed) return;
            _disposed = true;
            AppDomain.CurrentDomain.UnhandledException -= AbortOnUnhandled;
            nint request = 0;
            Check(_lib.Ibarrier(_lib.CommWorld, &request), "MPI_Ibarrier");
            WaitOrAbort(&request, FinalizeTimeout, "the end (MPI_Finalize)");
            _lib.FinalizeMpi();
            _finalized = true;
        }
    }

    private void AbortOnUnhandled(object? sender, UnhandledExceptionEventArgs e) => AbortWith(e.ExceptionObject);

    [DoesNotReturn]
    private void AbortWith(object exception)
    {
        Console.Error.WriteLine($"[rank {Rank}/{WorldSize}] unhandled exception; aborting the MPI job so that no rank waits for this one:");
        Console.Error.WriteLine(exception);
        Abort(1);
    }

    private static void Check(int code, string call)
    {
        if (code != 0) throw new MpiCallException(call, code);
    }
}
