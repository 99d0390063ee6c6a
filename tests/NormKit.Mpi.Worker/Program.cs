using System.Numerics;
using System.Runtime.InteropServices;
using NormKit.Layers;
using NormKit.Mpi;

// One process of a multi-process test job, started by mpirun from NormKit.Mpi.Tests.
//   info                      print rank, size and library; check NullReferenceException still works
//   syncbn OUT SPEC[;SPEC..]  run SyncBatchNorm on this rank's shard of each case, write results to OUT
//   fail MODE RANK            rank RANK fails: unhandled | run | caught | stuck (see Fail below)
return args.FirstOrDefault() switch
{
    "info" => Info(),
    "syncbn" => MpiWorld.Run(world => SyncBn.RunAll(world, args[1], args[2])),
    "fail" => Fail(args[1], int.Parse(args[2])),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: NormKit.Mpi.Worker info | syncbn OUT SPECS | fail unhandled|run|caught RANK");
    return 2;
}

static int Info()
{
    if (!MpiWorld.TryInitialize(out var world, out string reason))
    {
        Console.WriteLine($"unavailable: {reason}");
        return 3;
    }
    using (world)
    {
        bool nre = false;
        try { string? s = null; _ = s!.Length; } catch (NullReferenceException) { nre = true; }
        // A wrong length is refused before any MPI call (which would otherwise corrupt memory or hang).
        string refused = "";
        try { world.AllGather([1.0, 2.0], new double[world.WorldSize * 2 + 1]); }
        catch (ArgumentException e) when (e.ParamName == "gathered") { refused = e.Message; }
        var all = new double[world.WorldSize];
        world.AllGather([world.Rank], all);
        Console.WriteLine($"rank {world.Rank} of {world.WorldSize}; {world.Flavor}; {world.LibraryPath}; gathered {string.Join(",", all)}; NullReferenceException caught: {nre}; refused: {refused}");
    }
    return 0;
}

// The failing rank throws before the first collective while the others enter it (and would wait
// for it forever): "unhandled" lets the exception escape Main, "run" throws inside MpiWorld.Run,
// "caught" catches it and disposes the world, which must not wait forever in MPI_Finalize;
// "stuck" never arrives (sleeps), which the others' CollectiveTimeout must notice.
static int Fail(string mode, int failing)
{
    void Step(MpiWorld w)
    {
        if (w.Rank == failing && mode == "stuck")
        {
            Console.Error.WriteLine($"rank {failing} is stuck");
            Thread.Sleep(Timeout.Infinite);
        }
        if (w.Rank == failing) throw new InvalidOperationException($"injected failure on rank {failing}");
        var all = new double[w.WorldSize];
        w.AllGather([w.Rank], all);
        Console.WriteLine($"rank {w.Rank}: the all-gather returned, which it must not while rank {failing} is gone");
    }
    switch (mode)
    {
        case "run":
        case "stuck":
            return MpiWorld.Run(w => { Step(w); return 0; });
        case "caught":
            using (var w = MpiWorld.Initialize())
                try { Step(w); }
                catch (InvalidOperationException e) { Console.Error.WriteLine($"rank {w.Rank} caught: {e.Message}"); }
            return 1;
        default:
            using (var world = MpiWorld.Initialize())   // a using block: its Dispose must not be what ends the job
                Step(world);
            return 0;
    }
}

static class SyncBn
{
    // SPEC: name|float or double|global shape (N first)|shard sizes, one per rank|cf or cl|momentum or none
    public static int RunAll(MpiWorld world, string outDir, string specs)
    {
        foreach (string spec in specs.Split(';', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] f = spec.Split('|');
            if (f[1] == "float") Run<float>(world, outDir, f); else Run<double>(world, outDir, f);
        }
        return 0;
    }

    private static void Run<T>(MpiWorld world, string outDir, string[] f) where T : unmanaged, IFloatingPointIeee754<T>
    {
        string name = f[0];
        int[] shape = f[2].Split(',').Select(int.Parse).ToArray();
        int[] shards = f[3].Split(',').Select(int.Parse).ToArray();
        bool channelsLast = f[4] == "cl";
        double? momentum = f[5] == "none" ? null : double.Parse(f[5], System.Globalization.CultureInfo.InvariantCulture);
        if (shards.Length != world.WorldSize || shards.Sum() != shape[0])
            throw new ArgumentException($"case {name}: shards {f[3]} must be {world.WorldSize} sizes summing to N = {shape[0]}.");
        int c = channelsLast ? shape[^1] : shape[1];
        int sample = 1;
        for (int i = 1; i < shape.Length; i++) sample *= shape[i];
        int total = shape[0] * sample;

        // Every rank draws the whole batch with the same seed and keeps its shard.
        var rng = new Random(name.Aggregate(17, (h, ch) => h * 31 + ch));
        double[] Draw(double scale, double offset) => Enumerable.Range(0, total).Select(_ => offset + scale * Normal(rng)).ToArray();
        double[] x1 = Draw(2, 3), x2 = Draw(0.5, -1), dy1 = Draw(1, 0), dy2 = Draw(1, 0.2);
        if (world.Rank == 0) Write(outDir, $"{name}.inputs", [.. Round<T>(x1), .. Round<T>(x2), .. Round<T>(dy1), .. Round<T>(dy2)]);

        int start = shards.Take(world.Rank).Sum() * sample, len = shards[world.Rank] * sample;
        int[] local = [shards[world.Rank], .. shape[1..]];
        T[] Shard(double[] a) => a.AsSpan(start, len).ToArray().Select(T.CreateTruncating).ToArray();

        var bn = new SyncBatchNorm<T>(c, world, momentum: momentum, channelsLast: channelsLast);
        for (int i = 0; i < c; i++) { S(bn.Weight!)[i] = T.CreateTruncating(1 + 0.1 * i); S(bn.Bias!)[i] = T.CreateTruncating(-0.05 * i); }
        var y = new T[len]; var dx = new T[len];
        foreach (var (x, dy) in new[] { (x1, dy1), (x2, dy2) })
        {
            bn.ZeroGrad();
            var xs = Shard(x);
            bn.Forward(xs, local, y);
            bn.Backward(Shard(dy), xs, local, dx);
        }
        var yEval = new T[len];
        bn.Eval();
        bn.Forward(Shard(x1), local, yEval);
        // y, dx: step 2 on this shard; dW, dB: this shard's part of step 2; running stats after both steps; eval output of x1
        Write(outDir, $"{name}.rank{world.Rank}",
            [.. D(y), .. D(dx), .. D(S(bn.WeightGrad!).ToArray()), .. D(S(bn.BiasGrad!).ToArray()),
             .. D(S(bn.RunningMean!).ToArray()), .. D(S(bn.RunningVar!).ToArray()), .. D(yEval)]);
    }

    private static double[] Round<T>(double[] a) where T : unmanaged, IFloatingPointIeee754<T> => a.Select(v => double.CreateTruncating(T.CreateTruncating(v))).ToArray();
    private static double[] D<T>(T[] a) where T : unmanaged, IFloatingPointIeee754<T> => a.Select(double.CreateTruncating).ToArray();
    private static Span<T> S<T>(System.Numerics.Tensors.Tensor<T> t) => MemoryMarshal.CreateSpan(ref t.GetPinnableReference(), (int)t.FlattenedLength);
    private static double Normal(Random r) => Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble());
    private static void Write(string dir, string name, double[] values) => File.WriteAllBytes(Path.Combine(dir, name + ".bin"), MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
}
