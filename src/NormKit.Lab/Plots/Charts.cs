using System.Globalization;
using ScottPlot;

namespace NormKit.Lab.Plots;

/// <summary>
/// Line and bar charts saved as PNG and SVG, with the DejaVu font (Debian's fonts-dejavu-core).
/// Every norm arm has one colour in every chart of the lab (<see cref="ArmColor"/>), so a reader
/// who has learnt that BatchNorm is blue in one chart can read the next one at a glance.
/// </summary>
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

    // Okabe & Ito's colours, which stay distinct under the common colour-vision deficiencies; for
    // BatchNorm's fixes and the newer norms, Tol's muted scheme, chosen with the same aim.
    private static readonly (string Arm, string Hex)[] Arms =
    [
        ("none", "#000000"), ("BatchNorm", "#0072B2"), ("LayerNorm", "#D55E00"), ("GroupNorm", "#009E73"),
        ("InstanceNorm", "#CC79A7"), ("RMSNorm", "#E69F00"), ("BatchNorm + AdaBN", "#56B4E9"),
        ("BatchRenorm", "#882255"), ("GhostBatchNorm", "#44AA99"), ("FRN", "#999933"), ("PowerNorm", "#AA4499"), ("DynamicTanh", "#117733"),
        ("DynamicTanh (scaled embedding)", "#DDCC77"),
    ];

    // For series that name no arm (e.g. float32 and float64), in order.
    private static readonly string[] Others = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];

    /// <summary>
    /// The lab's colour for the arm <paramref name="label"/> names: the arm itself ("LayerNorm"), or a
    /// label that starts with an arm's name followed by a space, comma or parenthesis ("none (1 of 2
    /// diverged)"), the longest such name; null when it names no arm.
    /// </summary>
    public static Color? ArmColor(string label)
    {
        ArgumentNullException.ThrowIfNull(label);
        var match = Arms.Where(a => label == a.Arm || (label.StartsWith(a.Arm, StringComparison.Ordinal) && label.Length > a.Arm.Length && label[a.Arm.Length] is ' ' or ',' or '('))
            .OrderByDescending(a => a.Arm.Length).FirstOrDefault();
        return match.Arm is null ? null : Color.FromHex(match.Hex);
    }

    /// <summary>A line's dash pattern.</summary>
    public enum Pattern { Solid, Dashed, Dotted }

    /// <summary>
    /// One series: a legend label and its points. Its colour is its <paramref name="Arm"/>'s (by
    /// default the arm the label names, see <see cref="ArmColor"/>); <paramref name="Line"/> and
    /// <paramref name="Marker"/> tell apart series of one arm. OpenMarkers draws hollow circles.
    /// </summary>
    public sealed record Series(string Label, double[] X, double[] Y, bool OpenMarkers = false, string? Arm = null,
        Pattern Line = Pattern.Solid, MarkerShape? Marker = null);

    /// <summary>Tick marks: labels at positions on the axis.</summary>
    public sealed record Ticks(double[] Positions, string[] Labels)
    {
        /// <summary>Categories: <paramref name="labels"/> at x = 0, 1, 2, ...</summary>
        public static Ticks Categories(string[] labels) => new(Enumerable.Range(0, labels.Length).Select(i => (double)i).ToArray(), labels);
    }

    /// <summary>Draws the series on one chart and writes <paramref name="pathWithoutExtension"/>.png and .svg.</summary>
    /// <param name="xTicks">Ticks of the x axis instead of numbers (categories, or the values of a log axis).</param>
    public static void Lines(string pathWithoutExtension, string title, string xLabel, string yLabel, IEnumerable<Series> series, int width = 800, int height = 500, Ticks? xTicks = null)
    {
        var plot = New(title, xLabel, yLabel);
        int other = 0;
        foreach (var s in series)
        {
            var line = plot.Add.Scatter(s.X, s.Y);
            line.LegendText = s.Label;
            line.Color = ArmColor(s.Arm ?? s.Label) ?? Color.FromHex(Others[other++ % Others.Length]);
            line.LineWidth = 1.5f;
            line.LinePattern = s.Line switch { Pattern.Dashed => LinePattern.Dashed, Pattern.Dotted => LinePattern.Dotted, _ => LinePattern.Solid };
            line.MarkerSize = s.Marker is null ? 4 : 6;
            line.MarkerShape = s.Marker ?? (s.OpenMarkers ? MarkerShape.OpenCircle : MarkerShape.FilledCircle);
        }
        if (xTicks != null)
        {
            if (xTicks.Positions.Length != xTicks.Labels.Length)
                throw new ArgumentException($"xTicks has {xTicks.Positions.Length} positions but {xTicks.Labels.Length} labels.", nameof(xTicks));
            plot.Axes.Bottom.SetTicks(xTicks.Positions, xTicks.Labels);
        }
        plot.ShowLegend(Edge.Right);
        Save(plot, pathWithoutExtension, width, height);
    }

    /// <summary>A bar per label, in the label's arm colour, with optional error bars (one standard deviation); writes PNG and SVG.</summary>
    public static void Bars(string pathWithoutExtension, string title, string yLabel, string[] labels, double[] values, double[]? errors = null, int width = 800, int height = 450,
        string xLabel = "normalization arm")
    {
        if (labels.Length != values.Length)
            throw new ArgumentException($"{labels.Length} labels but {values.Length} values.", nameof(labels));
        if (errors != null && errors.Length != values.Length)
            throw new ArgumentException($"{errors.Length} errors but {values.Length} values.", nameof(errors));
        var plot = New(title, xLabel, yLabel);
        var bars = plot.Add.Bars(values);
        for (int i = 0; i < values.Length; i++)
        {
            bars.Bars[i].Label = values[i].ToString(Math.Abs(values[i]) < 0.01 ? "E2" : "F3", CultureInfo.InvariantCulture);
            bars.Bars[i].FillColor = ArmColor(labels[i]) ?? Color.FromHex(Others[i % Others.Length]);
            if (errors != null) bars.Bars[i].Error = errors[i];
        }
        bars.ValueLabelStyle.FontSize = 13;
        // A parenthesis goes on its own line, so that many bars' labels do not run into each other.
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, labels.Length).Select(i => (double)i).ToArray(), labels.Select(l => l.Replace(" (", "\n(")).ToArray());
        plot.Axes.Margins(bottom: 0);
        Save(plot, pathWithoutExtension, width, height);
    }

    private static Plot New(string title, string xLabel, string yLabel)
    {
        var plot = new Plot();
        plot.Font.Set(FontFamily);
        plot.Title(title, size: 14);
        plot.XLabel(xLabel, size: 14);
        plot.YLabel(yLabel, size: 14);
        return plot;
    }

    private static void Save(Plot plot, string pathWithoutExtension, int width, int height)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(pathWithoutExtension))!);
        plot.SavePng(pathWithoutExtension + ".png", width, height);
        plot.SaveSvg(pathWithoutExtension + ".svg", width, height);
    }
}
