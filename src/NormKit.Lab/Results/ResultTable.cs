using System.Globalization;
using System.Text;

namespace NormKit.Lab.Results;

/// <summary>
/// Rows of named columns: what an experiment measured. The one writer of the lab's CSV files
/// (RFC 4180 quoting; numbers in invariant culture with 6 significant digits, NaN as an empty
/// cell, a list of numbers as one cell joined by ';'), and the cells the CLI's tables and the
/// report's HTML tables print.
/// </summary>
public sealed class ResultTable(params string[] columns)
{
    private readonly List<string[]> _rows = [];

    public IReadOnlyList<string> Columns { get; } = columns;
    public IReadOnlyList<IReadOnlyList<string>> Rows => _rows;

    /// <summary>Adds a row; each value is formatted with <see cref="Cell"/>.</summary>
    public ResultTable Add(params object?[] values)
    {
        if (values.Length != Columns.Count)
            throw new ArgumentException($"A row needs {Columns.Count} values ({string.Join(", ", Columns)}) but got {values.Length}.", nameof(values));
        _rows.Add(values.Select(Cell).ToArray());
        return this;
    }

    /// <summary>One value as text: numbers with 6 significant digits, invariant culture; NaN empty.</summary>
    public static string Cell(object? value) => value switch
    {
        null => "",
        double d => double.IsNaN(d) ? "" : d.ToString("G6", CultureInfo.InvariantCulture),
        float f => Cell((double)f),
        IEnumerable<double> list => string.Join(";", list.Select(v => Cell(v))),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };

    public string ToCsv()
    {
        var sb = new StringBuilder();
        sb.AppendJoin(',', Columns.Select(Quote)).Append('\n');
        foreach (var row in _rows) sb.AppendJoin(',', row.Select(Quote)).Append('\n');
        return sb.ToString();
    }

    /// <summary>Writes <see cref="ToCsv"/> to <paramref name="path"/>, creating its folder; returns the path.</summary>
    public string WriteCsv(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, ToCsv());
        return path;
    }

    private static string Quote(string cell) =>
        cell.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? "\"" + cell.Replace("\"", "\"\"") + "\"" : cell;
}
