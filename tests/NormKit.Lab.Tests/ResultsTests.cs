using NormKit.Lab.Experiments;
using NormKit.Lab.Results;

namespace NormKit.Lab.Tests;

/// <summary>
/// The lab's CSV files read back: one parser over the one writer's format, each experiment's
/// records through it, and the full-mode results committed in docs/lab as the build embeds them.
/// </summary>
public class ResultsTests
{
    [Fact]
    public void Parsing_what_the_table_wrote_gives_the_same_cells()
    {
        var t = new ResultTable("arm", "init", "loss", "norms", "text")
            .Add("none", "N(0,0.01^2)", 0.123456789, new[] { 1.5, double.NaN, 2e-7 }, "two\nlines")
            .Add("BatchNorm", "say \"hi\"", double.NaN, Array.Empty<double>(), "");
        var back = ResultTable.Parse(t.ToCsv());
        Assert.Equal(t.Columns, back.Columns);
        Assert.Equal(t.Rows.Select(r => r.ToArray()), back.Rows.Select(r => r.ToArray()));
        Assert.Equal(t.ToCsv(), back.ToCsv());
        var rows = back.Records.ToList();
        Assert.Equal("N(0,0.01^2)", rows[0].Text("init"));
        Assert.Equal(0.123457, rows[0].Number("loss"), 12);
        Assert.True(double.IsNaN(rows[1].Number("loss")));
        Assert.Equal([1.5, double.NaN, 2e-7], rows[0].Numbers("norms"));
        Assert.Empty(rows[1].Numbers("norms"));
        Assert.Equal("two\nlines", rows[0].Text("text"));
        Assert.Equal("say \"hi\"", rows[1].Text("init"));
        Assert.Equal(2, ResultTable.Parse("a,b\r\n1,2\r\n3,4").Rows.Count);   // CRLF, no final line end
    }

    [Fact]
    public void Bad_text_fails_with_the_column_the_row_and_the_value()
    {
        Assert.Contains("empty", Assert.Throws<InvalidDataException>(() => ResultTable.Parse("")).Message);
        Assert.Contains("row 2 has 1 cells but the header has 2", Assert.Throws<InvalidDataException>(() => ResultTable.Parse("a,b\n1,2\n3\n")).Message);
        Assert.Contains("quoted", Assert.Throws<InvalidDataException>(() => ResultTable.Parse("a\n\"open\n")).Message);
        var row = ResultTable.Parse("arm,seed,loss\nnone,x,0.5y\n").Records.Single();
        Assert.Equal("Column 'seed', row 1: 'x' is not an integer.", Assert.Throws<InvalidDataException>(() => row.Integer("seed")).Message);
        Assert.Equal("Column 'loss', row 1: '0.5y' is not a number.", Assert.Throws<InvalidDataException>(() => row.Number("loss")).Message);
        Assert.Equal("The CSV has no column 'step' (it has arm, seed, loss).", Assert.Throws<InvalidDataException>(() => row.Number("step")).Message);
    }

    [Fact]
    public void Every_experiments_records_survive_a_write_and_a_parse()
    {
        // Values with at most 6 significant digits: the writer's precision.
        Saturation.Point[] sat = [new("none", "N(0,0.01^2)", 1, 500, 2.27282, 0.263, -3.01474, -2.86051, -1.79223, 0, 0.0705471, [0.0282437, 0.012704, 1.5E-14]),
            new("BatchNorm", "Glorot", 3, 8000, 0.25, 0.878, -2.2, 0.1, 0.77, 0.028, 0.147, [0.1, 0.2])];
        // Records compare arrays by reference: the arrays are compared on their own.
        double[] none = [];
        var satBack = Saturation.Parse(Saturation.Csv(sat));
        Assert.Equal(sat.Select(p => p with { GradNorms = none }), satBack.Select(p => p with { GradNorms = none }));
        Assert.Equal(sat.Select(p => p.GradNorms), satBack.Select(p => p.GradNorms));

        BatchSize.Point[] bs = [new("none", 2, 1, 0.463584, 0.174, double.NaN), new("BatchNorm", 128, 2, 0.1, 0.148, 0.143)];
        Assert.Equal(bs, BatchSize.Parse(BatchSize.Csv(bs)));
        Vision.Result[] vis = [new("none", 1, 0.332336, 0.885, double.NaN), new("BatchNorm", 2, 0.3, 0.8833, 0.00941)];
        Assert.Equal(vis, Vision.Parse(Vision.Csv(vis)));
        Language.Result[] lang = [new("none", 1, double.NaN, double.NaN, double.NaN), new("BatchNorm", 2, 1.3, 1.935, 0.00055)];
        Assert.Equal(lang, Language.Parse(Language.Csv(lang)));
        Shift.Point[] shift = [new("BatchNorm + AdaBN", 3, "brightness +0.4", 0.163)];
        Assert.Equal(shift, Shift.Parse(Shift.Table(shift).ToCsv()));
        ResNetVision.Result[] res = [new("GroupNorm", 1, 5625, 0.21, 0.0912, 650.5, 276.7, [])];
        var resBack = ResNetVision.Parse(ResNetVision.Table(res).ToCsv());
        Assert.Equal(res.Select(r => r with { Losses = none }), resBack.Select(r => r with { Losses = none }));
        Assert.Empty(resBack.Single().Losses);   // per-step losses live in the curves file
        var curves = ResNetVision.CurvePoints([new ResNetVision.Result("none", 1, 4, 0, 0, 0, 0, [1.0, 3.0, 0.5, 0.25])], every: 2);
        Assert.Equal([new("none", 1, 2, 2.0), new("none", 1, 4, 0.375)], curves);
        Assert.Equal(curves, ResNetVision.ParseCurves(ResNetVision.Curves([new ResNetVision.Result("none", 1, 4, 0, 0, 0, 0, [1.0, 3.0, 0.5, 0.25])], every: 2).ToCsv()));
    }

