using System.Buffers.Binary;
using System.IO.Compression;

namespace NormKit.Lab.Data;

/// <summary>
/// Reads IDX files (the MNIST format): a big-endian header of magic 0x00000803 (images:
/// count, rows, cols) or 0x00000801 (labels: count), then unsigned bytes. Files ending in
/// .gz are decompressed on the fly. Every malformed case is an <see cref="InvalidDataException"/>
/// that names the file and what was wrong.
/// </summary>
public static class Idx
{
    public const int ImagesMagic = 0x00000803;
    public const int LabelsMagic = 0x00000801;

    /// <summary>Images as bytes, row-major: count x rows x cols.</summary>
    public sealed record Images(int Count, int Rows, int Cols, byte[] Pixels);

    public static Images ReadImages(string path)
    {
        byte[] b = ReadAll(path);
        Header(b, path, ImagesMagic, 16, out int count);
        int rows = ReadInt(b, 8), cols = ReadInt(b, 12);
        if (rows <= 0 || cols <= 0)
            throw new InvalidDataException($"{path}: image size {rows} x {cols} is not positive.");
        long expected = 16 + (long)count * rows * cols;
        if (b.Length != expected)
            throw new InvalidDataException($"{path}: header says {count} images of {rows} x {cols} ({expected} bytes) but the file has {b.Length} bytes.");
        return new Images(count, rows, cols, b[16..]);
    }

    public static byte[] ReadLabels(string path)
    {
        byte[] b = ReadAll(path);
        Header(b, path, LabelsMagic, 8, out int count);
        if (b.Length != 8L + count)
            throw new InvalidDataException($"{path}: header says {count} labels ({8L + count} bytes) but the file has {b.Length} bytes.");
        return b[8..];
    }

    private static void Header(byte[] b, string path, int magic, int headerBytes, out int count)
    {
        if (b.Length < headerBytes)
            throw new InvalidDataException($"{path}: {b.Length} bytes is shorter than the {headerBytes}-byte IDX header.");
        int m = ReadInt(b, 0);
        if (m != magic)
            throw new InvalidDataException($"{path}: IDX magic is 0x{m:X8}, expected 0x{magic:X8}.");
        count = ReadInt(b, 4);
        if (count < 0) throw new InvalidDataException($"{path}: negative item count {count}.");
    }

    private static int ReadInt(byte[] b, int at) => BinaryPrimitives.ReadInt32BigEndian(b.AsSpan(at, 4));

    private static byte[] ReadAll(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"IDX file not found: {path}", path);
        if (!path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase)) return File.ReadAllBytes(path);
        try
        {
            using var gz = new GZipStream(File.OpenRead(path), CompressionMode.Decompress);
            using var ms = new MemoryStream();
            gz.CopyTo(ms);
            return ms.ToArray();
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{path}: not a valid gzip file ({e.Message}).", e);
        }
    }
}
