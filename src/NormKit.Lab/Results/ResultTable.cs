using System.Globalization;
using System.Text;

namespace NormKit.Lab.Results;

/// <summary>
/// Rows of named columns: what an experiment measured. The one writer of the lab's CSV files
/// (RFC 4180 quoting; numbers in invariant culture with 6 significant digits, NaN as an empty
/// cell, a list of numbers as one cell joined by ';'), their one reader (<see cref="Parse"/>,
/// cells looked up by column name), and the cells the CLI's tables and the report's HTML tables print.
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

    /// <summary>
    /// Reads CSV text as <see cref="ToCsv"/> writes it (RFC 4180: quoted cells may hold commas,
    /// quotes and line breaks; \n or \r\n line ends): the first line names the columns. Every row
    /// must have as many cells as the header; a blank last line is allowed.
    /// </summary>
    /// <exception cref="InvalidDataException">The text is empty, a quote is left open or a row's width differs from the header's.</exception>
    public static ResultTable Parse(string csv)
    {
        ArgumentNullException.ThrowIfNull(csv);
        var lines = SplitRecords(csv);
        if (lines.Count == 0) throw new InvalidDataException("The CSV text is empty: it has no header line.");
        var table = new ResultTable([.. lines[0]]);
        for (int i = 1; i < lines.Count; i++)
        {
            if (lines[i].Count != table.Columns.Count)
                throw new InvalidDataException($"CSV row {i} has {lines[i].Count} cells but the header has {table.Columns.Count} ({string.Join(", ", table.Columns)}).");
            table._rows.Add([.. lines[i]]);
        }
        return table;
    }

    /// <summary>The rows with their cells read by column name (see <see cref="Row"/>).</summary>
    public IEnumerable<Row> Records
    {
        get
        {
            var index = Columns.Select((c, i) => (c, i)).ToDictionary(p => p.c, p => p.i);
            for (int r = 0; r < _rows.Count; r++) yield return new Row(this, index, _rows[r], r + 1);
        }
    }

    /// <summary>
    /// One row of a parsed table. Cells are found by column name, so extra columns and another
    /// column order are read as well; a missing column or a cell that is not a number fails with
    /// the column, the row and the value.
    /// </summary>
    public readonly struct Row
    {
        private readonly ResultTable _table;
        private readonly Dictionary<string, int> _index;
        private readonly string[] _cells;

        internal Row(ResultTable table, Dictionary<string, int> index, string[] cells, int number)
        {
            _table = table; _index = index; _cells = cells; RowNumber = number;
        }

        /// <summary>The row's number, 1 for the first row under the header.</summary>
        public int RowNumber { get; }

        /// <summary>Whether the table has <paramref name="column"/>.</summary>
        public bool Has(string column) => _index.ContainsKey(column);

        /// <summary>The cell as written.</summary>
        public string Text(string column) => _cells[IndexOf(column)];

        /// <summary>The cell as a number; an empty cell is NaN (how <see cref="Cell"/> writes NaN).</summary>
        public double Number(string column) => ParseNumber(column, Text(column), RowNumber);

        /// <summary>The cell as an integer.</summary>
        public int Integer(string column)
        {
            string cell = Text(column);
            return int.TryParse(cell, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) ? v
                : throw new InvalidDataException($"Column '{column}', row {RowNumber}: '{cell}' is not an integer.");
        }

        /// <summary>The cell as a list of numbers joined by ';' (empty: no numbers).</summary>
        public double[] Numbers(string column)
        {
            string cell = Text(column);
            int row = RowNumber;
            return cell.Length == 0 ? [] : cell.Split(';').Select(v => ParseNumber(column, v, row)).ToArray();
        }

        private static double ParseNumber(string column, string cell, int row) =>
            cell.Length == 0 ? double.NaN
            : double.TryParse(cell, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? v
            : throw new InvalidDataException($"Column '{column}', row {row}: '{cell}' is not a number.");

        private int IndexOf(string column) => _index.TryGetValue(column, out int i) ? i
            : throw new InvalidDataException($"The CSV has no column '{column}' (it has {string.Join(", ", _table.Columns)}).");
    }

    // Splits RFC 4180 text into records of cells; a quoted cell may span lines.
    private static List<List<string>> SplitRecords(string csv)
    {
        var records = new List<List<string>>();
        var record = new List<string>();
        var cell = new StringBuilder();
        bool quoted = false, any = false;
        for (int i = 0; i < csv.Length; i++)
        {
            char c = csv[i];
            if (quoted)
            {
                if (c != '"') cell.Append(c);
                else if (i + 1 < csv.Length && csv[i + 1] == '"') { cell.Append('"'); i++; }
                else quoted = false;
                continue;
            }
            switch (c)
            {
                case '"': quoted = true; any = true; break;
                case ',': record.Add(cell.ToString()); cell.Clear(); any = true; break;
                case '\r' when i + 1 < csv.Length && csv[i + 1] == '\n': break;
                case '\n' or '\r':
                    record.Add(cell.ToString()); cell.Clear();
                    records.Add(record); record = []; any = false;
                    break;
                default: cell.Append(c); any = true; break;
            }
        }
        if (quoted) throw new InvalidDataException("The CSV text ends inside a quoted cell.");
        if (any) { record.Add(cell.ToString()); records.Add(record); }
        return records;
    }

    private static string Quote(string cell) =>
        cell.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? "\"" + cell.Replace("\"", "\"\"") + "\"" : cell;
}
