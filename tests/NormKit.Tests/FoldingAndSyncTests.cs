using NormKit.Distributed;
using NormKit.Inference;
using NormKit.Layers;
using NormKit.Tests.Reference;
using NormKit.Tests.Support;

namespace NormKit.Tests;

public class FoldingTests
{
    // A plain Linear and a plain 2D convolution (stride 1, no padding), written here for the test.
    private static double[] Linear(double[] x, int n, int inF, double[] w, double[] b, int outF)
    {
        var y = new double[n * outF];
        for (int a = 0; a < n; a++)
            for (int o = 0; o < outF; o++)
            {
                double s = b[o];
                for (int i = 0; i < inF; i++) s += w[o * inF + i] * x[a * inF + i];
                y[a * outF + o] = s;
            }
        return y;
    }

    private static double[] Conv(double[] x, int n, int ci, int h, int wd, double[] w, double[] b, int co, int k)
    {
        int oh = h - k + 1, ow = wd - k + 1;
        var y = new double[n * co * oh * ow];
        for (int a = 0; a < n; a++)
            for (int o = 0; o < co; o++)
                for (int r = 0; r < oh; r++)
                    for (int c = 0; c < ow; c++)
                    {
                        double s = b[o];
                        for (int i = 0; i < ci; i++)
                            for (int u = 0; u < k; u++)
                                for (int v = 0; v < k; v++)
                                    s += w[((o * ci + i) * k + u) * k + v] * x[((a * ci + i) * h + r + u) * wd + c + v];
                        y[((a * co + o) * oh + r) * ow + c] = s;
                    }
        return y;
    }

    private static BatchNorm<double> TrainedBatchNorm(BatchNorm<double> bn, int[] shape, int seed)
    {
        // A few training steps give non-trivial running statistics; then random affine parameters.
        for (int step = 0; step < 3; step++)
            bn.Forward(Data.Normal(seed + step, shape.Aggregate(1, (p, d) => p * d), step, 2), shape, new double[shape.Aggregate(1, (p, d) => p * d)]);
        Data.Normal(seed + 10, bn.NumFeatures, 1, 0.5).CopyTo(Guard.Span(bn.Weight!));
        Data.Normal(seed + 11, bn.NumFeatures).CopyTo(Guard.Span(bn.Bias!));
        bn.Eval();
        return bn;
    }

    [Fact]
    public void Folded_linear_equals_linear_then_batchnorm()
    {
        const int n = 6, inF = 5, outF = 4;
        var bn = TrainedBatchNorm(new BatchNorm1d<double>(outF), [8, outF], 1);
        var w = Data.Normal(2, outF * inF); var b = Data.Normal(3, outF);
        var x = Data.Normal(4, n * inF);
        var apart = new double[n * outF];
        bn.Forward(Linear(x, n, inF, w, b, outF), [n, outF], apart);
        BatchNormFolding.Fold(bn, w, b);
        Check.Close(apart, Linear(x, n, inF, w, b, outF), Tol.F64, "folded linear");
    }

    [Fact]
    public void Folded_convolution_equals_convolution_then_batchnorm()
    {
        const int n = 2, ci = 3, co = 6, h = 7, k = 3;
        var bn = TrainedBatchNorm(new BatchNorm2d<double>(co), [4, co, 3, 3], 5);
        var w = Data.Normal(6, co * ci * k * k); var b = new double[co];   // a convolution without bias
        var x = Data.Normal(7, n * ci * h * h);
        var conv = Conv(x, n, ci, h, h, w, b, co, k);
        var apart = new double[conv.Length];
        bn.Forward(conv, [n, co, h - k + 1, h - k + 1], apart);
        BatchNormFolding.Fold(bn, w, b);
        Check.Close(apart, Conv(x, n, ci, h, h, w, b, co, k), Tol.F64, "folded convolution");
    }

    [Fact]
    public void Folding_checks_its_arguments()
    {
        var bn = new BatchNorm1d<float>(4);
        Assert.Contains("multiple of the 4", Assert.Throws<ArgumentException>(() => BatchNormFolding.Fold(bn, new float[10], new float[4])).Message);
        Assert.Equal("bias", Assert.Throws<ArgumentException>(() => BatchNormFolding.Fold(bn, new float[8], new float[3])).ParamName);
        Assert.Throws<ArgumentException>(() => BatchNormFolding.Fold(new BatchNorm1d<float>(4, trackRunningStats: false), new float[8], new float[4]));
    }
}

