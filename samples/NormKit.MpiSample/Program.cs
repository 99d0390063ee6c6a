// SyncBatchNorm over MPI in a few lines (the example of docs/Distributed.md):
//   mpirun -np 2 dotnet samples/NormKit.MpiSample/bin/Release/net10.0/NormKit.MpiSample.dll
// Each rank holds a different shard (rank r's values are centred on r); the layer normalizes
// with the whole batch's statistics, so every rank prints the same running mean.
using NormKit.Distributed;
using NormKit.Layers;
using NormKit.Mpi;

MpiWorld.ShareCores();                       // K ranks on one machine share its cores
return MpiWorld.Run(world =>                 // an exception on any rank aborts the whole job
{
    const int c = 4, n = 8, s = 16;          // this rank's shard: n samples of c channels x s positions
    var bn = new SyncBatchNorm<float>(c, world);
    var rng = new Random(world.Rank);
    var x = new float[n * c * s];
    for (int i = 0; i < x.Length; i++) x[i] = world.Rank + (float)rng.NextDouble() - 0.5f;
    var y = new float[x.Length];
    bn.Forward(x, [n, c, s], y);             // whole-batch statistics
    var dx = new float[x.Length];
    bn.Backward(y, x, [n, c, s], dx);        // whole-batch input gradient (y as the upstream gradient)

    // WeightGrad and BiasGrad hold this shard's part: sum them over the ranks (in rank order,
    // the same bits everywhere) before an optimizer step, as data-parallel training does.
    var grads = new double[2 * c];
    for (int j = 0; j < c; j++) { grads[j] = bn.WeightGrad![j]; grads[c + j] = bn.BiasGrad![j]; }
    world.AllReduceSum(grads);

    Console.WriteLine($"rank {world.Rank} of {world.WorldSize}: running_mean[0] = {bn.RunningMean![0]:R}, summed weight gradient[0] = {grads[0]:R}");
    return 0;
});
