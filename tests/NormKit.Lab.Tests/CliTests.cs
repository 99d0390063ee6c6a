using System.CommandLine;
using System.Diagnostics;

namespace NormKit.Lab.Tests;

/// <summary>
/// The normkit command line: bad usage gives one error line, a pointer to the right help and exit
/// code 2; every command has its own help; integer options are range-checked. Parsing only: no
/// command here trains anything.
/// </summary>
public class CliTests
{
    private sealed record Outcome(int Code, string Output, string[] ErrorLines);

    private static Outcome Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Cli.Cli.Run(args, output, error);
        return new(code, output.ToString(), error.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
    }

    /// <summary>Every command's words after normkit ("", "demo", "lab saturation", ...).</summary>
    public static TheoryData<string> CommandPaths()
    {
        var paths = new TheoryData<string>();
        void Walk(Command c, string path)
        {
            paths.Add(path);
            foreach (var sub in c.Subcommands) Walk(sub, (path + " " + sub.Name).Trim());
        }
        Walk(Cli.Cli.Build(), "");
        return paths;
    }

    [Fact]
    public void The_root_command_is_normkit_with_demo_report_and_lab()
    {
        var root = Cli.Cli.Build();
        Assert.Equal("normkit", root.Name);
        Assert.Equal(["demo", "report", "lab"], root.Subcommands.Select(c => c.Name));
        Assert.Equal(["saturation", "depth", "batch-size", "figure", "language", "vision", "resnet", "lr-sweep", "shift", "data-parallel", "charts", "verdicts"],
            root.Subcommands.Single(c => c.Name == "lab").Subcommands.Select(c => c.Name));
    }

