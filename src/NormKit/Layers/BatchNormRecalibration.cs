using System.Numerics;

namespace NormKit.Layers;

/// <summary>
/// Re-estimates BatchNorm running statistics from a data set, as PyTorch's
/// torch.optim.swa_utils.update_bn does: after training (SWA), or on data from another
/// distribution (AdaBN, Li et al. 2016: the test distribution's statistics instead of the training
/// one's).
/// </summary>
public static class BatchNormRecalibration
{
    /// <summary>
    /// Resets the running statistics of <paramref name="layers"/>, puts them in training mode,
    /// runs <paramref name="forwardAll"/> (which must pass every batch of the data set through the
    /// model, leaving these layers in training mode), each batch entering the running statistics
    /// as a cumulative average (momentum null: the running mean is the mean of the batch means,
    /// the running variance the mean of the batches' unbiased variances), and then restores each
    /// layer's mode. Momentum is not changed. If <paramref name="forwardAll"/> throws, every
    /// layer's running statistics, batch count and mode are restored and the exception propagates.
    /// Afterwards NumBatchesTracked is the number of batches, as in PyTorch.
    /// </summary>
    /// <exception cref="ArgumentException">A layer keeps no running statistics, or is given twice.</exception>
    public static void Recompute<T>(IReadOnlyList<BatchNorm<T>> layers, Action forwardAll) where T : unmanaged, IFloatingPointIeee754<T>
    {
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentNullException.ThrowIfNull(forwardAll);
        for (int i = 0; i < layers.Count; i++)
        {
            if (layers[i] is null) throw new ArgumentException($"layers[{i}] is null.", nameof(layers));
            if (!layers[i].TrackRunningStats)
                throw new ArgumentException($"layers[{i}] keeps no running statistics (trackRunningStats: false), so there is nothing to recompute.", nameof(layers));
            for (int j = 0; j < i; j++)
                if (ReferenceEquals(layers[i], layers[j]))
                    throw new ArgumentException($"layers[{i}] is the same layer as layers[{j}]; each layer may be given once.", nameof(layers));
        }
        var saved = layers.Select(l => (Mean: Data(l, "running_mean").ToArray(), Var: Data(l, "running_var").ToArray(), l.NumBatchesTracked, l.Training)).ToArray();
        bool done = false;
        try
        {
            foreach (var l in layers)
            {
                l.ResetRunningStats();
                l.CumulativeUpdate = true;
                l.Train(true);
            }
            forwardAll();
            done = true;
        }
        finally
        {
            for (int i = 0; i < layers.Count; i++)
            {
                var l = layers[i];
                l.CumulativeUpdate = false;
                l.Train(saved[i].Training);
                if (!done)
                {
                    saved[i].Mean.CopyTo(Data(l, "running_mean"), 0);
                    saved[i].Var.CopyTo(Data(l, "running_var"), 0);
                    l.BatchesTracked = saved[i].NumBatchesTracked;
                }
            }
        }
    }

    private static T[] Data<T>(NormLayer<T> layer, string name) where T : unmanaged, IFloatingPointIeee754<T> =>
        layer.Tensors.First(t => t.Name == name).Data;
}
