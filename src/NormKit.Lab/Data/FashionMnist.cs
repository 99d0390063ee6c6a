namespace NormKit.Lab.Data;

/// <summary>
/// Finds and loads Fashion-MNIST: a folder given by the caller, else the full set installed
/// by Debian's dataset-fashion-mnist package, else the 1000-image test batch the repository
/// ships (data/fashion-mnist-sample, MIT licence, Zalando SE).
/// </summary>
public static class FashionMnist
{
    public const string SystemFolder = "/usr/share/datasets/fashion-mnist";
    public static string SampleFolder => Path.Combine(AppContext.BaseDirectory, "data", "fashion-mnist-sample");

    public static readonly string[] ClassNames =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

    /// <summary>A split as floats in [0, 1], one row of Rows*Cols pixels per image.</summary>
    public sealed record Split(string Source, int Count, int Rows, int Cols, float[] Pixels, byte[] Labels)
    {
        public int Features => Rows * Cols;
    }

    /// <summary>The folder that will be used: <paramref name="folder"/> if given, else the system one, else the sample.</summary>
    public static string Locate(string? folder = null)
    {
        if (folder != null)
        {
            if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Fashion-MNIST folder not found: {folder}");
            return folder;
        }
        return HasFile(SystemFolder, "t10k-images-idx3-ubyte") ? SystemFolder : SampleFolder;
    }

    /// <summary>Loads the test split (t10k) from <paramref name="folder"/> (see <see cref="Locate"/>).</summary>
    public static Split LoadTest(string? folder = null) => Load(Locate(folder), "t10k");

    /// <summary>Loads the training split from <paramref name="folder"/> (see <see cref="Locate"/>).</summary>
    public static Split LoadTrain(string? folder = null) => Load(Locate(folder), "train");

    private static Split Load(string folder, string prefix)
    {
        var images = Idx.ReadImages(FindFile(folder, $"{prefix}-images-idx3-ubyte"));
        var labels = Idx.ReadLabels(FindFile(folder, $"{prefix}-labels-idx1-ubyte"));
        if (labels.Length != images.Count)
            throw new InvalidDataException($"{folder}: {images.Count} {prefix} images but {labels.Length} labels.");
        var pixels = new float[images.Pixels.Length];
        for (int i = 0; i < pixels.Length; i++) pixels[i] = images.Pixels[i] / 255f;
        return new Split(folder, images.Count, images.Rows, images.Cols, pixels, labels);
    }

    private static bool HasFile(string folder, string name) =>
        File.Exists(Path.Combine(folder, name)) || File.Exists(Path.Combine(folder, name + ".gz"));

    /// <summary>
    /// Training and test data: the full set's splits when installed; else the shipped batch
    /// (<see cref="SampleFolder"/>, 1000 test images) split 800 for training, 200 for testing.
    /// </summary>
    public static (Split Train, Split Test) TrainAndTest(string? folder)
    {
        string dir = Locate(folder);
        var test = LoadTest(dir);
        try { return (LoadTrain(dir), test); }
        catch (FileNotFoundException)
        {
            int d = test.Features, cut = test.Count * 4 / 5;
            var train = test with { Count = cut, Pixels = test.Pixels[..(cut * d)], Labels = test.Labels[..cut], Source = test.Source + " (first 80% as training data)" };
            var rest = test with { Count = test.Count - cut, Pixels = test.Pixels[(cut * d)..], Labels = test.Labels[cut..], Source = test.Source + " (last 20% as test data)" };
            return (train, rest);
        }
    }

    // Accepts both the raw and the gzipped file name.
    private static string FindFile(string folder, string name)
    {
        string raw = Path.Combine(folder, name);
        if (File.Exists(raw)) return raw;
        string gz = raw + ".gz";
        return File.Exists(gz) ? gz : throw new FileNotFoundException($"Neither {name} nor {name}.gz found in {folder}.", raw);
    }
}