    [Fact]
    public void Columns_are_read_by_name_so_new_columns_and_another_order_do_no_harm()
    {
        // Another order, an unknown column, and one of the two scale-free columns missing (NaN).
        var r = Language.Parse("seed,arm,validation_bits_per_char,batch_fluctuation_scale_free,final_train_loss,extra,batch_mean_fluctuation\n2,BatchNorm,1.9,0.31,1.2,7,0.0005\n").Single();
        Assert.Equal(new Language.Result("BatchNorm", 2, 1.2, 1.9, 0.0005, 0.31, double.NaN), r);
    }

    [Fact]
    public void The_committed_results_are_embedded_and_parse()
    {
        var committed = LabResults.Committed;
        Assert.Subset(committed.Files.ToHashSet(), new HashSet<string> { "saturation.csv", "saturation-10layers.csv", "batch-size.csv", "vision.csv", "language.csv", "shift.csv" });
        Assert.StartsWith("docs/lab", committed.Origin);
        var sat = committed.Read("saturation.csv", Saturation.Parse)!;
        Assert.Equal(3, Saturation.HiddenLayersOf(sat));
        Assert.Equal(10, Saturation.HiddenLayersOf(committed.Read("saturation-10layers.csv", Saturation.Parse)!));
        Assert.Equal([1, 2, 3], sat.Select(p => p.Seed).Distinct().Order());
        Assert.Equal(BatchSize.Arms.Order(), committed.Read("batch-size.csv", BatchSize.Parse)!.Select(p => p.Arm).Distinct().Order());
        Assert.Equal(Vision.Arms, committed.Read("vision.csv", Vision.Parse)!.Select(r => r.Arm).Distinct());
        Assert.Contains(committed.Read("language.csv", Language.Parse)!, r => r.Arm == "none" && double.IsNaN(r.ValidationBitsPerChar));   // the diverged run
        Assert.Equal(Shift.Arms.Order(), committed.Read("shift.csv", Shift.Parse)!.Select(p => p.Arm).Distinct().Order());
        Assert.Null(committed.Read("no-such-file.csv", Vision.Parse));
        if (committed.Files.Contains("resnet.csv")) Assert.NotEmpty(committed.Read("resnet.csv", ResNetVision.Parse)!);
    }

    [Fact]
    public void The_embedded_results_are_the_files_in_docs_lab()
    {
        // A build older than docs/lab's CSV files would show stale results in the report.
        string? dir = AppContext.BaseDirectory;
        while (dir != null && !File.Exists(Path.Combine(dir, "NormKit.slnx"))) dir = Path.GetDirectoryName(dir);
        Assert.NotNull(dir);
        var folder = LabResults.Folder(Path.Combine(dir, "docs", "lab"));
        Assert.Equal(folder.Files, LabResults.Committed.Files);
        foreach (string file in folder.Files) Assert.Equal(folder.Csv(file), LabResults.Committed.Csv(file));
        Assert.Throws<DirectoryNotFoundException>(() => LabResults.Folder(Path.Combine(dir, "no-such-folder")));
    }

    [Fact]
    public void A_parse_error_names_the_file()
    {
        string dir = Directory.CreateTempSubdirectory("normkit-results-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "vision.csv"), "arm,seed\nnone,1\n");
            var e = Assert.Throws<InvalidDataException>(() => LabResults.Folder(dir).Read("vision.csv", Vision.Parse));
            Assert.Contains("vision.csv", e.Message);
            Assert.Contains("no column 'final_train_loss'", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
