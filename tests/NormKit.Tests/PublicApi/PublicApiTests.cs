using PublicApiGenerator;

namespace NormKit.Tests.PublicApi;

/// <summary>
/// The public API of each shipped assembly, checked in as NAME.approved.txt: an accidental
/// change fails here. After an intended change, run the tests with NORMKIT_APPROVE_API=1 to rewrite the file,
/// and review its diff.
/// </summary>
public class PublicApiTests
{
    [Theory]
    [InlineData("NormKit")]
    [InlineData("NormKit.Mpi")]
    public void Public_API_matches_the_approved_baseline(string name)
    {
        var assembly = name == "NormKit" ? typeof(Functional).Assembly : typeof(NormKit.Mpi.MpiWorld).Assembly;
        string actual = assembly.GeneratePublicApi(new ApiGeneratorOptions { IncludeAssemblyAttributes = false }).Replace("\r\n", "\n");
        string file = Path.Combine(SourceDir(), name + ".approved.txt");
        if (Environment.GetEnvironmentVariable("NORMKIT_APPROVE_API") == "1") File.WriteAllText(file, actual);
        Assert.True(File.Exists(file), $"No API baseline at {file}; run with NORMKIT_APPROVE_API=1 to create it.");
        string approved = File.ReadAllText(file).Replace("\r\n", "\n");
        if (approved == actual) return;
        var a = approved.Split('\n'); var b = actual.Split('\n');
        var removed = a.Except(b).Take(10).Select(l => "- " + l.Trim());
        var added = b.Except(a).Take(10).Select(l => "+ " + l.Trim());
        Assert.Fail("The public API changed (set NORMKIT_APPROVE_API=1 to accept):\n" + string.Join("\n", removed.Concat(added)));
    }

    private static string SourceDir([System.Runtime.CompilerServices.CallerFilePath] string path = "") => Path.GetDirectoryName(path)!;
}
