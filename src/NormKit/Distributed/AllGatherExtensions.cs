namespace NormKit.Distributed;

/// <summary>Collectives built on <see cref="IAllGather"/> with results identical on every rank.</summary>
public static class AllGatherExtensions
{
    /// <summary>
    /// Replaces <paramref name="values"/> with their sum over every rank, added in rank order, so
    /// every rank holds the same bits (MPI_Allreduce leaves the order to the library). Costs one
    /// all-gather of WorldSize x values.Length doubles. <paramref name="scratch"/>, when given,
    /// must hold at least that many.
    /// </summary>
    public static void AllReduceSum(this IAllGather group, Span<double> values, double[]? scratch = null)
    {
        ArgumentNullException.ThrowIfNull(group);
        int k = group.WorldSize, n = values.Length;
        if (k == 1) return;
        long need = (long)k * n;
        if (scratch != null && scratch.Length < need)
            throw new ArgumentException($"scratch has length {scratch.Length} but WorldSize {k} x values length {n} needs {need}.", nameof(scratch));
        var all = (scratch ?? new double[need]).AsSpan(0, (int)need);
        group.AllGather(values, all);
        all[..n].CopyTo(values);
        for (int r = 1; r < k; r++)
        {
            var part = all.Slice(r * n, n);
            for (int j = 0; j < n; j++) values[j] += part[j];
        }
    }
}
