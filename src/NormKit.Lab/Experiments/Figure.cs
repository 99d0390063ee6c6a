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
    public static List<string> Write(FashionMnist.Split batch, string dir, int samples = 16, int firstFeature = 392, int features = 56)
    {
        Directory.CreateDirectory(dir);
        var written = new List<string>();
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
        plot.XLabel($"feature (pixels {firstFeature}..{firstFeature + features - 1})");
        plot.YLabel("sample");
        plot.ShowLegend(Edge.Bottom);
        string path = Path.Combine(dir, "figure-batch");
        plot.SavePng(path + ".png", 900, 560);
        plot.SaveSvg(path + ".svg", 900, 560);
        written.Add(path);

        // N x C grids: which cells share one statistic in each norm.
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
                    var cell = grid.Add.Rectangle(x0 + c, x0 + c + 0.9, n, n + 0.9);
                    cell.FillStyle.Color = shared ? Colors.Orange : Colors.LightGray;
                    cell.LineStyle.Width = 0;
                }
            var label = grid.Add.Text(names[k], x0, N + 0.6);
            label.LabelFontSize = 14;
        }
        grid.Axes.Frameless();
        grid.HideGrid();
        path = Path.Combine(dir, "figure-norms");
        grid.SavePng(path + ".png", 1100, 320);
        grid.SaveSvg(path + ".svg", 1100, 320);
        written.Add(path);
        return written;
    }
}
