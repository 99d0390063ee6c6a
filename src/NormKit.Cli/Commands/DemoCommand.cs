using System.CommandLine;
using NormKit.Kernels;
using NormKit.Lab.Data;
using NormKit.Lab.Demos;

namespace NormKit.Cli.Commands;

/// <summary>normkit demo: the seed article's Figure 1 in numbers.</summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var data = Common.Data();
        var batch = Common.AtLeast("--batch", 2, 64, "how many test images form the batch (rows of the matrix)");
        var command = new Command("demo", Common.Prose("""
            Loads a real batch of Fashion-MNIST, applies BatchNorm1d and LayerNorm to the N x 784 matrix
            and prints per-feature and per-sample mean/std before and after: the seed article's Figure 1
            in numbers (under a second).
            """)) { data, batch };
        command.SetAction(r => Run(r, r.GetValue(data), r.GetValue(batch)));
        return command;
    }

    private static int Run(ParseResult r, string? data, int batch)
    {
        var split = FashionMnist.LoadTest(data);
        if (batch > split.Count)
            return Common.UsageError(r.InvocationConfiguration.Error, r.CommandResult, $"--batch {batch} is larger than the {split.Count} images in {split.Source}.");
        int d = split.Features;
        Console.WriteLine($"Batch: the first {batch} test images of Fashion-MNIST from {split.Source}");
        Console.WriteLine($"as a {batch} x {d} matrix: rows are samples, columns are pixel features (values in [0, 1]).");
        Console.WriteLine($"Kernels: {Simd.ActivePath} path, {NormKitThreading.MaxDegreeOfParallelism} threads.");
        Console.WriteLine();
        var stages = Figure1.Run(split.Pixels, batch, d);
        var table = Common.Table("<stage",
            "feature\nmean: avg", "feature\nmax |mean|", "feature\nstd: avg", "feature\nstd: min..max",
            "sample\nmean: avg", "sample\nmax |mean|", "sample\nstd: avg", "sample\nstd: min..max");
        foreach (var s in stages)
            table.AddTextRow([s.Name, .. Cells(s.PerFeature), .. Cells(s.PerSample)]);
        Common.Write(table);
        Console.WriteLine();
        int constant = stages[0].PerFeature.Constant;
        Console.WriteLine($"{constant} of {d} pixel features are constant over this batch (always-black borders); their std is 0");
        Console.WriteLine("and stays 0: BatchNorm maps a constant column to exactly its bias. They are left out of the std columns.");
        Console.WriteLine("BatchNorm: every column (feature) has mean 0 and std 1 across the batch; rows do not. A column whose");
        Console.WriteLine("variance is near eps (1e-5), e.g. a pixel lit in one image only, comes out with std sqrt(var / (var + eps)) < 1.");
        Console.WriteLine("LayerNorm: every row (sample) has mean 0 and std 1 across its features; columns do not.");
        return 0;
    }

    private static string[] Cells(Figure1.AxisStats a) =>
        [$"{a.MeanOfMeans:F4}", $"{a.MaxAbsMean:F4}", $"{a.MeanOfStds:F4}", $"{a.MinStd:F3}..{a.MaxStd:F3}"];
}
