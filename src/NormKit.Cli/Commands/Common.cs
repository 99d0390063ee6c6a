using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using Spectre.Console;

namespace NormKit.Cli.Commands;

/// <summary>The options several commands share, and how a command reports a usage error.</summary>
internal static class Common
{
    public static Option<string?> Data() => new("--data")
    {
        HelpName = "DIR",
        Description = "Fashion-MNIST folder (IDX files); default: /usr/share/datasets/fashion-mnist, else the 1000-image batch the repository ships",
    };

    public static Option<string?> Text() => new("--text")
    {
        HelpName = "FILE",
        Description = "the text to train the language model on; default: the .NET SDK's XML docs",
    };

    public static Option<string> Out(string folder, string what = "CSV files and charts") => new("--out")
    {
        HelpName = "DIR",
        Description = $"where the {what} go",
        DefaultValueFactory = _ => folder,
    };

    public static Option<bool> Flag(string name, string description) => new(name) { Description = description };

    /// <summary>--arm ARM, repeatable: the arms to train, each one of <paramref name="names"/>; none given means the command's default.</summary>
    public static Option<string[]> Arms(IReadOnlyList<string> names)
    {
        var option = new Option<string[]>("--arm")
        {
            HelpName = "ARM",
            Description = $"train only these arms (repeatable): {string.Join(", ", names)}",
            AllowMultipleArgumentsPerToken = true,
        };
        option.Validators.Add(result =>
        {
            foreach (var token in result.Tokens)
                if (!names.Contains(token.Value))
                {
                    result.AddError($"--arm must be one of {string.Join(", ", names)}, but was '{token.Value}'.");
                    return;
                }
        });
        return option;
    }

    /// <summary>An integer option that must be at least <paramref name="min"/>; a value outside names the option, the range and the value.</summary>
    public static Option<int> AtLeast(string name, int min, int defaultValue, string description) => new(name)
    {
        HelpName = "N",
        Description = description,
        DefaultValueFactory = _ => defaultValue,
        CustomParser = result =>
        {
            string token = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
            if (int.TryParse(token, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) && value >= min) return value;
            result.AddError($"{name} must be an integer >= {min}, but was '{token}'.");
            return defaultValue;
        },
    };

    /// <summary>
    /// A command's description as the help shows it: the lines of each paragraph (paragraphs are
    /// separated by an empty line) joined into one, which the help wraps to the terminal's width.
    /// </summary>
    public static string Prose(string text) =>
        string.Join('\n', text.ReplaceLineEndings("\n").Split("\n\n").Select(p => string.Join(' ', p.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))));

    /// <summary>Writes one error line and a pointer to the command's help; returns the usage-error exit code.</summary>
    public static int UsageError(TextWriter error, CommandResult command, string message)
    {
        error.WriteLine($"{Cli.Name}: {message}");
        error.WriteLine($"Run '{PathOf(command)} --help' for usage.");
        return Cli.UsageErrorCode;
    }

    /// <summary>The words that lead to <paramref name="command"/>, e.g. "normkit lab saturation".</summary>
    public static string PathOf(CommandResult command) =>
        command.Parent is CommandResult parent ? $"{PathOf(parent)} {command.Command.Name}" : command.Command.Name;

    /// <summary>A command that only groups others: run alone it names them, as a usage error.</summary>
    public static void RequireSubcommand(Command group) =>
        group.SetAction(r => UsageError(r.InvocationConfiguration.Error, r.CommandResult,
            $"missing command{(r.CommandResult.Parent is null ? "" : $" after '{group.Name}'")}: " +
            $"{string.Join(", ", group.Subcommands.SkipLast(1).Select(c => c.Name))} or {group.Subcommands[^1].Name}."));

    /// <summary>Writes an experiment's CSV into <paramref name="dir"/> (created if needed), ends the progress lines and returns the file's path.</summary>
    public static string WriteCsv(string dir, string fileName, string csv)
    {
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, fileName);
        File.WriteAllText(path, csv);
        Console.WriteLine();
        return path;
    }

    /// <summary>A table with these columns, numbers right-aligned (a column whose header starts with '<' is left-aligned).</summary>
    public static Table Table(params string[] columns)
    {
        var table = new Table().Border(TableBorder.Rounded);
        foreach (string c in columns)
        {
            var column = new TableColumn(Markup.Escape(c.TrimStart('<'))).NoWrap();
            table.AddColumn(c.StartsWith('<') ? column.LeftAligned() : column.RightAligned());
        }
        return table;
    }

    public static void AddTextRow(this Table table, params string[] cells) => table.AddRow(cells.Select(c => new Text(c)));

    /// <summary>Writes <paramref name="table"/>; output to a file or a pipe is not cut to a terminal's 80 columns.</summary>
    public static void Write(Table table)
    {
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = Math.Max(AnsiConsole.Profile.Width, 240);
        AnsiConsole.Write(table);
    }
}
