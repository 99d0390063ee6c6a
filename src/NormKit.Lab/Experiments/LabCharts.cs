using System.Text.RegularExpressions;
using NormKit.Lab.Data;
using NormKit.Lab.Results;

namespace NormKit.Lab.Experiments;

/// <summary>
/// Every chart of the lab drawn again from a set of CSV results (docs/lab's, or a folder's), with
/// the same plotting code the experiments use: <c>normkit lab charts</c>, and the report's
/// committed full-mode section.
/// </summary>
public static partial class LabCharts
{
    /// <summary>What was drawn (paths without extension) and which CSV files were not there to draw from.</summary>
    public sealed record Drawn(List<string> Charts, List<string> Missing);

    /// <summary>The CSV files a full set of results holds, in the order their charts are drawn.</summary>
    public static readonly string[] Files =
        ["saturation.csv", "saturation-10layers.csv", "batch-size.csv", "vision.csv", "language.csv", "shift.csv", "resnet.csv", "resnet-curves.csv", "resnet-batch-size.csv", "lr-sweep.csv"];

    /// <summary>
    /// Draws every chart <paramref name="results"/> has the data for into <paramref name="outDir"/>
    /// (PNG and SVG, the names docs/lab uses); with <paramref name="figureImages"/> also the two
    /// Figure 1 charts (figure-batch from the first test images, figure-norms).
    /// </summary>
    public static Drawn DrawAll(LabResults results, string outDir, FashionMnist.Split? figureImages = null)
    {
        ArgumentNullException.ThrowIfNull(results);
        ArgumentException.ThrowIfNullOrEmpty(outDir);
        Directory.CreateDirectory(outDir);
        var charts = new List<string>();
        var missing = new List<string>();
        void Draw<T>(string file, Func<string, List<T>> parse, Func<List<T>, IEnumerable<string>> draw)
        {
            var rows = results.Read(file, parse);
            if (rows is null) missing.Add(file);
            else charts.AddRange(draw(rows));
        }
        if (figureImages != null) charts.AddRange(Figure.Write(figureImages, outDir));
        Draw("saturation.csv", Saturation.Parse, p => SaturationPlots.Write(p, outDir, "saturation", Saturation.ConfigOf(p)));
        Draw("saturation-10layers.csv", Saturation.Parse, p => SaturationPlots.Write(p, outDir, "saturation-10layers", Saturation.ConfigOf(p)));
        Draw("batch-size.csv", BatchSize.Parse, p => [BatchSize.Plot(p, outDir, "batch-size")]);
        Draw("vision.csv", Vision.Parse, r => [Vision.Plot(r, outDir)]);
        Draw("language.csv", Language.Parse, r => [Language.Plot(r, outDir)]);
        Draw("shift.csv", Shift.Parse, p => [Shift.Plot(p, outDir)]);
        Draw("resnet.csv", ResNetVision.Parse, r => [ResNetVision.Plot(r, outDir)]);
        Draw("resnet-curves.csv", ResNetVision.ParseCurves, p => [ResNetVision.PlotCurves(p, outDir)]);
        Draw("resnet-batch-size.csv", BatchSize.Parse, p => [BatchSize.Plot(p, outDir, "resnet-batch-size", "residual CNN (width 8)")]);
        Draw("lr-sweep.csv", LearningRateSweep.Parse, r => LearningRateSweep.Plot(r, outDir));
        foreach (int ranks in results.Files.Select(f => CheckFile().Match(f)).Where(m => m.Success).Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).Distinct().Order())
            if (DataParallelVision.DrawCheck(results, ranks, outDir) is { } path) charts.Add(path);
        return new Drawn(charts, missing);
    }

    [GeneratedRegex(@"^data-parallel-np(\d+)-float(32|64)-check\.csv$")]
    private static partial Regex CheckFile();
}
