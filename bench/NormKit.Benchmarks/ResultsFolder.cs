namespace NormKit.Benchmarks;

/// <summary>Where a benchmark run writes its table: --out DIR, else bench/results (a temp folder for --smoke).</summary>
public static class ResultsFolder
{
    public static string From(string[] args, bool smoke) =>
        args.SkipWhile(a => a != "--out").Skip(1).FirstOrDefault()
        ?? (smoke ? Path.Combine(Path.GetTempPath(), "normkit-bench-smoke") : Path.Combine(RepoRoot(), "bench", "results"));

    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "NormKit.slnx"))) return d.FullName;
        return Directory.GetCurrentDirectory();
    }
}
