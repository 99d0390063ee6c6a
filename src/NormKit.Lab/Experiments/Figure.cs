using NormKit.Lab.Data;
using ScottPlot;

namespace NormKit.Lab.Experiments;

/// <summary>
/// The seed article's Figure 1 drawn from a real batch: the batch x features matrix of
/// Fashion-MNIST pixels with the elements that share one BatchNorm statistic (a column) and one
/// LayerNorm statistic (a row) marked; and, for images, which (sample, channel) planes share one
/// statistic in BatchNorm, LayerNorm, InstanceNorm and GroupNorm (Wu &amp; He's Figure 2, with
/// the spatial dims folded into each cell).
/// </summary>
public static class Figure
{
    /// <summary>Writes figure-batch and figure-norms (PNG and SVG) into <paramref name="dir"/>; returns their paths without extension.</summary>
    public static List<string> Write(FashionMnist.Split batch, string dir, int samples = 16, int firstFeature = 392, int features = 56) =>
        [WriteBatch(batch, dir, samples, firstFeature, features), WriteNorms(dir)];

    /// <summary>
    /// Writes figure-batch (PNG and SVG): the first <paramref name="samples"/> images of
    /// <paramref name="batch"/> as rows, <paramref name="features"/> pixel features from
    /// <paramref name="firstFeature"/> on as columns, one BatchNorm and one LayerNorm statistic
    /// marked. Returns its path without extension.
    /// </summary>
    public static string WriteBatch(FashionMnist.Split batch, string dir, int samples = 16, int firstFeature = 392, int features = 56)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (samples < 2 || samples > batch.Count)
            throw new ArgumentOutOfRangeException(nameof(samples), samples, $"samples must be in [2, {batch.Count}] but was {samples}.");
        if (features < 2 || firstFeature < 0 || firstFeature + features > batch.Features)
            throw new ArgumentOutOfRangeException(nameof(features), features, $"features {firstFeature}..{firstFeature + features - 1} must lie within the {batch.Features} pixel features.");
        Directory.CreateDirectory(dir);
        // Rows are samples, columns pixel features (a band across the image's middle rows).
        var data = new double[samples, features];
        for (int n = 0; n < samples; n++)
            for (int j = 0; j < features; j++)
                data[n, j] = batch.Pixels[n * batch.Features + firstFeature + j];
        var plot = new Plot();
        plot.Font.Set(Plots.Charts.FontFamily);
        var heat = plot.Add.Heatmap(data);
        heat.Colormap = new ScottPlot.Colormaps.Grayscale();
        heat.FlipVertically = true;
        int col = features / 3, row = samples / 2;
        var bn = plot.Add.Rectangle(col - 0.5, col + 0.5, -0.5, samples - 0.5);
        bn.FillStyle.Color = Colors.Orange.WithAlpha(0.45); bn.LineStyle.Color = Colors.Orange; bn.LineStyle.Width = 2;
        bn.LegendText = "BatchNorm: one statistic per feature (column), over the batch";
        var ln = plot.Add.Rectangle(-0.5, features - 0.5, samples - 1 - row - 0.5, samples - 1 - row + 0.5);
        ln.FillStyle.Color = Colors.DodgerBlue.WithAlpha(0.45); ln.LineStyle.Color = Colors.DodgerBlue; ln.LineStyle.Width = 2;
        ln.LegendText = "LayerNorm: one statistic per sample (row), over its features";
        plot.Title($"A real batch: {samples} Fashion-MNIST images x {features} pixel features");
        plot.XLabel($"feature (pixel index within the {batch.Rows} x {batch.Cols} image)");
        plot.YLabel("sample (test image)");
        // The heatmap is flipped so sample 0 is the top row: tick each row with its sample, and the
        // columns with their pixel index, not the plot's coordinates.
        var cols = Enumerable.Range(0, features).Where(j => j % 8 == 0).ToArray();
        plot.Axes.Bottom.SetTicks(cols.Select(j => (double)j).ToArray(), cols.Select(j => (firstFeature + j).ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray());
        plot.Axes.Left.SetTicks(Enumerable.Range(0, samples).Select(y => (double)y).ToArray(),
            Enumerable.Range(0, samples).Select(y => (samples - 1 - y).ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray());
        plot.ShowLegend(Edge.Bottom);
        string path = Path.Combine(dir, "figure-batch");
        plot.SavePng(path + ".png", 900, 560);
        plot.SaveSvg(path + ".svg", 900, 560);
        return path;
    }

    /// <summary>
    /// Writes figure-norms (PNG and SVG): for BatchNorm, LayerNorm, InstanceNorm and GroupNorm, an
    /// N x C grid (rows samples, columns channels, each cell one H x W plane) with the cells that
    /// share one mean and variance filled. Returns its path without extension.
    /// </summary>
    public static string WriteNorms(string dir)
    {
        Directory.CreateDirectory(dir);
        const int N = 6, C = 8, G = 2;
        var grid = new Plot();
        grid.Font.Set(Plots.Charts.FontFamily);
        string[] names = ["BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm (2 groups)"];
        for (int k = 0; k < names.Length; k++)
        {
            double x0 = k * (C + 3);
            for (int n = 0; n < N; n++)
                for (int c = 0; c < C; c++)
                {
                    bool shared = k switch
                    {
                        0 => c == 2,                      // one channel, every sample
                        1 => n == 1,                      // one sample, every channel
                        2 => n == 1 && c == 2,            // one (sample, channel)
                        _ => n == 1 && c / (C / G) == 0,  // one sample, one group of channels
                    };
                    // Sample 0 on the top row, as in a matrix.
                    var cell = grid.Add.Rectangle(x0 + c, x0 + c + 0.9, N - 1 - n, N - n - 0.1);
                    cell.FillStyle.Color = shared ? Colors.Orange : Colors.LightGray;
                    cell.LineStyle.Width = 0;
                }
            var label = grid.Add.Text(names[k], x0 + C / 2.0 - 0.05, N + 0.35);
            label.LabelFontSize = 15;
            label.LabelBold = true;
            label.LabelAlignment = Alignment.LowerCenter;
            var columns = grid.Add.Text("channels C", x0 + C / 2.0 - 0.05, -0.25);
            columns.LabelFontSize = 13;
            columns.LabelAlignment = Alignment.UpperCenter;
            var rows = grid.Add.Text("samples N", x0 - 0.3, N / 2.0 - 0.05);
            rows.LabelFontSize = 13;
            rows.LabelRotation = -90;
            rows.LabelAlignment = Alignment.LowerCenter;
        }
        grid.Axes.Frameless();
        grid.Title("Which cells share one mean and variance (orange)\nrows: samples N; columns: channels C; each cell one H x W plane", size: 15);
        grid.HideGrid();
        grid.Axes.SetLimits(-1.5, names.Length * (C + 3) - 2.5, -1.4, N + 1.4);
        string path = Path.Combine(dir, "figure-norms");
        grid.SavePng(path + ".png", 1100, 380);
        grid.SaveSvg(path + ".svg", 1100, 380);
        return path;
    }
}
