using System.CommandLine;
using NormKit.Lab.Experiments;
using Spectre.Console;

namespace NormKit.Cli.Commands;

/// <summary>normkit report: the lab's tour, written as one HTML page.</summary>
internal static class ReportCommand
{
    public static Command Create()
    {
        var full = Common.Flag("--full", "every experiment in its full mode, every arm (about an hour on 2 cores instead of about 3 minutes)");
        var data = Common.Data();
        var text = Common.Text();
        var outDir = Common.Out("lab-report", "report.html, its charts and CSV files");
        var command = new Command("report", Common.Prose("""
            The lab's tour: the figure and every experiment (quick modes, about 3 minutes on 2 cores;
            --full about an hour: the sum of its parts' measured full modes, saturation 2 min 50 s,
            batch size about 30 min with 3 seeds and BatchNorm's fixes, vision 3 min 21 s, language about
            21 min with PowerNorm and Dynamic Tanh), then DIR/report.html: what ran on which data, each claim of the
            seed article split into parts with a verdict by the lab's rule, the full-mode results
            committed in docs/lab beside it (their charts in DIR/committed), and every chart captioned.
            """)) { full, data, text, outDir };
        command.SetAction(r => Run(r.GetValue(full), r.GetValue(data), r.GetValue(text), r.GetValue(outDir)!));
        return command;
    }

    private static int Run(bool full, string? data, string? text, string outDir)
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        string path;
        int total = Report.Units(full);
        if (AnsiConsole.Profile.Capabilities.Interactive)
        {
            // A live progress bar on a terminal; plain lines when the output is redirected (CI, logs).
            path = AnsiConsole.Progress().Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("lab tour", maxValue: total);
                    var run = ctx.AddTask("training", maxValue: 1);
                    return Report.Run(outDir, data, full, step => { task.Increment(1); task.Description = step; }, text,
                        status: line => run.Description = Markup.Escape(line));
                });
        }
        else
        {
            int done = 0;
            path = Report.Run(outDir, data, full, step => Console.WriteLine($"[{watch.Elapsed.TotalSeconds,4:F0} s] {++done}/{total} {step}"), text,
                status: line => Console.WriteLine($"[{watch.Elapsed.TotalSeconds,4:F0} s]   {line}"));
        }
        Console.WriteLine($"Report: {Path.GetFullPath(path)}");
        return 0;
    }
}
