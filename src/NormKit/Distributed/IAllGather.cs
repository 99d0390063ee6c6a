namespace NormKit.Distributed;

/// <summary>
/// The one collective SyncBatchNorm needs: every rank contributes a small vector of doubles
/// of the same length and receives all of them in rank order. Implement it over any
/// transport (threads, MPI, sockets); <see cref="InProcessGroup"/> is the in-process one.
/// </summary>
public interface IAllGather
{
    /// <summary>This participant's index, 0 .. WorldSize - 1.</summary>
    int Rank { get; }

    /// <summary>Number of participants.</summary>
    int WorldSize { get; }

    /// <summary>
    /// Sends <paramref name="local"/> and fills <paramref name="gathered"/> (length
    /// WorldSize * local.Length) with every rank's vector, rank r's at r * local.Length.
    /// Every rank must call it with the same length, the same number of times.
    /// </summary>
    void AllGather(ReadOnlySpan<double> local, Span<double> gathered);
}

/// <summary>
/// K participants in one process (one thread each), exchanging through shared memory. A
/// participant that does not arrive within <see cref="Timeout"/> makes the others throw a
/// <see cref="TimeoutException"/> instead of waiting forever.
/// </summary>
public sealed class InProcessGroup
{
    private readonly Barrier _barrier;
    private readonly object _lock = new();
    private double[] _buffer = [];
    private readonly Member[] _members;

    /// <summary>How long a participant waits for the others at each step. Default 30 s.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Creates a group of <paramref name="worldSize"/> participants.</summary>
    public InProcessGroup(int worldSize)
    {
        Guard.Positive(worldSize, nameof(worldSize));
        _barrier = new Barrier(worldSize);
        _members = new Member[worldSize];
        for (int r = 0; r < worldSize; r++) _members[r] = new Member(this, r);
    }

    /// <summary>The participant with rank <paramref name="rank"/>.</summary>
    public IAllGather this[int rank] => _members[rank];

    private void Wait(int rank)
    {
        if (!_barrier.SignalAndWait(Timeout))
            throw new TimeoutException($"Rank {rank} waited {Timeout.TotalSeconds:F0} s for the other {_barrier.ParticipantCount - 1} participants of the all-gather.");
    }

    private sealed class Member(InProcessGroup group, int rank) : IAllGather
    {
        public int Rank => rank;
        public int WorldSize => group._members.Length;

        public void AllGather(ReadOnlySpan<double> local, Span<double> gathered)
        {
            int k = WorldSize, n = local.Length;
            if (gathered.Length != (long)k * n)
                throw new ArgumentException($"gathered has length {gathered.Length} but WorldSize {k} x local length {n} needs {(long)k * n}.", nameof(gathered));
            lock (group._lock)
                if (group._buffer.Length < k * n) group._buffer = new double[k * n];
            group.Wait(rank);                       // everyone sees the grown buffer
            local.CopyTo(group._buffer.AsSpan(rank * n, n));
            group.Wait(rank);                       // everyone has written
            group._buffer.AsSpan(0, k * n).CopyTo(gathered);
            group.Wait(rank);                       // everyone has read before the next call writes
        }
    }
}
