using ScottPlot;

namespace NormKit.Lab.Plots;

/// <summary>Line charts saved as PNG and SVG, with the DejaVu font (Debian's fonts-dejavu-core).</summary>
public static class Charts
{
    /// <summary>The typeface every chart is drawn with.</summary>
    public const string FontFamily = "DejaVu Sans";

    /// <summary>
    /// The family the renderer really uses for <paramref name="family"/>: the same name when that
    /// font is installed, otherwise null (ScottPlot would silently fall back to another font).
    /// </summary>
    public static string? ResolvedFamily(string family = FontFamily) =>
        SkiaSharp.SKFontManager.Default.MatchFamily(family) is { } typeface && typeface.FamilyName == family ? family : null;

    /// <summary>One series: a legend label and its points; OpenMarkers series are told apart by hollow markers (the SVG backend draws no dashes).</summary>
    public sealed record Series(string Label, double[] X, double[] Y, bool OpenMarkers = false);

    /// <summary>Draws the series on one chart and writes <paramref name="pathWithoutExtension"/>.png and .svg.</summary>
    /// <param name="xTicks">Labels at x = 0, 1, 2, ... instead of numbers (categories on the x axis).</param>
    public static void Lines(string pathWithoutExtension, string title, string xLabel, string yLabel, IEnumerable<Series> series, int width = 800, int height = 500, string[]? xTicks = null)
    {
        var plot = new Plot();
        plot.Font.Set(FontFamily);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        foreach (var s in series)
        {
            var line = plot.Add.Scatter(s.X, s.Y);
            line.LegendText = s.Label;
            line.MarkerSize = 3;
            if (s.OpenMarkers) line.MarkerShape = MarkerShape.OpenCircle;
        }
        if (xTicks != null) plot.Axes.Bottom.SetTicks(Enumerable.Range(0, xTicks.Length).Select(i => (double)i).ToArray(), xTicks);
        plot.ShowLegend(Edge.Right);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(pathWithoutExtension))!);
        plot.SavePng(pathWithoutExtension + ".png", width, height);
        plot.SaveSvg(pathWithoutExtension + ".svg", width, height);
    }

    /// <summary>A bar per label with optional error bars (one standard deviation); writes PNG and SVG.</summary>
    public static void Bars(string pathWithoutExtension, string title, string yLabel, string[] labels, double[] values, double[]? errors = null, int width = 800, int height = 450)
    {
        var plot = new Plot();
        plot.Font.Set(FontFamily);
        plot.Title(title);
        plot.YLabel(yLabel);
        var bars = plot.Add.Bars(values);
        for (int i = 0; i < values.Length; i++)
        {
            bars.Bars[i].Label = values[i].ToString(values[i] < 0.01 ? "E2" : "F3", System.Globalization.CultureInfo.InvariantCulture);
            if (errors != null) bars.Bars[i].Error = errors[i];
        }
        bars.ValueLabelStyle.FontSize = 13;
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, labels.Length).Select(i => (double)i).ToArray(), labels);
        plot.Axes.Margins(bottom: 0);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(pathWithoutExtension))!);
        plot.SavePng(pathWithoutExtension + ".png", width, height);
        plot.SaveSvg(pathWithoutExtension + ".svg", width, height);
    }
}
