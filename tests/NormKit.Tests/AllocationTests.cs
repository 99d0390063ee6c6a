using NormKit.Layers;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>The span overloads allocate nothing in steady state, on one thread or several.</summary>
[Collection("Threads")]
public class AllocationTests
{
    // Bytes allocated by 10 calls after a warm-up past tiered compilation's call-count
    // threshold. With one thread all work runs on the calling thread, whose own counter is
    // exact. With helper threads the process-wide counter is read instead; it also sees the
    // test host's threads (a few hundred bytes even around an empty loop), so the smallest
    // difference from an empty loop over several windows is taken.
    private static long Allocated(Action a)
    {
        for (int i = 0; i < 100; i++) a();
        long mine = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10; i++) a();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - mine);
        if (NormKit.Kernels.NormKitThreading.MaxDegreeOfParallelism == 1) return 0;
        long least = long.MaxValue;
        for (int window = 0; window < 10 && least > 0; window++)
        {
            long t0 = GC.GetTotalAllocatedBytes(precise: true);
            for (int i = 0; i < 10; i++) Empty();
            long t1 = GC.GetTotalAllocatedBytes(precise: true);
            for (int i = 0; i < 10; i++) a();
            long t2 = GC.GetTotalAllocatedBytes(precise: true);
            least = Math.Min(least, (t2 - t1) - (t1 - t0));
        }
        return Math.Max(0, least);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void Empty() { }

    private static readonly int[] Rows = [64, 768], Nchw = [8, 16, 24, 16], Nhwc = [8, 24, 16, 16];

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Span_forward_and_backward_allocate_nothing(int threads)
    {
        var x = Data.F(Data.Normal(1, 64 * 768));
        var dy = Data.F(Data.Normal(2, x.Length));
        var y = new float[x.Length];
        var dx = new float[x.Length];
        var ln = new LayerNorm<float>(768);
        var bn = new BatchNorm2d<float>(16);
        var bnLast = new BatchNorm2d<float>(16, channelsLast: true);
        Paths.WithThreads(threads, () =>
        {
            Assert.Equal(0, Allocated(() => ln.Forward(x, Rows, y)));
            Assert.Equal(0, Allocated(() => ln.Backward(dy, x, Rows, dx)));
            Assert.Equal(0, Allocated(() => bn.Forward(x, Nchw, y)));
            Assert.Equal(0, Allocated(() => bn.Backward(dy, x, Nchw, dx)));
            Assert.Equal(0, Allocated(() => bnLast.Forward(x, Nhwc, y)));
            Assert.Equal(0, Allocated(() => bnLast.Backward(dy, x, Nhwc, dx)));
            var gn = new GroupNorm<float>(4, 16);
            var inorm = new InstanceNorm2d<float>(16, affine: true, trackRunningStats: true);
            var rms = new RMSNorm<float>(768);
            var sum = new float[x.Length];
            var mask = new bool[8 * 24 * 16];
            mask.AsSpan(0, mask.Length / 2).Fill(true);
            Assert.Equal(0, Allocated(() => gn.Forward(x, Nchw, y)));
            Assert.Equal(0, Allocated(() => gn.Backward(dy, x, Nchw, dx)));
            Assert.Equal(0, Allocated(() => inorm.Forward(x, Nchw, y)));
            Assert.Equal(0, Allocated(() => inorm.Backward(dy, x, Nchw, dx)));
            Assert.Equal(0, Allocated(() => rms.ForwardResidual(x, dy, Rows, sum, y)));
            Assert.Equal(0, Allocated(() => rms.BackwardResidual(dy, dx, sum, Rows, y)));
            Assert.Equal(0, Allocated(() => bnLast.Forward(x, Nhwc, y, mask)));
            Assert.Equal(0, Allocated(() => bnLast.Backward(dy, x, Nhwc, dx, mask)));
            bn.Eval();
            Assert.Equal(0, Allocated(() => bn.Forward(x, Nchw, y)));
            Assert.Equal(0, Allocated(() => bn.Backward(dy, x, Nchw, dx)));
            bn.Train();
        });
    }
}
