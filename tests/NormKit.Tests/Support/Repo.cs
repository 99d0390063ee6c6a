namespace NormKit.Tests.Support;

/// <summary>The repository this test runs from, and its test data (tests/fixtures), which every clone has.</summary>
public static class Repo
{
    public static string Root
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "NormKit.slnx"))) return d.FullName;
            throw new DirectoryNotFoundException("Could not find the repository root (NormKit.slnx) above " + AppContext.BaseDirectory);
        }
    }

    /// <summary>A folder under tests/fixtures, e.g. Fixtures("onnx").</summary>
    public static string Fixtures(string name) => Path.Combine(Root, "tests", "fixtures", name);
}
