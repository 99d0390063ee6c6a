using System.Numerics;
using NormKit.Distributed;

namespace NormKit.Lab.Training;

/// <summary>
/// Data-parallel training over a group of ranks (threads or MPI processes): every rank draws the
/// same global batch and keeps its contiguous shard; SyncBatchNorm layers share the whole batch's
/// statistics; after backward the parameter gradients are summed over the ranks in rank order, so
/// every rank holds the same bits and takes the same optimizer step (<see cref="Trainer{T}"/> runs
/// the steps and scales each shard's loss gradient by shard / batch, so the sum is the gradient of
/// the whole batch's mean loss).
/// </summary>
public sealed class DataParallel<T>(IAllGather? group) where T : unmanaged, IFloatingPointIeee754<T>
{
    private double[] _flat = [], _scratch = [];

    public int Rank => group?.Rank ?? 0;
    public int WorldSize => group?.WorldSize ?? 1;

    /// <summary>This rank's slice of a batch of <paramref name="batch"/>: sizes differ by at most one, larger first.</summary>
    public (int Start, int Count) Shard(int batch)
    {
        if (batch < WorldSize)
            throw new ArgumentOutOfRangeException(nameof(batch), batch, $"batch must be at least the number of ranks ({WorldSize}) so that every rank has a sample.");
        int k = WorldSize, r = Rank, each = batch / k, extra = batch % k;
        return (r * each + Math.Min(r, extra), each + (r < extra ? 1 : 0));
    }

    /// <summary>Sums every parameter gradient over the ranks (one all-gather for all of them).</summary>
    public void SumGradients(IReadOnlyList<Param<T>> parameters)
    {
        if (group is null || group.WorldSize == 1) return;
        int total = parameters.Sum(p => p.Grad.Length);
        if (_flat.Length != total) { _flat = new double[total]; _scratch = new double[total * group.WorldSize]; }
        int at = 0;
        foreach (var p in parameters)
            foreach (var v in p.Grad) _flat[at++] = double.CreateTruncating(v);
        group.AllReduceSum(_flat, _scratch);
        at = 0;
        foreach (var p in parameters)
        {
            var g = p.Grad;
            for (int i = 0; i < g.Length; i++) g[i] = T.CreateTruncating(_flat[at++]);
        }
    }

    /// <summary>A number summed over the ranks in rank order.</summary>
    public double Sum(double local)
    {
        if (group is null || group.WorldSize == 1) return local;
        Span<double> v = [local];
        group.AllReduceSum(v);
        return v[0];
    }

    /// <summary>True when every rank holds exactly these bits (compared by a 52-bit hash gathered from all).</summary>
    public bool SameOnEveryRank(ReadOnlySpan<T> values)
    {
        if (group is null || group.WorldSize == 1) return true;
        ulong h = 14695981039346656037;
        foreach (var v in values) { h ^= (ulong)BitConverter.DoubleToInt64Bits(double.CreateTruncating(v)); h *= 1099511628211; }   // FNV-1a over the bits
        var all = new double[group.WorldSize];
        group.AllGather([(double)(h & ((1UL << 52) - 1))], all);
        return all.All(x => x == all[0]);
    }
}