    [Theory]
    [InlineData("", "normkit --help")]
    [InlineData("frob", "normkit --help")]
    [InlineData("demo --frob", "normkit demo --help")]
    [InlineData("demo extra", "normkit demo --help")]
    [InlineData("lab", "normkit lab --help")]
    [InlineData("lab foo", "normkit lab --help")]
    [InlineData("lab vision --quick --frob", "normkit lab vision --help")]
    [InlineData("report --out", "normkit report --help")]
    [InlineData("demo --batch 0", "normkit demo --help")]
    [InlineData("lab data-parallel --steps 0", "normkit lab data-parallel --help")]
    [InlineData("lab saturation --quick --deep", "normkit lab saturation --help")]
    [InlineData("lab resnet --arm BatchNorm2d", "normkit lab resnet --help")]
    [InlineData("lab resnet --epochs 0", "normkit lab resnet --help")]
    [InlineData("lab charts --from", "normkit lab charts --help")]
    public void Bad_usage_gives_one_error_line_a_help_hint_and_exit_code_2(string args, string help)
    {
        var r = Run(args.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal(2, r.Code);
        Assert.Equal("", r.Output);
        Assert.Equal(2, r.ErrorLines.Length);
        Assert.StartsWith("normkit: ", r.ErrorLines[0]);
        Assert.Equal($"Run '{help}' for usage.", r.ErrorLines[1]);
    }

    [Fact]
    public void An_unknown_lab_command_is_named()
    {
        var r = Run("lab", "foo");
        Assert.Equal("normkit: Unrecognized command or argument 'foo'.", r.ErrorLines[0]);
    }

    [Fact]
    public void A_group_run_alone_lists_its_commands()
    {
        Assert.Equal("normkit: missing command: demo, report or lab.", Run().ErrorLines[0]);
        Assert.Equal("normkit: missing command after 'lab': saturation, depth, batch-size, figure, language, vision, resnet, lr-sweep, shift, data-parallel, charts or verdicts.", Run("lab").ErrorLines[0]);
    }

    [Theory]
    [InlineData("report --out", "--out")]
    [InlineData("report --full --text", "--text")]
    [InlineData("demo --data", "--data")]
    [InlineData("lab saturation --out", "--out")]
    [InlineData("lab data-parallel --steps", "--steps")]
    public void An_option_without_its_value_says_the_value_is_missing(string args, string option)
    {
        var r = Run(args.Split(' '));
        Assert.Equal(2, r.Code);
        Assert.Equal($"normkit: Required argument missing for option: '{option}'.", r.ErrorLines[0]);
    }

    [Theory]
    [InlineData("demo --batch 0", "--batch must be an integer >= 2, but was '0'.")]
    [InlineData("demo --batch 1", "--batch must be an integer >= 2, but was '1'.")]
    [InlineData("demo --batch many", "--batch must be an integer >= 2, but was 'many'.")]
    [InlineData("lab data-parallel --steps 0", "--steps must be an integer >= 1, but was '0'.")]
    [InlineData("lab data-parallel --steps -3", "--steps must be an integer >= 1, but was '-3'.")]
    [InlineData("lab data-parallel --batch 1", "--batch must be an integer >= 2, but was '1'.")]
    [InlineData("lab resnet --seeds 0", "--seeds must be an integer >= 1, but was '0'.")]
    [InlineData("lab resnet --arm none --arm BatchNorm2d", "--arm must be one of none, BatchNorm, GroupNorm, LayerNorm, InstanceNorm, BatchRenorm, FRN, but was 'BatchNorm2d'.")]
    [InlineData("lab batch-size --arm BRN", "--arm must be one of none, BatchNorm, LayerNorm, GroupNorm, BatchRenorm, GhostBatchNorm, FRN, but was 'BRN'.")]
    [InlineData("lab language --arm LayerNorm --arm DyT", "--arm must be one of none, LayerNorm, RMSNorm, BatchNorm, PowerNorm, DynamicTanh, DynamicTanh (scaled embedding), but was 'DyT'.")]
    [InlineData("lab resnet --batch 1", "--batch must be an integer >= 2, but was '1'.")]
    [InlineData("lab resnet --lr -0.1", "--lr must be a positive number, but was -0.1.")]
    [InlineData("lab resnet --train-images 0", "--train-images must be an integer >= 1, but was '0'.")]
    [InlineData("lab batch-size --first-seed 0", "--first-seed must be an integer >= 1, but was '0'.")]
    public void Integer_options_name_the_option_the_range_and_the_value(string args, string message)
    {
        var r = Run(args.Split(' '));
        Assert.Equal(2, r.Code);
        Assert.Equal($"normkit: {message}", r.ErrorLines[0]);
    }

    [Theory]
    [MemberData(nameof(CommandPaths))]
    public void Every_command_has_its_own_help(string path)
    {
        var r = Run([.. path.Split(' ', StringSplitOptions.RemoveEmptyEntries), "--help"]);
        Assert.Equal(0, r.Code);
        Assert.Empty(r.ErrorLines);
        Assert.Contains("Description:", r.Output);
        Assert.Contains($"Usage:{Environment.NewLine}  {("normkit " + path).Trim()} [", r.Output);
        Assert.Contains("--help", r.Output);
    }

    [Theory]
    [InlineData("demo", "second")]
    [InlineData("report", "minute")]
    [InlineData("lab saturation", "15 seconds")]
    [InlineData("lab depth", "min")]
    [InlineData("lab batch-size", "minute")]
    [InlineData("lab figure", "second")]
    [InlineData("lab language", "minute")]
    [InlineData("lab vision", "minute")]
    [InlineData("lab resnet", "minute")]
    [InlineData("lab shift", "minute")]
    [InlineData("lab data-parallel", "second")]
    [InlineData("lab charts", "second")]
    public void Each_command_says_how_long_it_runs(string path, string unit)
    {
        var r = Run([.. path.Split(' '), "--help"]);
        string description = r.Output[..r.Output.IndexOf("Usage:", StringComparison.Ordinal)];
        Assert.Contains(unit, description);
    }

    [Fact]
    public void Help_shows_the_defaults()
    {
        Assert.Contains("[default: 64]", Run("demo", "--help").Output);
        Assert.Contains("[default: lab-report]", Run("report", "--help").Output);
        Assert.Contains("[default: 40]", Run("lab", "data-parallel", "--help").Output);
    }

    [Fact]
    public void The_suggest_directive_completes_commands_and_options()
    {
        var commands = Run("[suggest:13]", "normkit lab s");
        Assert.Equal(0, commands.Code);
        Assert.Contains("saturation", commands.Output.Split('\n', StringSplitOptions.TrimEntries));
        var options = Run("[suggest:21]", "normkit lab vision --");
        Assert.Equal(["--data", "--help", "--out", "--quick"], options.Output.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public async Task The_program_reports_bad_usage_on_stderr_with_exit_code_2()
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "NormKit.Cli.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in (string[])[dll, "lab", "foo"]) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string stderr = await p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(60_000), "normkit did not exit within a minute");
        Assert.Equal(2, p.ExitCode);
        Assert.Equal("", await stdout);
        Assert.Equal($"normkit: Unrecognized command or argument 'foo'.{Environment.NewLine}Run 'normkit lab --help' for usage.{Environment.NewLine}", stderr);
    }
}
