using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using NormKit.Cli.Commands;

namespace NormKit.Cli;

/// <summary>
/// The normkit command line on System.CommandLine: the command tree, one error line and a pointer
/// to the help for bad usage, and the [suggest] directive that shell tab completion calls.
/// </summary>
public static class Cli
{
    /// <summary>The root command's name: the tool's command.</summary>
    public const string Name = "normkit";

    /// <summary>The exit code of a usage error (an unknown command or option, a missing or bad value).</summary>
    public const int UsageErrorCode = 2;

    /// <summary>The command tree: demo, report, and lab with one command per experiment.</summary>
    public static Command Build()
    {
        var root = new Command(Name, "NormKit's lab: normalization layers measured on real data (Fashion-MNIST, text).")
        {
            new HelpOption { Action = new Help() }, new VersionOption(),
            DemoCommand.Create(), ReportCommand.Create(), LabCommands.Create(),
        };
        Common.RequireSubcommand(root);
        return root;
    }

    /// <summary>
    /// Parses <paramref name="args"/> and runs the command. Usage errors write one line and a hint to
    /// <paramref name="error"/> and return <see cref="UsageErrorCode"/>; help and parse messages go to
    /// <paramref name="output"/> and <paramref name="error"/> (default: the console), a command's own output to the console.
    /// </summary>
    public static int Run(string[] args, TextWriter? output = null, TextWriter? error = null)
    {
        var config = new InvocationConfiguration { Output = output ?? Console.Out, Error = error ?? Console.Error, EnableDefaultExceptionHandler = false };
        var root = Build();
        // System.CommandLine 2.0 reads directives on a RootCommand only, whose name is the executable's
        // (NormKit.Cli under dotnet run); completion requests go to one that holds the same commands.
        if (args is [var first, ..] && first.StartsWith("[suggest", StringComparison.Ordinal))
            return Completer(root).Parse(args).Invoke(config);
        var result = root.Parse(args);
        if (result.Action is ParseErrorAction)
            return Common.UsageError(config.Error, result.CommandResult, result.Errors[0].Message);
        try
        {
            return result.Invoke(config);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or UnauthorizedAccessException)
        {
            config.Error.WriteLine($"{Name}: {e.Message}");
            return UsageErrorCode;
        }
    }

    // System.CommandLine's help, wrapped at the terminal's width but at most 100 columns (also in a
    // file). The width is read only when help is asked for: reading it sets up the terminal, which
    // every MPI rank of data-parallel would otherwise do.
    private sealed class Help : SynchronousCommandLineAction
    {
        public override bool ClearsParseErrors => true;

        public override int Invoke(ParseResult parseResult) => new HelpAction { MaxWidth = Width() }.Invoke(parseResult);

        private static int Width()
        {
            try { return Console.IsOutputRedirected || Console.WindowWidth <= 0 ? 100 : Math.Min(Console.WindowWidth, 100); }
            catch (IOException) { return 100; }
        }
    }

    private static RootCommand Completer(Command root)
    {
        var completer = new RootCommand();
        completer.Aliases.Add(Name);
        foreach (var command in root.Subcommands) completer.Subcommands.Add(command);
        return completer;
    }
}
