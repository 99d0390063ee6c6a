using System.Buffers.Binary;
using System.IO.Compression;
using NormKit.Lab.Data;
using NormKit.Lab.Demos;

namespace NormKit.Lab.Tests;

public sealed class DataTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("normkit-idx-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static byte[] Header(params int[] ints)
    {
        var b = new byte[4 * ints.Length];
        for (int i = 0; i < ints.Length; i++) BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(4 * i), ints[i]);
        return b;
    }

    private string Write(string name, byte[] bytes, bool gzip = false)
    {
        string path = Path.Combine(_dir, name);
        if (!gzip) File.WriteAllBytes(path, bytes);
        else
        {
            using var gz = new GZipStream(File.Create(path), CompressionLevel.Fastest);
            gz.Write(bytes);
        }
        return path;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Reads_images_and_labels_raw_and_gzipped(bool gzip)
    {
        string ext = gzip ? ".gz" : "";
        var pixels = Enumerable.Range(0, 2 * 3 * 2).Select(i => (byte)(i * 20)).ToArray();
        var img = Idx.ReadImages(Write("i" + ext, [.. Header(Idx.ImagesMagic, 2, 3, 2), .. pixels], gzip));
        Assert.Equal((2, 3, 2), (img.Count, img.Rows, img.Cols));
        Assert.Equal(pixels, img.Pixels);
        var labels = Idx.ReadLabels(Write("l" + ext, [.. Header(Idx.LabelsMagic, 3), 7, 0, 9], gzip));
        Assert.Equal(new byte[] { 7, 0, 9 }, labels);
    }

    [Fact]
    public void Malformed_files_give_clear_errors()
    {
        var e1 = Assert.Throws<InvalidDataException>(() => Idx.ReadImages(Write("a", [.. Header(Idx.LabelsMagic, 1, 1, 1), 0])));
        Assert.Contains("magic is 0x00000801, expected 0x00000803", e1.Message);
        var e2 = Assert.Throws<InvalidDataException>(() => Idx.ReadImages(Write("b", [.. Header(Idx.ImagesMagic, 3, 2, 2), 1, 2, 3])));
        Assert.Contains("header says 3 images of 2 x 2 (28 bytes) but the file has 19 bytes", e2.Message);
        var e3 = Assert.Throws<InvalidDataException>(() => Idx.ReadLabels(Write("c", [0, 0, 8])));
        Assert.Contains("shorter than the 8-byte IDX header", e3.Message);
        var e4 = Assert.Throws<InvalidDataException>(() => Idx.ReadLabels(Write("d", [.. Header(Idx.LabelsMagic, 5), 1, 2])));
        Assert.Contains("header says 5 labels", e4.Message);
        var e5 = Assert.Throws<InvalidDataException>(() => Idx.ReadLabels(Write("e.gz", [1, 2, 3, 4, 5])));
        Assert.Contains("not a valid gzip file", e5.Message);
        Assert.Throws<FileNotFoundException>(() => Idx.ReadLabels(Path.Combine(_dir, "missing")));
        Assert.Throws<DirectoryNotFoundException>(() => FashionMnist.LoadTest(Path.Combine(_dir, "nowhere")));
        var e6 = Assert.Throws<FileNotFoundException>(() => FashionMnist.LoadTest(_dir));
        Assert.Contains("t10k-images-idx3-ubyte", e6.Message);
    }

    [Fact]
    public void The_shipped_sample_loads()
    {
        var s = FashionMnist.LoadTest(FashionMnist.SampleFolder);
        Assert.Equal((1000, 28, 28), (s.Count, s.Rows, s.Cols));
        Assert.Equal(1000 * 784, s.Pixels.Length);
        Assert.All(s.Pixels, p => Assert.InRange(p, 0f, 1f));
        Assert.Equal(9, s.Labels[0]);    // the first test image is an ankle boot
        Assert.Equal(10, s.Labels.Distinct().Count());
    }

    [Fact]
    public void Figure1_BatchNorm_normalizes_columns_and_LayerNorm_rows()
    {
        var s = FashionMnist.LoadTest(FashionMnist.SampleFolder);
        var stages = Figure1.Run(s.Pixels, 128, s.Features);
        var (input, bn, ln) = (stages[0], stages[1], stages[2]);
        Assert.True(input.PerFeature.MaxAbsMean > 0.3 && input.PerSample.MaxAbsMean > 0.3, "the raw pixels are not centred");
        Assert.True(bn.PerFeature.MaxAbsMean < 1e-5, $"BN column means {bn.PerFeature.MaxAbsMean}");
        Assert.True(bn.PerFeature.MaxStd <= 1 && bn.PerFeature.MaxStd > 0.999, $"BN column stds up to {bn.PerFeature.MaxStd}");
        Assert.True(bn.PerSample.MaxAbsMean > 0.1, "BN leaves rows uncentred");
        Assert.True(ln.PerSample.MaxAbsMean < 1e-5, $"LN row means {ln.PerSample.MaxAbsMean}");
        Assert.InRange(ln.PerSample.MinStd, 0.999, 1.0);
        Assert.True(ln.PerFeature.MaxAbsMean > 0.1, "LN leaves columns uncentred");
        Assert.Equal(input.PerFeature.Constant, bn.PerFeature.Constant);   // a constant column stays constant (exactly the bias)
    }
}
