namespace NormKit.Kernels;

/// <summary>
/// Threading settings for NormKit's kernels. Work is always split into chunks chosen from
/// the shape alone, and every cross-chunk reduction is merged in chunk order, so results are
/// bitwise identical for any <see cref="MaxDegreeOfParallelism"/>.
/// </summary>
public static class NormKitThreading
{
    private static int _maxDegree = Math.Max(1, Environment.ProcessorCount);

    /// <summary>
    /// Threads a kernel call may use, the calling thread included. Default: the processor
    /// count; 1 runs every kernel on the calling thread. Also settable with the environment
    /// variable NORMKIT_NUM_THREADS.
    /// </summary>
    public static int MaxDegreeOfParallelism
    {
        get => _maxDegree;
        set
        {
            if (value < 1)
                throw new ArgumentOutOfRangeException(nameof(value), value, $"MaxDegreeOfParallelism must be >= 1 but was {value}.");
            _maxDegree = value;
        }
    }

    static NormKitThreading()
    {
        if (int.TryParse(Environment.GetEnvironmentVariable("NORMKIT_NUM_THREADS"), out int n) && n >= 1)
            _maxDegree = n;
    }
}

/// <summary>
/// A small pool of persistent worker threads that runs <c>body(state, chunk)</c> for
/// chunk = 0..count-1. It allocates nothing per call: the job is a pointer to the caller's
/// stack plus a function pointer, valid because <see cref="For"/> returns only after every
/// helper has left the job. One job runs at a time; a call made while another is running
/// (from another thread, or nested) runs inline on its own thread.
/// </summary>
internal static unsafe class WorkerPool
{
    private static readonly object s_startLock = new();
    private static readonly SemaphoreSlim s_wake = new(0);
    private static int s_workers;
    private static int s_busy;

    // The current job; written before helpers are woken, read by them after waking.
    private static void* s_state;
    private static delegate*<void*, int, void> s_body;
    private static int s_count;
    private static int s_next;
    private static int s_activeHelpers;
    private static Exception? s_error;
    private static long s_parallelRuns;

    private static long s_helperAllocated;

    /// <summary>Jobs that ran with helper threads, for tests that must prove threads were used.</summary>
    internal static long ParallelRuns => Volatile.Read(ref s_parallelRuns);

    /// <summary>
    /// Bytes the helper threads have allocated, all of it, counted by each helper on its own
    /// thread at the end of every job: with the calling thread's own counter this gives a
    /// call's exact allocation, which the process-wide counter (it sees the test host's
    /// threads too) cannot.
    /// </summary>
    internal static long HelperAllocatedBytes => Volatile.Read(ref s_helperAllocated);

    public static void For(int count, void* state, delegate*<void*, int, void> body)
    {
        int degree = Math.Min(NormKitThreading.MaxDegreeOfParallelism, count);
        if (degree <= 1 || Interlocked.CompareExchange(ref s_busy, 1, 0) != 0)
        {
            for (int i = 0; i < count; i++) body(state, i);
            return;
        }
        try
        {
            int helpers = degree - 1;
            EnsureWorkers(helpers);
            s_parallelRuns++;
            s_state = state; s_body = body; s_count = count; s_next = 0; s_error = null;
            Volatile.Write(ref s_activeHelpers, helpers);
            s_wake.Release(helpers);
            RunChunks();
            var spin = new SpinWait();
            while (Volatile.Read(ref s_activeHelpers) != 0) spin.SpinOnce(sleep1Threshold: -1);
            if (s_error is { } e) { s_error = null; throw new AggregateException(e); }
        }
        finally
        {
            s_state = null;
            Volatile.Write(ref s_busy, 0);
        }
    }

    private static void RunChunks()
    {
        int count = s_count;
        void* state = s_state;
        var body = s_body;
        try
        {
            int i;
            while ((i = Interlocked.Increment(ref s_next) - 1) < count) body(state, i);
        }
        catch (Exception e)
        {
            s_error ??= e;
            Volatile.Write(ref s_next, count);
        }
    }

    private static void EnsureWorkers(int needed)
    {
        if (Volatile.Read(ref s_workers) >= needed) return;
        lock (s_startLock)
        {
            while (s_workers < needed)
            {
                var t = new Thread(WorkerLoop) { IsBackground = true, Name = $"NormKit worker {s_workers}" };
                t.Start();
                s_workers++;
            }
        }
    }

    private static void WorkerLoop()
    {
        long counted = GC.GetAllocatedBytesForCurrentThread();
        while (true)
        {
            s_wake.Wait();
            RunChunks();
            long now = GC.GetAllocatedBytesForCurrentThread();
            Interlocked.Add(ref s_helperAllocated, now - counted);
            counted = now;
            Interlocked.Decrement(ref s_activeHelpers);
        }
    }
}
