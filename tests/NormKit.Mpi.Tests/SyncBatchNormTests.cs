using System.Numerics;
using System.Runtime.InteropServices;
using NormKit.Layers;
using static NormKit.Mpi.Tests.MpiJob;

namespace NormKit.Mpi.Tests;

/// <summary>
/// SyncBatchNorm over MPI against BatchNorm in one process on the whole batch: every rank runs its
/// shard of two training steps and one eval step (the worker), and the shards' outputs, input
/// gradients, summed parameter gradients and running statistics must equal the whole batch's.
/// </summary>
[Collection("mpi")]
public class SyncBatchNormTests
{
    private static readonly string Worker = Program("NormKit.Mpi.Worker");

    private sealed record Case(string Name, string Type, int[] Shape, bool ChannelsLast, double? Momentum);

    private static readonly Case[] Cases =
    [
        new("bn1d", "double", [10, 4], false, 0.1),
        new("bn1d_seq", "double", [6, 3, 5], false, null),
        new("bn2d", "double", [7, 3, 4, 5], false, 0.1),
        new("bn2d_cl", "double", [7, 4, 5, 3], true, 0.1),
        new("bn3d", "double", [5, 2, 3, 2, 4], false, 0.3),
        new("bn2d_f32", "float", [9, 3, 6, 6], false, 0.1),
        new("bn1d_f32_cl", "float", [8, 5, 6], true, null),
    ];

    // Uneven shards, and with 4 ranks one empty: rank 1 gets nothing.
    private static int[] Shards(int n, int np) => np switch
    {
        2 => [n - n / 3, n / 3],
        4 => [n / 2, 0, n / 4, n - n / 2 - n / 4],
        _ => Enumerable.Range(0, np).Select(r => n / np + (r < n % np ? 1 : 0)).ToArray(),
    };

