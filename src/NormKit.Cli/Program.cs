using System.Globalization;

// The normkit command: parses, runs, prints (Cli.cs and Commands/). The work itself lives in NormKit.Lab.
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
return NormKit.Cli.Cli.Run(args);
