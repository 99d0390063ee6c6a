using NormKit.Layers;

namespace NormKit.Lab.Demos;

/// <summary>
/// The seed article's Figure 1 in numbers: a batch as an N x D matrix (rows are samples,
/// columns features). BatchNorm makes every column mean 0 / std 1; LayerNorm every row.
/// </summary>
public static class Figure1
{
    /// <summary>Summary of the means and standard deviations along one axis of the matrix.</summary>
    /// <param name="Constant">Lines (rows or columns) whose values are all equal: their std is 0 before and after.</param>
    public sealed record AxisStats(double MeanOfMeans, double MaxAbsMean, double MeanOfStds, double MinStd, double MaxStd, int Constant);

    public sealed record Stage(string Name, AxisStats PerFeature, AxisStats PerSample);

    /// <summary>Statistics of <paramref name="batch"/> (n x d, row-major) before and after BatchNorm1d and LayerNorm.</summary>
    public static IReadOnlyList<Stage> Run(float[] batch, int n, int d)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 2, nameof(n));
        var bn = new BatchNorm1d<float>(d);
        var ln = new LayerNorm<float>(d);
        var afterBn = new float[n * d];
        var afterLn = new float[n * d];
        bn.Forward(batch.AsSpan(0, n * d), [n, d], afterBn);
        ln.Forward(batch.AsSpan(0, n * d), [n, d], afterLn);
        return
        [
            new Stage("input", Columns(batch, n, d), Rows(batch, n, d)),
            new Stage($"BatchNorm1d({d}), training", Columns(afterBn, n, d), Rows(afterBn, n, d)),
            new Stage($"LayerNorm({d})", Columns(afterLn, n, d), Rows(afterLn, n, d)),
        ];
    }

    private static AxisStats Columns(float[] x, int n, int d) =>
        Summarize(d, j => Enumerable.Range(0, n).Select(i => (double)x[i * d + j]));

    private static AxisStats Rows(float[] x, int n, int d) =>
        Summarize(n, i => Enumerable.Range(0, d).Select(j => (double)x[i * d + j]));

    // Means and population standard deviations of each line; the std summary skips constant lines.
    private static AxisStats Summarize(int lines, Func<int, IEnumerable<double>> line)
    {
        var means = new double[lines];
        var stds = new List<double>();
        int constant = 0;
        for (int k = 0; k < lines; k++)
        {
            var v = line(k).ToArray();
            double m = v.Average();
            means[k] = m;
            if (v.All(a => a == v[0])) { constant++; continue; }
            stds.Add(Math.Sqrt(v.Select(a => (a - m) * (a - m)).Average()));
        }
        return new AxisStats(means.Average(), means.Max(Math.Abs),
            stds.Count > 0 ? stds.Average() : 0, stds.Count > 0 ? stds.Min() : 0, stds.Count > 0 ? stds.Max() : 0, constant);
    }
}
