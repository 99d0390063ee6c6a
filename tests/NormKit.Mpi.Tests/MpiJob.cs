using System.Diagnostics;

namespace NormKit.Mpi.Tests;

/// <summary>Starts a program under an MPI launcher and collects what it printed.</summary>
public static class MpiJob
{
    public enum Launcher { OpenMpi, Mpich, None }

    public sealed record Outcome(int ExitCode, string Output, TimeSpan Elapsed)
    {
        public override string ToString() => $"exit {ExitCode} after {Elapsed.TotalSeconds:F1} s:\n{Output}";
    }

    /// <summary>A program built beside the tests (the worker, or the normkit CLI).</summary>
    public static string Program(string name)
    {
        string path = Path.Combine(AppContext.BaseDirectory, name + ".dll");
        Assert.True(File.Exists(path), $"{path} is missing: the test project builds it by reference.");
        return path;
    }

    // Debian installs Open MPI's launcher as mpirun.openmpi (mpirun when it is the default) and
    // MPICH's as mpiexec.mpich. The tests need both (.ci/run and scripts/setup.sh install them).
    private static string Find(Launcher l)
    {
        string[] names = l == Launcher.OpenMpi ? ["mpirun.openmpi", "mpirun"] : ["mpiexec.mpich"];
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
            foreach (string n in names)
                if (File.Exists(Path.Combine(dir, n))) return Path.Combine(dir, n);
        Assert.Fail($"{string.Join(" or ", names)} is not on PATH: install {(l == Launcher.OpenMpi ? "openmpi-bin" : "mpich")} (scripts/setup.sh does).");
        return "";
    }

    /// <summary>Runs dotnet <paramref name="program"/> <paramref name="args"/> as <paramref name="np"/> ranks; kills the job after <paramref name="timeout"/>.</summary>
    public static Outcome Run(Launcher launcher, int np, string program, IEnumerable<string> args,
        IReadOnlyDictionary<string, string>? env = null, TimeSpan? timeout = null)
    {
        var psi = new ProcessStartInfo { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        if (launcher == Launcher.None) psi.FileName = "dotnet";
        else
        {
            psi.FileName = Find(launcher);
            if (launcher == Launcher.OpenMpi)
                foreach (string a in (string[])["--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]) psi.ArgumentList.Add(a);
            psi.ArgumentList.Add("-n");
            psi.ArgumentList.Add(np.ToString());
            psi.ArgumentList.Add("dotnet");
        }
        psi.ArgumentList.Add(program);
        foreach (string a in args) psi.ArgumentList.Add(a);
        psi.Environment["NORMKIT_NUM_THREADS"] = "1";
        // A test host started by an MPI job must not pass its launcher's variables on.
        foreach (string v in (string[])["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "NORMKIT_MPI_LIBRARY"]) psi.Environment.Remove(v);
        if (env != null) foreach (var (k, v) in env) psi.Environment[k] = v;

        var clock = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        var limit = timeout ?? TimeSpan.FromMinutes(3);
        if (!p.WaitForExit(limit))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            Assert.Fail($"the job did not end within {limit.TotalSeconds:F0} s (it hangs):\n{stdout.Result}\n{stderr.Result}");
        }
        p.WaitForExit();
        return new Outcome(p.ExitCode, stdout.Result + stderr.Result, clock.Elapsed);
    }
}