    // With a collective timeout the all-gathers run non-blocking (MPI_Iallgather, polled).
    [Theory]
    [InlineData(Launcher.OpenMpi, 2, false)]
    [InlineData(Launcher.OpenMpi, 4, false)]
    [InlineData(Launcher.OpenMpi, 3, true)]
    [InlineData(Launcher.Mpich, 2, false)]
    [InlineData(Launcher.Mpich, 3, false)]
    [InlineData(Launcher.Mpich, 2, true)]
    public void Shards_over_MPI_equal_the_whole_batch(Launcher launcher, int np, bool collectiveTimeout)
    {
        string dir = Directory.CreateTempSubdirectory("normkit-syncbn-").FullName;
        string specs = string.Join(";", Cases.Select(c =>
            $"{c.Name}|{c.Type}|{string.Join(",", c.Shape)}|{string.Join(",", Shards(c.Shape[0], np))}|{(c.ChannelsLast ? "cl" : "cf")}|{c.Momentum?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none"}"));
        var r = Run(launcher, np, Worker, ["syncbn", dir, specs],
            collectiveTimeout ? new Dictionary<string, string> { ["NORMKIT_MPI_COLLECTIVE_TIMEOUT_S"] = "60" } : null);
        Assert.True(r.ExitCode == 0, r.ToString());
        foreach (var c in Cases)
        {
            if (c.Type == "float") Check<float>(c, dir, np, rtol: 1e-5, atol: 1e-5);
            else Check<double>(c, dir, np, rtol: 1e-12, atol: 1e-12);
        }
        Directory.Delete(dir, true);
    }

    private static void Check<T>(Case c, string dir, int np, double rtol, double atol) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int[] shards = Shards(c.Shape[0], np);
        int ch = c.ChannelsLast ? c.Shape[^1] : c.Shape[1];
        int sample = c.Shape[1..].Aggregate(1, (a, b) => a * b), total = c.Shape[0] * sample;
        double[] inputs = Read(dir, c.Name + ".inputs");
        Assert.Equal(4 * total, inputs.Length);
        T[] Part(int k) => inputs.AsSpan(k * total, total).ToArray().Select(T.CreateTruncating).ToArray();
        T[] x1 = Part(0), x2 = Part(1), dy1 = Part(2), dy2 = Part(3);

        // The reference: one BatchNorm on the whole batch, same parameters, same steps.
        BatchNorm<T> bn = c.Shape.Length switch
        {
            <= 3 => new BatchNorm1d<T>(ch, momentum: c.Momentum, channelsLast: c.ChannelsLast),
            4 => new BatchNorm2d<T>(ch, momentum: c.Momentum, channelsLast: c.ChannelsLast),
            _ => new BatchNorm3d<T>(ch, momentum: c.Momentum, channelsLast: c.ChannelsLast),
        };
        for (int i = 0; i < ch; i++) { S(bn.Weight!)[i] = T.CreateTruncating(1 + 0.1 * i); S(bn.Bias!)[i] = T.CreateTruncating(-0.05 * i); }
        var y = new T[total]; var dx = new T[total]; var yEval = new T[total];
        foreach (var (x, dy) in new[] { (x1, dy1), (x2, dy2) })
        {
            bn.ZeroGrad();
            bn.Forward(x, c.Shape, y);
            bn.Backward(dy, x, c.Shape, dx);
        }
        bn.Eval();
        bn.Forward(x1, c.Shape, yEval);

        var dW = new double[ch]; var dB = new double[ch];
        double[]? firstRunning = null;
        int start = 0;
        for (int rank = 0; rank < np; rank++)
        {
            int len = shards[rank] * sample;
            double[] got = Read(dir, $"{c.Name}.rank{rank}");
            Assert.Equal(3 * len + 4 * ch, got.Length);
            string where = $"{c.Name} ({typeof(T).Name}, {np} ranks) rank {rank}";
            Close(got.AsSpan(0, len), y.AsSpan(start, len), rtol, atol, where + " output");
            Close(got.AsSpan(len, len), dx.AsSpan(start, len), rtol, atol, where + " input gradient");
            for (int i = 0; i < ch; i++) { dW[i] += got[2 * len + i]; dB[i] += got[2 * len + ch + i]; }
            var running = got.AsSpan(2 * len + 2 * ch, 2 * ch).ToArray();
            Close(running.AsSpan(0, ch), S(bn.RunningMean!), rtol, atol, where + " running mean");
            Close(running.AsSpan(ch, ch), S(bn.RunningVar!), rtol, atol, where + " running var");
            firstRunning ??= running;
            Assert.True(firstRunning.AsSpan().SequenceEqual(running), $"{where}: running statistics differ from rank 0's bits");
            Close(got.AsSpan(2 * len + 4 * ch, len), yEval.AsSpan(start, len), rtol, atol, where + " eval output");
            start += len;
        }
        Close(dW, S(bn.WeightGrad!), rtol, atol, $"{c.Name} weight gradient summed over {np} ranks");
        Close(dB, S(bn.BiasGrad!), rtol, atol, $"{c.Name} bias gradient summed over {np} ranks");
    }

    private static void Close<T>(ReadOnlySpan<double> got, ReadOnlySpan<T> want, double rtol, double atol, string what) where T : unmanaged, IFloatingPointIeee754<T>
    {
        Assert.True(got.Length == want.Length, $"{what}: {got.Length} values, expected {want.Length}");
        for (int i = 0; i < got.Length; i++)
        {
            double w = double.CreateTruncating(want[i]);
            Assert.True(Math.Abs(got[i] - w) <= atol + rtol * Math.Abs(w), $"{what}[{i}]: {got[i]:R} vs whole batch {w:R}");
        }
    }

    private static Span<T> S<T>(System.Numerics.Tensors.Tensor<T> t) => MemoryMarshal.CreateSpan(ref t.GetPinnableReference(), (int)t.FlattenedLength);
    private static double[] Read(string dir, string name) => MemoryMarshal.Cast<byte, double>(File.ReadAllBytes(Path.Combine(dir, name + ".bin"))).ToArray();
}
