using NormKit.Lab.Experiments;
using NormKit.Lab.Results;

namespace NormKit.Lab.Tests;

/// <summary>Every chart drawn again from CSV files: what <c>normkit lab charts</c> does.</summary>
public sealed class LabChartsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("normkit-charts-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void The_committed_charts_are_drawn_from_their_csv_files_and_missing_files_are_named()
    {
        string from = Path.Combine(_dir, "from");
        Directory.CreateDirectory(from);
        foreach (string file in (string[])["batch-size.csv", "saturation-10layers.csv"])
            File.WriteAllText(Path.Combine(from, file), LabResults.Committed.Csv(file));
        var drawn = LabCharts.DrawAll(LabResults.Folder(from), Path.Combine(_dir, "out"));
        Assert.Equal(["batch-size", "saturation-10layers-glorot-accuracy", "saturation-10layers-glorot-percentiles", "saturation-10layers-glorot-saturation",
            "saturation-10layers-small-init-accuracy", "saturation-10layers-small-init-percentiles", "saturation-10layers-small-init-saturation"],
            drawn.Charts.Select(c => Path.GetFileName(c)).Order(StringComparer.Ordinal));
        Assert.Equal(LabCharts.Files.Except(["batch-size.csv", "saturation-10layers.csv"]), drawn.Missing);
        string svg = File.ReadAllText(Path.Combine(_dir, "out", "saturation-10layers-glorot-accuracy.svg"));
        Assert.Contains("10 x 100 sigmoid", svg);   // not the 3-layer title
        // The batch-size axis is ticked at the batch sizes themselves.
        var texts = System.Text.RegularExpressions.Regex.Matches(File.ReadAllText(Path.Combine(_dir, "out", "batch-size.svg")), @">\s*([^<>]*?)\s*</text>")
            .Select(m => m.Groups[1].Value).ToHashSet();
        Assert.Subset(texts, new HashSet<string> { "2", "4", "8", "16", "32", "64", "128" });
        Assert.DoesNotContain("1.5", texts);
    }
}
