using NormKit.Kernels;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>
/// The worker pool's contract: every chunk of a job runs exactly once, with that job's state,
/// before For returns, however late a helper wakes; an exception in a chunk reaches the caller
/// and the pool keeps working.
/// </summary>
[Trait("Category", "Kernel")]
[Collection("Threads")]
public unsafe class WorkerPoolTests
{
    private struct Job
    {
        public int Id;
        public int* Runs;        // per chunk: how many times it ran
        public int* WrongState;  // chunks that saw another job's id
    }

    private static void CountChunk(void* state, int chunk)
    {
        ref Job j = ref *(Job*)state;
        if (j.Id != Volatile.Read(ref s_currentJob)) Interlocked.Increment(ref *j.WrongState);
        Interlocked.Increment(ref j.Runs[chunk]);
        if ((chunk & 3) == 0) Thread.SpinWait(50);   // uneven chunks, so helpers take some mid-job
    }

    private static int s_currentJob;

    [Theory]
    [InlineData(2)]
    [InlineData(3)]   // more threads than this test machine may have cores: helpers wake late
    public void Back_to_back_jobs_run_every_chunk_once_with_their_own_state(int threads)
    {
        Paths.WithThreads(threads, () =>
        {
            var runs = new int[64];
            var wrong = new int[1];
            fixed (int* pr = runs, pw = wrong)
            {
                for (int k = 1; k <= 20_000; k++)
                {
                    int count = 1 + k % 37;
                    Array.Clear(runs);
                    Volatile.Write(ref s_currentJob, k);
                    var job = new Job { Id = k, Runs = pr, WrongState = pw };
                    WorkerPool.For(count, &job, &CountChunk);
                    for (int c = 0; c < runs.Length; c++)
                        if (runs[c] != (c < count ? 1 : 0))
                            Assert.Fail($"job {k} of {count} chunks: chunk {c} ran {runs[c]} times");
                    job.Id = -1;   // a chunk of this job that ran after For returned would see it
                }
            }
            Assert.Equal(0, Volatile.Read(ref wrong[0]));
        });
    }

    private static void Throws(void* state, int chunk)
    {
        Thread.SpinWait(200);
        if (chunk == 5) throw new InvalidOperationException("chunk 5");
    }

    private static void Nothing(void* state, int chunk) => Interlocked.Increment(ref *(int*)state);

    [Fact]
    public void An_exception_in_a_chunk_reaches_the_caller_and_the_pool_keeps_working()
    {
        Paths.WithThreads(2, () =>
        {
            for (int k = 0; k < 20; k++)
            {
                var e = Assert.Throws<AggregateException>(() => WorkerPool.For(16, null, &Throws));
                Assert.Equal("chunk 5", Assert.IsType<InvalidOperationException>(e.InnerException).Message);
                int ran = 0;
                WorkerPool.For(16, &ran, &Nothing);
                Assert.Equal(16, ran);
            }
        });
    }
}
