using static NormKit.Mpi.Tests.MpiJob;

namespace NormKit.Mpi.Tests;

// The jobs use every core; running two at once would only make both slower.
[CollectionDefinition("mpi", DisableParallelization = true)]
public sealed class MpiCollection;

[Collection("mpi")]
public class WorldTests
{
    private static readonly string Worker = Program("NormKit.Mpi.Worker");

    [Theory]
    [InlineData(Launcher.None, 1, "OpenMpi")]
    [InlineData(Launcher.OpenMpi, 1, "OpenMpi")]
    [InlineData(Launcher.OpenMpi, 2, "OpenMpi")]
    [InlineData(Launcher.OpenMpi, 4, "OpenMpi")]
    [InlineData(Launcher.Mpich, 2, "Mpich")]
    [InlineData(Launcher.Mpich, 3, "Mpich")]
    public void Every_rank_gathers_every_rank_in_rank_order(Launcher launcher, int np, string flavor)
    {
        var r = Run(launcher, np, Worker, ["info"]);
        Assert.True(r.ExitCode == 0, r.ToString());
        string gathered = string.Join(",", Enumerable.Range(0, np));
        for (int rank = 0; rank < np; rank++)
            Assert.Contains($"rank {rank} of {np}; {flavor}; ", r.Output);
        var lines = r.Output.Split('\n').Where(l => l.Contains(" of " + np + ";")).ToList();
        Assert.Equal(np, lines.Count);
        Assert.All(lines, l => Assert.Contains($"gathered {gathered}; NullReferenceException caught: True; " +
            $"refused: gathered has length {np * 2 + 1} but WorldSize {np} x local length 2 needs {np * 2}.", l));
    }

    [Theory]
    [InlineData("/nonexistent/libmpi.so.40", "/nonexistent/libmpi.so.40: ")]
    [InlineData("libz.so.1", "libz.so.1: the library has no MPI_Init_thread")]
    public void Without_an_MPI_library_the_caller_is_told_why_and_can_run_alone(string library, string reason)
    {
        var r = Run(Launcher.None, 1, Worker, ["info"], new Dictionary<string, string> { ["NORMKIT_MPI_LIBRARY"] = library });
        Assert.True(r.ExitCode == 3, r.ToString());
        Assert.Contains("unavailable: No MPI library could be loaded (" + reason, r.Output);
        Assert.Contains("Install Open MPI", r.Output);
    }

    [Theory]
    [InlineData(Launcher.Mpich, "libmpi.so.40", "PMI_SIZE=2")]
    [InlineData(Launcher.OpenMpi, "libmpich.so.12", "OMPI_COMM_WORLD_SIZE=2")]
    public void A_launcher_of_another_MPI_is_detected(Launcher launcher, string library, string announced)
    {
        var r = Run(launcher, 2, Worker, ["info"], new Dictionary<string, string> { ["NORMKIT_MPI_LIBRARY"] = library });
        Assert.True(r.ExitCode != 0, r.ToString());
        Assert.Contains("MpiLaunchMismatchException", r.Output);
        Assert.Contains($"started as one of 2 ({announced})", r.Output);
        Assert.Contains($"the MPI library it loaded, {library}", r.Output);
        Assert.Contains("sees a world of 1", r.Output);
        Assert.DoesNotContain("gathered", r.Output);
    }

    // Rank 1 throws (or, "stuck", never arrives: an endless loop, under a collective timeout)
    // while rank 0 (and 2, 3) wait for it in an all-gather: the job must end, non-zero, with the
    // reason printed, not hang.
    [Theory]
    [InlineData(Launcher.OpenMpi, 2, "unhandled", "aborting the MPI job so that no rank waits")]
    [InlineData(Launcher.OpenMpi, 4, "unhandled", "aborting the MPI job so that no rank waits")]
    [InlineData(Launcher.OpenMpi, 2, "run", "aborting the MPI job so that no rank waits")]
    [InlineData(Launcher.OpenMpi, 2, "caught", "the end (MPI_Finalize) waited 5 s for the other ranks")]
    [InlineData(Launcher.Mpich, 2, "unhandled", "aborting the MPI job so that no rank waits")]
    [InlineData(Launcher.OpenMpi, 2, "stuck", "an all-gather waited 5 s for the other ranks")]
    [InlineData(Launcher.OpenMpi, 4, "stuck", "an all-gather waited 5 s for the other ranks")]
    [InlineData(Launcher.Mpich, 2, "stuck", "an all-gather waited 5 s for the other ranks")]
    [InlineData(Launcher.Mpich, 2, "caught", "the end (MPI_Finalize) waited 5 s for the other ranks")]
    public void A_failing_rank_ends_the_job_instead_of_hanging_it(Launcher launcher, int np, string mode, string said)
    {
        var r = Run(launcher, np, Worker, ["fail", mode, "1"],
            new Dictionary<string, string> { ["NORMKIT_MPI_FINALIZE_TIMEOUT_S"] = "5", ["NORMKIT_MPI_COLLECTIVE_TIMEOUT_S"] = mode == "stuck" ? "5" : "" },
            timeout: TimeSpan.FromSeconds(90));
        Assert.True(r.ExitCode != 0, r.ToString());
        Assert.Contains(mode == "stuck" ? "rank 1 is stuck" : "injected failure on rank 1", r.Output);
        Assert.Contains(said, r.Output);
        Assert.DoesNotContain("the all-gather returned", r.Output);
    }
}

/// <summary>The example of docs/Distributed.md, run as it says.</summary>
[Collection("mpi")]
public class SampleTests
{
    [Theory]
    [InlineData(Launcher.OpenMpi, 2)]
    [InlineData(Launcher.Mpich, 3)]
    public void The_documented_sample_gives_every_rank_the_same_statistics(Launcher launcher, int np)
    {
        var r = Run(launcher, np, Program("NormKit.MpiSample"), []);
        Assert.True(r.ExitCode == 0, r.ToString());
        var lines = r.Output.Split('\n').Where(l => l.Contains($" of {np}: running_mean[0] = ")).ToList();
        Assert.Equal(np, lines.Count);
        // Identical after the rank prefix; and the running mean is the whole batch's: rank r's
        // values are centred on r, so the batch mean is about (np - 1) / 2 and the running mean
        // after one step is 0.1 of it.
        var tails = lines.Select(l => l[l.IndexOf(':')..].Trim()).Distinct().ToList();
        Assert.Single(tails);
        double runningMean = double.Parse(tails[0].Split('=')[1].Split(',')[0], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(runningMean, 0.1 * (np - 1) / 2.0 - 0.01, 0.1 * (np - 1) / 2.0 + 0.01);
    }
}
