using NormKit.Layers;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>The span overloads allocate nothing in steady state, on one thread or several.</summary>
[Collection("Threads")]
public class AllocationTests
{
    // Bytes allocated by 10 calls after a warm-up past tiered compilation's call-count
    // threshold: the calling thread's own counter plus what NormKit's helper threads count on
    // theirs. Both are exact, so the test host's other threads cannot hide or fake a result.
    internal static long Allocated(Action a)
    {
        for (int i = 0; i < 100; i++) a();
        // Steady state: the fewest bytes of three windows of 10 calls. A helper thread that runs a
        // kernel body for the first time inside a window (it woke too late to take a chunk during
        // the warm-up) pays one-time costs there, such as its thread statics; an allocation per
        // call shows in every window.
        long fewest = long.MaxValue;
        for (int window = 0; window < 3 && fewest > 0; window++)
        {
            // The helpers' counter is read outside the calling thread's window: its first read
            // initializes the worker pool, which allocates.
            long helpers = NormKit.Kernels.WorkerPool.HelperAllocatedBytes;
            long mine = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 10; i++) a();
            long mineAfter = GC.GetAllocatedBytesForCurrentThread();
            fewest = Math.Min(fewest, mineAfter - mine + (NormKit.Kernels.WorkerPool.HelperAllocatedBytes - helpers));
        }
        return fewest;
    }

    [Fact]
    public void The_helper_threads_counter_sees_an_allocation_on_a_helper()
    {
        // The counter must be able to fail: a job whose chunks each allocate 1000 bytes and take
        // long enough that the helper threads take some of them. Every chunk a helper ran must
        // show in the helpers' counter alone.
        Paths.WithThreads(2, () =>
        {
            long before = NormKit.Kernels.WorkerPool.HelperAllocatedBytes;
            AllocatingJob.Caller = Environment.CurrentManagedThreadId;
            AllocatingJob.OffCaller = 0;
            for (int k = 0; k < 50; k++) AllocatingJob.Run();
            long helpers = NormKit.Kernels.WorkerPool.HelperAllocatedBytes - before;
            Assert.True(AllocatingJob.OffCaller > 0, "no chunk ran on a helper thread");
            Assert.True(helpers >= AllocatingJob.OffCaller * 1000L,
                $"the helpers ran {AllocatingJob.OffCaller} chunks of 1000 bytes but their counter shows {helpers} bytes");
        });
    }

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

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void BatchRenorm_and_GhostBatchNorm_span_calls_allocate_nothing(int threads)
    {
        var x = Data.F(Data.Normal(3, 8 * 16 * 24 * 16));
        var dy = Data.F(Data.Normal(4, x.Length));
        var y = new float[x.Length];
        var dx = new float[x.Length];
        var brn = new BatchRenorm<float>(16, rMax: 1.5, dMax: 0.5);
        var gbn = new GhostBatchNorm<float>(16, 2);
        var gbnLast = new GhostBatchNorm<float>(16, 4, channelsLast: true);
        Paths.WithThreads(threads, () =>
        {
            Assert.Equal(0, Allocated(() => brn.Forward(x, Nchw, y)));
            Assert.Equal(0, Allocated(() => brn.Backward(dy, x, Nchw, dx)));
            Assert.Equal(0, Allocated(() => gbn.Forward(x, Nchw, y)));
            Assert.Equal(0, Allocated(() => gbn.Backward(dy, x, Nchw, dx)));
            Assert.Equal(0, Allocated(() => gbnLast.Forward(x, Nhwc, y)));
            Assert.Equal(0, Allocated(() => gbnLast.Backward(dy, x, Nhwc, dx)));
            brn.Eval(); gbn.Eval();
            Assert.Equal(0, Allocated(() => brn.Forward(x, Nchw, y)));
            Assert.Equal(0, Allocated(() => gbn.Forward(x, Nchw, y)));
            brn.Train(); gbn.Train();
        });
    }
}

internal static unsafe class AllocatingJob
{
    public static int Caller, OffCaller;

    public static void Run() => NormKit.Kernels.WorkerPool.For(64, null, &Chunk);

    private static void Chunk(void* state, int i)
    {
        GC.KeepAlive(new byte[1000 - 24]);
        Thread.SpinWait(2000);
        if (Environment.CurrentManagedThreadId != Caller) Interlocked.Increment(ref OffCaller);
    }
}
