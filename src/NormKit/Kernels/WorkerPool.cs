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
/// chunk has run and no thread can start another. One job runs at a time; a call made while
/// another is running (from another thread, or nested) runs inline on its own thread.
/// </summary>
/// <remarks>
/// The calling thread takes chunks like any helper and then waits only for the chunks that
/// others have claimed, never for a helper to wake up: on a busy machine a woken helper can
/// wait a scheduler tick (milliseconds) for a core, and a job of a few hundred microseconds
/// must not wait for it. A chunk is claimed with one compare-and-swap on a ticket that holds
/// the job's number and the next chunk index, so a helper that wakes late cannot claim a chunk
/// of a job that has ended (its ticket is closed) or mix up two jobs (the number differs).
/// </remarks>
internal static unsafe class WorkerPool
{
    private static readonly object s_startLock = new();
    private static readonly SemaphoreSlim s_wake = new(0);
    private static int s_workers;
    private static int s_busy;

    // The current job. Its fields are written while the ticket is closed, then the ticket is
    // opened (a full fence); a thread reads them after reading an open ticket, and uses them only
    // if its claim (a compare-and-swap of that same ticket) succeeds.
    private static void* s_state;
    private static delegate*<void*, int, void> s_body;
    private static int s_count;
    private static long s_ticket = Closed;   // job number << 32 | next chunk (Closed: none open)
    private static int s_done;                // chunks finished, run or skipped after an error
    private static int s_failed;
    private static Exception? s_error;
    private static uint s_job;
    private static long s_parallelRuns;

    private const long Closed = 0xFFFF_FFFF;    // chunk index bits all ones: no chunk can be claimed

    private static long s_helperAllocated;

    // 1 + the index of the helper running on this thread; 0 on every other thread (callers).
    [ThreadStatic] private static int t_worker;

    /// <summary>
    /// Which per-worker scratch slot the current thread takes in a job: 0 for the calling thread
    /// (and any thread that is not a helper), k for the k-th helper. Threads that run chunks of
    /// one job at the same time have different slots.
    /// </summary>
    internal static int CurrentWorker => t_worker;

    /// <summary>
    /// Scratch slots a job of <paramref name="chunks"/> chunks needs: one when it will run on the
    /// calling thread alone, else one for the caller and one per helper. Starts the helpers the
    /// current degree of parallelism needs first, so that every helper that can take a chunk
    /// has a slot (one started later by another thread's larger degree does not: see
    /// LowPrecision.Slot).
    /// </summary>
    internal static int ScratchSlots(int chunks)
    {
        int degree = Math.Min(NormKitThreading.MaxDegreeOfParallelism, chunks);
        if (degree <= 1) return 1;
        EnsureWorkers(degree - 1);
        return Volatile.Read(ref s_workers) + 1;
    }

    /// <summary>Jobs that ran with helper threads, for tests that must prove threads were used.</summary>
    internal static long ParallelRuns => Volatile.Read(ref s_parallelRuns);

    /// <summary>
    /// Bytes the helper threads have allocated, all of it, counted by each helper on its own
    /// thread after every chunk it runs, before the chunk counts as done: with the calling
    /// thread's own counter this gives a call's exact allocation, which the process-wide
    /// counter (it sees the test host's threads too) cannot.
    /// </summary>
    internal static long HelperAllocatedBytes => Volatile.Read(ref s_helperAllocated);

    private static long s_helperChunks;

    /// <summary>Chunks the helper threads have run, for tests that must prove a helper (not only the caller) ran some.</summary>
    internal static long HelperChunks => Volatile.Read(ref s_helperChunks);

    public static void For(int count, void* state, delegate*<void*, int, void> body)
    {
        int degree = Math.Min(NormKitThreading.MaxDegreeOfParallelism, count);
        if (degree <= 1 || Interlocked.CompareExchange(ref s_busy, 1, 0) != 0)
        {
            for (int i = 0; i < count; i++) body(state, i);
            return;
        }
        long job = (long)++s_job << 32;
        try
        {
            int helpers = degree - 1;
            EnsureWorkers(helpers);
            s_parallelRuns++;
            s_state = state; s_body = body; s_count = count; s_done = 0; s_failed = 0; s_error = null;
            Interlocked.Exchange(ref s_ticket, job);   // open: chunk 0 is next
            // Wake only as many helpers as are not already awake or about to be.
            int wake = helpers - s_wake.CurrentCount;
            if (wake > 0) s_wake.Release(wake);
            RunChunks(false);
            // Every chunk is claimed; wait for the ones other threads are still running.
            var spin = new SpinWait();
            while (Volatile.Read(ref s_done) != count) spin.SpinOnce(sleep1Threshold: -1);
            if (s_error is { } e) throw new AggregateException(e);
        }
        finally
        {
            Interlocked.Exchange(ref s_ticket, job | Closed);
            s_state = null; s_error = null;
            Volatile.Write(ref s_busy, 0);
        }
    }

    // Claims and runs chunks of the open job until none is left. A helper counts its
    // allocations after each chunk, before the chunk is done, so the caller sees them when For returns.
    private static void RunChunks(bool helper)
    {
        long counted = helper ? GC.GetAllocatedBytesForCurrentThread() : 0;
        while (true)
        {
            long ticket = Volatile.Read(ref s_ticket);
            uint next = (uint)ticket;
            int count = s_count;
            void* state = s_state;
            var body = s_body;
            if (next >= (uint)count)
            {
                if (Volatile.Read(ref s_ticket) == ticket) return;   // nothing left (or closed)
                continue;                                            // a new job opened meanwhile
            }
            if (Interlocked.CompareExchange(ref s_ticket, ticket + 1, ticket) != ticket) continue;
            // Chunk `next` of this job is ours: the job cannot end before it is done.
            try
            {
                if (Volatile.Read(ref s_failed) == 0) body(state, (int)next);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref s_error, e, null);
                Volatile.Write(ref s_failed, 1);
            }
            finally
            {
                if (helper)
                {
                    long now = GC.GetAllocatedBytesForCurrentThread();
                    if (now != counted) Interlocked.Add(ref s_helperAllocated, now - counted);
                    counted = now;
                    Interlocked.Increment(ref s_helperChunks);
                }
                Interlocked.Increment(ref s_done);
            }
        }
    }

    private static void EnsureWorkers(int needed)
    {
        if (Volatile.Read(ref s_workers) >= needed) return;
        lock (s_startLock)
        {
            while (s_workers < needed)
            {
                int slot = s_workers + 1;
                var t = new Thread(() => WorkerLoop(slot)) { IsBackground = true, Name = $"NormKit worker {s_workers}" };
                t.Start();
                s_workers++;
            }
        }
    }

    private static void WorkerLoop(int slot)
    {
        t_worker = slot;
        while (true)
        {
            s_wake.Wait();
            RunChunks(true);
        }
    }
}
