using NormKit.Lab.Data;
using System.Globalization;
using System.Numerics;
using System.Runtime.InteropServices;
using NormKit.Lab.Experiments;
using static NormKit.Mpi.Tests.MpiJob;

namespace NormKit.Mpi.Tests;

/// <summary>
/// The lab's data-parallel CNN (normkit lab data-parallel) under mpirun against the same model
/// trained in this process on the whole batch: the same loss at every step and the same final
/// weights, within <see cref="DataParallelVision.Tolerance{T}"/>
/// (1e-12 in float64 over 20 steps; 1e-5 in float32, promised for 10 steps).
/// </summary>
[Collection("mpi")]
public class DataParallelTests
{
    private static readonly string Cli = Program("NormKit.Cli");

    [Theory]
    [InlineData(Launcher.OpenMpi, 2, "double")]
    [InlineData(Launcher.OpenMpi, 4, "double")]
    [InlineData(Launcher.OpenMpi, 3, "float")]
    [InlineData(Launcher.Mpich, 2, "double")]
    [InlineData(Launcher.Mpich, 2, "float")]
    public void Training_over_K_processes_equals_one_process(Launcher launcher, int np, string type)
    {
        if (type == "double") Check<double>(launcher, np);
        else Check<float>(launcher, np);
    }

    private static void Check<T>(Launcher launcher, int np) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int Steps = typeof(T) == typeof(double) ? 20 : DataParallelVision.MaxFloatSteps;
        string dir = Directory.CreateTempSubdirectory("normkit-dp-").FullName;
        string[] args = ["lab", "data-parallel", "--steps", Steps.ToString(), "--out", dir, .. typeof(T) == typeof(double) ? ["--double"] : Array.Empty<string>()];
        var r = Run(launcher, np, Cli, args);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains($"{np} ranks over", r.Output);
        Assert.Contains("weights bit-identical on every rank: yes", r.Output);

        var reference = DataParallelVision.Run<T>(new DataParallelVision.Config(Steps: Steps), FashionMnist.TrainAndTest(null).Train);
        double[] losses = File.ReadAllLines(Path.Combine(dir, $"data-parallel-np{np}-losses.csv")).Skip(1)
            .Select(l => double.Parse(l.Split(',')[1], CultureInfo.InvariantCulture)).ToArray();
        T[] weights = MemoryMarshal.Cast<byte, T>(File.ReadAllBytes(Path.Combine(dir, $"data-parallel-np{np}-weights.bin"))).ToArray();
        Assert.Equal(Steps, losses.Length);
        Assert.Equal(reference.Weights.Length, weights.Length);
        var distributed = reference with { Losses = losses, Weights = weights };
        var (dl, dw) = DataParallelVision.Difference(distributed, reference);
        double tol = DataParallelVision.Tolerance<T>(new DataParallelVision.Config(Steps: Steps))!.Value;
        Assert.True(dl <= tol, $"largest loss difference {dl:E2} > {tol:E0}");
        Assert.True(dw <= tol, $"largest weight difference {dw:E2} > {tol:E0}");
        // Training moved the weights: the comparison is not of two untouched initializations.
        Assert.True(reference.Losses[^1] < reference.Losses[0] - 0.5, $"loss {reference.Losses[0]} -> {reference.Losses[^1]}");
        Directory.Delete(dir, true);
    }
}
