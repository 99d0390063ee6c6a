using System.Reflection;

namespace NormKit.Lab.Results;

/// <summary>
/// A set of the lab's CSV result files: the full-mode results committed in docs/lab, embedded in
/// this assembly when it is built (so the report and <c>normkit lab charts</c> find them from any
/// folder and from the installed tool), or the CSV files of a folder.
/// </summary>
public sealed class LabResults
{
    // The csproj embeds docs/lab/*.csv under this prefix.
    private const string ResourcePrefix = "NormKit.Lab.Committed.";
    private readonly Func<string, string?> _read;

    private LabResults(string origin, string? commit, IReadOnlyList<string> files, Func<string, string?> read)
    {
        Origin = origin;
        Commit = commit;
        Files = files;
        _read = read;
    }

    /// <summary>Where the files come from, e.g. "docs/lab, commit f482c9a" or a folder's path.</summary>
    public string Origin { get; }

    /// <summary>For the committed set: the commit that last changed docs/lab's CSV files (40 hex digits), when the build could ask git; otherwise null.</summary>
    public string? Commit { get; }

    /// <summary>The CSV files the set holds, by name.</summary>
    public IReadOnlyList<string> Files { get; }

    /// <summary>The results committed in docs/lab, as this assembly was built with them.</summary>
    public static LabResults Committed { get; } = FromResources();

    /// <summary>The CSV files in <paramref name="folder"/>.</summary>
    /// <exception cref="DirectoryNotFoundException"><paramref name="folder"/> does not exist.</exception>
    public static LabResults Folder(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Results folder not found: {folder}");
        var files = Directory.GetFiles(folder, "*.csv").Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal).ToList();
        return new LabResults(folder, null, files, name =>
        {
            string path = Path.Combine(folder, name);
            return File.Exists(path) ? File.ReadAllText(path) : null;
        });
    }

    /// <summary>The text of <paramref name="fileName"/>, or null when the set has no such file.</summary>
    public string? Csv(string fileName) => _read(fileName);

    /// <summary>
    /// <paramref name="fileName"/> parsed by <paramref name="parse"/> (e.g. <c>Vision.Parse</c>), or
    /// null when the set has no such file; a file that does not parse is reported with its name.
    /// </summary>
    public List<T>? Read<T>(string fileName, Func<string, List<T>> parse)
    {
        string? text = Csv(fileName);
        if (text is null) return null;
        try { return parse(text); }
        catch (InvalidDataException e) { throw new InvalidDataException($"{Origin}: {fileName}: {e.Message}", e); }
    }

    private static LabResults FromResources()
    {
        var assembly = typeof(LabResults).Assembly;
        var files = assembly.GetManifestResourceNames().Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal))
            .Select(n => n[ResourcePrefix.Length..]).Order(StringComparer.Ordinal).ToList();
        string? Metadata(string key) => assembly.GetCustomAttributes<AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == key)?.Value;
        string? commit = Metadata("DocsLabCommit");
        bool changed = Metadata("DocsLabChanged") == "true";
        string origin = commit is null ? "docs/lab" : $"docs/lab, commit {commit[..7]}{(changed ? " with uncommitted changes" : "")}";
        return new LabResults(origin, commit, files, name =>
        {
            using var stream = assembly.GetManifestResourceStream(ResourcePrefix + name);
            if (stream is null) return null;
            using var reader = new StreamReader(stream);
            return reader.ReadToEnd();
        });
    }
}
