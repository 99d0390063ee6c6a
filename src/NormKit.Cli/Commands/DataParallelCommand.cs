using System.CommandLine;
using System.Numerics;
using NormKit.Lab.Data;
using NormKit.Lab.Experiments;
using NormKit.Mpi;

namespace NormKit.Cli.Commands;

/// <summary>normkit lab data-parallel: the vision CNN with SyncBatchNorm trained over MPI.</summary>
internal static class DataParallelCommand
{
    public static Command Create()
    {
        var defaults = new DataParallelVision.Config();
        var steps = Common.AtLeast("--steps", 1, defaults.Steps, "training steps");
        var batch = Common.AtLeast("--batch", 2, defaults.Batch, "the whole batch B; each of the K processes takes B/K of it");
        var useDouble = Common.Flag("--double", "train in float64 (default: float32)");
        var adamw = Common.Flag("--adamw", "AdamW instead of SGD with momentum");
        var check = Common.Flag("--check", "then train the same model in one process on the whole batch, compare losses and weights and chart the loss difference per step");
        var data = Common.Data();
        var outDir = Common.Out("lab-results", "losses, weights and charts");
        var command = new Command("data-parallel", Common.Prose("""
            Run as: mpirun -np K normkit lab data-parallel [options]

            The vision CNN with SyncBatchNorm trained data-parallel over MPI: each of the K processes takes
            B/K of every batch, gradients are summed over the ranks. Rank 0 prints the loss, the time per
            step and the part spent exchanging, and writes DIR/data-parallel-npK-losses.csv and
            -weights.bin. --check then compares with one process on the whole batch and charts the loss
            difference per step (DIR/data-parallel-npK-check.png; float32 and float64 runs into one DIR
            share it). Started without mpirun it runs as one process (no MPI needed). The default 40 steps
            take a few seconds.
            """)) { steps, batch, useDouble, adamw, check, data, outDir };
        command.SetAction(r =>
        {
            var config = defaults with { Steps = r.GetValue(steps), Batch = r.GetValue(batch) };
            if (r.GetValue(adamw)) config = config with { AdamW = true, LearningRate = 2e-3 };
            string dir = r.GetValue(outDir)!;
            var (train, _) = FashionMnist.TrainAndTest(r.GetValue(data));
            return r.GetValue(useDouble) ? Run<double>(config, train, dir, r.GetValue(check)) : Run<float>(config, train, dir, r.GetValue(check));
        });
        return command;
    }

    private static int Run<T>(DataParallelVision.Config config, FashionMnist.Split train, string outDir, bool check)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        string type = typeof(T) == typeof(float) ? "float32" : "float64";
        if (MpiWorld.LauncherWorldSize() is null)
        {
            Console.WriteLine($"Not started by an MPI launcher: one process, batch {config.Batch}, {config.Steps} steps, {type}.");
            var single = DataParallelVision.Run<T>(config, train);
            DataParallelVision.Save(single, outDir, "data-parallel-np1");
            PrintLosses(single.Losses);
            Console.WriteLine($"median step {single.StepSeconds * 1e3:F1} ms. Wrote {outDir}/data-parallel-np1-losses.csv and -weights.bin.");
            return 0;
        }
        MpiWorld.ShareCores();
        return MpiWorld.Run(world =>
        {
            if (world.Rank == 0)
                Console.WriteLine($"{world.WorldSize} ranks over {world.Flavor} ({world.LibraryVersion}): batch {config.Batch} split {config.Batch / world.WorldSize}-{(config.Batch + world.WorldSize - 1) / world.WorldSize} per rank, {config.Steps} steps, {type}.");
            var r = DataParallelVision.Run<T>(config, train, world);
            if (world.Rank != 0) return r.SameOnEveryRank ? 0 : 1;
            string prefix = $"data-parallel-np{world.WorldSize}";
            DataParallelVision.Save(r, outDir, prefix);
            PrintLosses(r.Losses);
            Console.WriteLine($"median step {r.StepSeconds * 1e3:F2} ms, of which {r.ExchangeSeconds * 1e3:F3} ms in {r.ExchangesPerStep} all-gathers receiving {r.ExchangeDoubles} doubles ({r.ExchangeDoubles * 8 / 1024.0:F1} KiB) per rank.");
            Console.WriteLine($"weights bit-identical on every rank: {(r.SameOnEveryRank ? "yes" : "NO")}. Wrote {outDir}/{prefix}-losses.csv and -weights.bin.");
            int code = r.SameOnEveryRank ? 0 : 1;
            if (check)
            {
                var single = DataParallelVision.Run<T>(config, train);
                DataParallelVision.Save(single, outDir, "data-parallel-np1");
                var (dl, dw) = DataParallelVision.Difference(r, single);
                string chart = DataParallelVision.PlotCheck(r.Losses, single.Losses, world.WorldSize, type, outDir);
                Console.WriteLine($"Wrote {chart}.png and .svg (loss difference per step) and the data beside them.");
                string versus = $"against one process on the whole batch: largest loss difference {dl:E2}, largest weight difference {dw:E2} (relative to max(1, |value|))";
                if (DataParallelVision.Tolerance<T>(config) is { } tol)
                {
                    bool ok = dl <= tol && dw <= tol;
                    Console.WriteLine($"{versus}; tolerance {tol:E0}: {(ok ? "equal within tolerance" : "NOT EQUAL")}.");
                    if (!ok) code = 1;
                }
                else
                    Console.WriteLine($"{versus}. No tolerance is promised for {(config.AdamW ? "AdamW, whose step m/sqrt(v) magnifies rounding in near-zero gradients" : $"float32 beyond {DataParallelVision.MaxFloatSteps} steps, where the rounding differences grow with the steps and tip max-pool or ReLU decisions (docs/lab)")}; --double stays within 1e-12.");
            }
            return code;
        });
    }

    private static void PrintLosses(double[] losses)
    {
        int every = Math.Max(1, losses.Length / 8);
        for (int i = 0; i < losses.Length; i++)
            if ((i + 1) % every == 0 || i == 0 || i == losses.Length - 1) Console.WriteLine($"  step {i + 1,5}  loss {losses[i]:F6}");
    }
}
