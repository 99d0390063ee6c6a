using System.Net;
using System.Text;
using System.Text.RegularExpressions;

namespace NormKit.Lab.Data;

/// <summary>A character-level corpus: the text, its vocabulary (printable ASCII; anything else becomes '?') and the encoding.</summary>
public sealed class TextCorpus
{
    public string Source { get; }
    public byte[] Ids { get; }
    /// <summary>Output classes: ids 0..94 are ' '..'~' (anything else is read as '?'); class 95 is never a target.</summary>
    public int Vocabulary => 96;

    public TextCorpus(string source, string text)
    {
        Source = source;
        Ids = new byte[text.Length];
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            Ids[i] = (byte)(c >= ' ' && c <= '~' ? c - ' ' : '?' - ' ');
        }
    }
}

/// <summary>
/// Text for character-level language modelling: a file given by path, or by default the XML
/// documentation that ships with the .NET SDK's reference assemblies, stripped to plain text.
/// </summary>
public static partial class TextData
{
    /// <summary>The folder of the SDK's reference-assembly XML documentation (newest version).</summary>
    public static string DefaultFolder()
    {
        // .../dotnet/shared/Microsoft.NETCore.App/<version>/ -> .../dotnet
        string runtime = Path.GetDirectoryName(typeof(object).Assembly.Location)!;
        string root = Path.GetFullPath(Path.Combine(runtime, "..", "..", ".."));
        string packs = Path.Combine(root, "packs", "Microsoft.NETCore.App.Ref");
        var folder = Directory.Exists(packs)
            ? Directory.GetDirectories(packs).SelectMany(v => Directory.Exists(Path.Combine(v, "ref")) ? Directory.GetDirectories(Path.Combine(v, "ref")) : [])
                .Where(d => Directory.GetFiles(d, "*.xml").Length > 0).OrderBy(d => d, StringComparer.Ordinal).LastOrDefault()
            : null;
        return folder ?? throw new DirectoryNotFoundException($"No reference-assembly XML documentation under {packs}; pass a text file with --text.");
    }

    /// <summary>Loads a text file, or (path null) the SDK's XML documentation stripped of tags; at most <paramref name="maxChars"/> characters.</summary>
    public static TextCorpus Load(string? path, int maxChars = 2_000_000)
    {
        if (path != null)
        {
            if (!File.Exists(path)) throw new FileNotFoundException($"Text file not found: {path}", path);
            string text = File.ReadAllText(path);
            if (text.Length < 1000) throw new InvalidDataException($"{path} has {text.Length} characters; at least 1000 are needed.");
            return new TextCorpus(path, text.Length > maxChars ? text[..maxChars] : text);
        }
        string folder = DefaultFolder();
        var sb = new StringBuilder();
        foreach (string file in Directory.GetFiles(folder, "*.xml").OrderBy(f => f, StringComparer.Ordinal))
        {
            string plain = Spaces().Replace(WebUtility.HtmlDecode(Tags().Replace(File.ReadAllText(file), " ")), " ");
            sb.Append(plain);
            if (sb.Length >= maxChars) break;
        }
        string all = sb.ToString();
        return new TextCorpus($"{folder} (*.xml, tags stripped)", all.Length > maxChars ? all[..maxChars] : all);
    }

    [GeneratedRegex("<[^>]+>")] private static partial Regex Tags();
    [GeneratedRegex(@"\s+")] private static partial Regex Spaces();
}