/// <summary>BatchNorm over K shards with exchanged (count, mean, M2) equals BatchNorm over the whole batch.</summary>
[Collection("Threads")]
public class SyncBatchNormTests
{
    public static TheoryData<int[], bool> Splits() => new()
    {
        { new[] { 10 }, false },
        { new[] { 5, 5 }, false },
        { new[] { 3, 0, 7 }, true },
        { new[] { 1, 2, 3, 4 }, false },
        { new[] { 2, 2, 2, 2, 2 }, true },
        { new[] { 0, 4, 1, 1, 0, 4 }, false },
        { new[] { 1, 1, 1, 1, 1, 1, 4 }, true },
        { new[] { 3, 1, 0, 2, 1, 1, 1, 1 }, false },
    };

    [Theory, MemberData(nameof(Splits))]
    public void Shards_give_the_whole_batch_statistics_outputs_and_gradients(int[] sizes, bool channelsLast)
    {
        const int n = 10, c = 5, s = 6;
        int k = sizes.Length;
        Assert.Equal(n, sizes.Sum());
        var x = Data.Normal(1, n * c * s, 3, 2);
        var dy = Data.Normal(2, x.Length);
        int per = c * s;
        int[] Shape(int m) => channelsLast ? [m, s, c] : [m, c, s];

        var whole = new BatchNorm1d<double>(c, channelsLast: channelsLast);
        var y = new double[x.Length]; var dx = new double[x.Length];
        for (int step = 0; step < 2; step++)
        {
            whole.Forward(x, Shape(n), y);
            whole.Backward(dy, x, Shape(n), dx);
        }

        var group = new InProcessGroup(k);
        var layers = new SyncBatchNorm<double>[k];
        var ys = new double[k][]; var dxs = new double[k][];
        var threads = Enumerable.Range(0, k).Select(r => new Thread(() =>
        {
            int start = sizes.Take(r).Sum() * per, len = sizes[r] * per;
            var xs = x.AsSpan(start, len).ToArray(); var dys = dy.AsSpan(start, len).ToArray();
            layers[r] = new SyncBatchNorm<double>(c, group[r], channelsLast: channelsLast);
            ys[r] = new double[len]; dxs[r] = new double[len];
            for (int step = 0; step < 2; step++)
            {
                layers[r].Forward(xs, Shape(sizes[r]), ys[r]);
                layers[r].Backward(dys, xs, Shape(sizes[r]), dxs[r]);
            }
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();

        var tol = new Tol(1e-12, 1e-12);
        Check.Close(y, ys.SelectMany(v => v).ToArray(), tol, "y");
        Check.Close(dx, dxs.SelectMany(v => v).ToArray(), tol, "dx");
        for (int r = 0; r < k; r++)
        {
            Check.BitEqual<double>(Guard.Span(layers[0].RunningMean!), Guard.Span(layers[r].RunningMean!), $"running_mean of rank {r}");
            Check.BitEqual<double>(Guard.Span(layers[0].RunningVar!), Guard.Span(layers[r].RunningVar!), $"running_var of rank {r}");
            Assert.Equal(2, layers[r].NumBatchesTracked);
        }
        Check.Close(Guard.Span(whole.RunningMean!).ToArray(), Guard.Span(layers[0].RunningMean!), tol, "running_mean");
        Check.Close(Guard.Span(whole.RunningVar!).ToArray(), Guard.Span(layers[0].RunningVar!), tol, "running_var");
        var dw = new double[c]; var db = new double[c];
        foreach (var l in layers)
            for (int j = 0; j < c; j++) { dw[j] += Guard.Span(l.WeightGrad!)[j]; db[j] += Guard.Span(l.BiasGrad!)[j]; }
        Check.Close(Guard.Span(whole.WeightGrad!).ToArray(), dw, tol, "sum of dWeight over ranks");
        Check.Close(Guard.Span(whole.BiasGrad!).ToArray(), db, tol, "sum of dBias over ranks");
    }

    [Fact]
    public void From_copies_a_trained_BatchNorm_and_continues_it_exactly()
    {
        var x = Data.Normal(3, 8 * 4 * 5, 1, 2);
        var bn = new BatchNorm2d<double>(4, eps: 1e-3, momentum: null, channelsLast: true) { GuardRunningStats = false };
        for (int j = 0; j < 4; j++) { Guard.Span(bn.Weight!)[j] = 1 + j; Guard.Span(bn.Bias!)[j] = -j; }
        var y = new double[x.Length];
        bn.Forward(x, [2, 4, 5, 4], y);                       // running stats and NumBatchesTracked move
        var sync = SyncBatchNorm<double>.From(bn, new InProcessGroup(1)[0]);
        Assert.Equal((bn.NumFeatures, bn.Eps, bn.Momentum, bn.Affine, bn.TrackRunningStats, bn.ChannelsLast, bn.GuardRunningStats, bn.Training),
            (sync.NumFeatures, sync.Eps, sync.Momentum, sync.Affine, sync.TrackRunningStats, sync.ChannelsLast, sync.GuardRunningStats, sync.Training));
        Assert.Equal(1, sync.NumBatchesTracked);
        Check.BitEqual<double>(Guard.Span(bn.Weight!), Guard.Span(sync.Weight!), "weight");
        Check.BitEqual<double>(Guard.Span(bn.RunningVar!), Guard.Span(sync.RunningVar!), "running_var");
        // A copy, not a share: the source is unchanged by the new layer's training.
        var ys = new double[x.Length];
        sync.Forward(x, [2, 4, 5, 4], ys);
        Assert.Equal(1, bn.NumBatchesTracked);
        bn.Forward(x, [2, 4, 5, 4], y);                       // both take the same second step (cumulative average)
        Check.Close(Guard.Span(bn.RunningMean!).ToArray(), Guard.Span(sync.RunningMean!), new Tol(1e-15, 1e-15), "running_mean after a second step");
        Check.Close(y, ys, new Tol(1e-15, 1e-15), "output");
        bn.Eval();
        Assert.False(SyncBatchNorm<double>.From(bn, new InProcessGroup(1)[0]).Training);
        Assert.Equal("source", Assert.Throws<ArgumentNullException>(() => SyncBatchNorm<double>.From(null!, new InProcessGroup(1)[0])).ParamName);
    }

    // Without running statistics eval also normalizes with batch statistics; NormKit takes the
    // whole batch's there too (PyTorch's SyncBatchNorm does not sync in eval: each rank would use
    // its shard's), so the result does not depend on how the batch was split.
    [Fact]
    public void Without_running_statistics_eval_uses_the_whole_batch()
    {
        int[] sizes = [3, 5];
        const int c = 2, s = 4, n = 8;
        var x = Data.Normal(7, n * c * s, 2, 3);
        var whole = new BatchNorm1d<double>(c, trackRunningStats: false);
        whole.Eval();
        var y = new double[x.Length];
        whole.Forward(x, [n, c, s], y);
        var group = new InProcessGroup(2);
        var ys = new double[2][];
        Parallel.For(0, 2, new ParallelOptions { MaxDegreeOfParallelism = 2 }, r =>
        {
            int start = sizes.Take(r).Sum() * c * s, len = sizes[r] * c * s;
            var bn = new SyncBatchNorm<double>(c, group[r], trackRunningStats: false);
            bn.Eval();
            ys[r] = new double[len];
            bn.Forward(x.AsSpan(start, len), [sizes[r], c, s], ys[r]);
        });
        Check.Close(y, ys.SelectMany(v => v).ToArray(), new Tol(1e-12, 1e-12), "eval output without running statistics");
    }

    [Fact]
    public void AllReduceSum_adds_in_rank_order_and_every_rank_gets_the_same_bits()
    {
        const int k = 3;
        double[][] values = [[1e16, 1, 0.1], [1, -1e16, 0.2], [-1e16, 3, 0.3]];
        var group = new InProcessGroup(k);
        var results = new double[k][];
        Parallel.For(0, k, new ParallelOptions { MaxDegreeOfParallelism = k }, r =>
        {
            var v = values[r].ToArray();
            group[r].AllReduceSum(v);
            results[r] = v;
        });
        double[] expected = Enumerable.Range(0, 3).Select(j => (values[0][j] + values[1][j]) + values[2][j]).ToArray();
        foreach (var r in results) Check.BitEqual<double>(expected, r, "rank-order sum");
        Assert.Equal(0.0, results[0][0]);   // (1e16 + 1) - 1e16 in rank order; 1 in exact arithmetic

        var one = new double[] { 5 };
        new InProcessGroup(1)[0].AllReduceSum(one);
        Assert.Equal(5, one[0]);
        var kept = new double[] { 7, 8 };
        var e = Assert.Throws<ArgumentException>(() => new InProcessGroup(2)[0].AllReduceSum(kept, new double[3]));
        Assert.Equal("scratch", e.ParamName);
        Assert.Contains("needs 4", e.Message);
        Assert.Equal([7.0, 8.0], kept);
    }

    [Fact]
    public void A_missing_rank_times_out_instead_of_hanging()
    {
        var group = new InProcessGroup(2) { Timeout = TimeSpan.FromMilliseconds(200) };
        var bn = new SyncBatchNorm<float>(3, group[0]);
        var e = Assert.Throws<TimeoutException>(() => bn.Forward(new float[12], [4, 3], new float[12]));
        Assert.Contains("Rank 0", e.Message);
    }
}
