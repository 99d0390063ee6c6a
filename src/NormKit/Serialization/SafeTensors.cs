using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace NormKit.Serialization;

/// <summary>One tensor of a safetensors file: its dtype ("F32", "F64", "I64", ...), shape and raw little-endian bytes.</summary>
public sealed record SafeTensor(string DType, int[] Shape, byte[] Bytes)
{
    /// <summary>The number of elements: the product of the shape (1 for a scalar).</summary>
    public long Elements => Shape.Aggregate(1L, (a, d) => a * d);

    /// <summary>The values as doubles (F16, BF16, F32, F64, I64, I32).</summary>
    public double[] ToDoubles()
    {
        var r = new double[Elements];
        var b = Bytes.AsSpan();
        for (int i = 0; i < r.Length; i++)
            r[i] = DType switch
            {
                "F32" => BinaryPrimitives.ReadSingleLittleEndian(b[(4 * i)..]),
                "F64" => BinaryPrimitives.ReadDoubleLittleEndian(b[(8 * i)..]),
                "F16" => (double)BinaryPrimitives.ReadHalfLittleEndian(b[(2 * i)..]),
                "BF16" => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(b[(2 * i)..]) << 16),
                "I64" => BinaryPrimitives.ReadInt64LittleEndian(b[(8 * i)..]),
                "I32" => BinaryPrimitives.ReadInt32LittleEndian(b[(4 * i)..]),
                _ => throw new InvalidDataException($"dtype {DType} is not supported."),
            };
        return r;
    }
}

/// <summary>A safetensors file as read: its tensors by key and its <c>__metadata__</c> map (empty when absent).</summary>
public sealed record SafeTensorsFile(Dictionary<string, SafeTensor> Tensors, Dictionary<string, string> Metadata);

/// <summary>
/// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON
/// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then
/// the data. Reading validates everything the reference reader does (the tensors cover the
/// data exactly, in order, with no gap and no overlap) and names what is wrong; beyond the
/// reference, NormKit's writer stores a SHA-256 of the data under
/// <see cref="ChecksumKey"/> in the metadata and the reader verifies it when present.
/// </summary>
public static class SafeTensors
{
    /// <summary>The metadata key under which NormKit writes the SHA-256 (lowercase hex) of the data buffer.</summary>
    public const string ChecksumKey = "normkit.data_sha256";

    private static readonly Dictionary<string, int> ElementSize = new()
    {
        ["F64"] = 8, ["F32"] = 4, ["F16"] = 2, ["BF16"] = 2, ["I64"] = 8, ["I32"] = 4, ["I16"] = 2, ["I8"] = 1, ["U8"] = 1, ["BOOL"] = 1,
    };

    /// <summary>Reads and validates a safetensors file; keys map to tensors (the metadata is skipped).</summary>
    public static Dictionary<string, SafeTensor> Read(string path) => ReadFile(path).Tensors;

    /// <summary>Reads and validates safetensors bytes; <paramref name="source"/> names them in error messages.</summary>
    public static Dictionary<string, SafeTensor> Read(byte[] file, string source = "safetensors data") => ReadFile(file, source).Tensors;

    /// <summary>Reads and validates a safetensors file, with its metadata.</summary>
    public static SafeTensorsFile ReadFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors file not found: {path}", path);
        return ReadFile(File.ReadAllBytes(path), path);
    }

    /// <summary>
    /// Reads and validates safetensors bytes, with their metadata. Every malformed header, a
    /// data layout that does not cover the data exactly, or a checksum that does not match
    /// throws <see cref="InvalidDataException"/> naming <paramref name="source"/> and, where
    /// one is at fault, the key.
    /// </summary>
    public static SafeTensorsFile ReadFile(byte[] file, string source = "safetensors data")
    {
        ArgumentNullException.ThrowIfNull(file);
        if (file.Length < 8)
            throw new InvalidDataException($"{source}: {file.Length} bytes is shorter than the 8-byte header length; the file is truncated.");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(file);
        if (n > (ulong)(file.Length - 8))
            throw new InvalidDataException($"{source}: the header length says {n} bytes but only {file.Length - 8} follow; wrong header length or truncated file.");
        long dataStart = 8 + (long)n, dataLength = file.Length - dataStart;
        var entries = ParseHeader(file.AsMemory(8, (int)n), source, out var metadata);
        CheckLayout(entries, dataLength, source);
        var data = file.AsSpan((int)dataStart);
        if (metadata.TryGetValue(ChecksumKey, out string? expected))
        {
            string actual = Checksum(data);
            if (!string.Equals(expected, actual, StringComparison.OrdinalIgnoreCase))
                throw new InvalidDataException($"{source}: the data's SHA-256 is {actual} but the header records {expected} under '{ChecksumKey}'; the file was changed or corrupted after it was written.");
        }
        var result = new Dictionary<string, SafeTensor>(entries.Count);
        foreach (var e in entries)
            result[e.Key] = new SafeTensor(e.DType, e.Shape, data.Slice((int)e.Begin, (int)(e.End - e.Begin)).ToArray());
        return new SafeTensorsFile(result, metadata);
    }

    private sealed record Entry(string Key, string DType, int[] Shape, long Begin, long End);

    // Parses the JSON header. Anything malformed (invalid JSON or UTF-8, a missing or mistyped
    // field, an unknown dtype, a size that does not match the shape) is an InvalidDataException.
    private static List<Entry> ParseHeader(ReadOnlyMemory<byte> header, string source, out Dictionary<string, string> metadata)
    {
        metadata = new Dictionary<string, string>();
        var entries = new List<Entry>();
        string? key = null;
        try
        {
            using var doc = JsonDocument.Parse(header);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{source}: the header is not a JSON object.");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in doc.RootElement.EnumerateObject())
            {
                key = null;
                string name = entry.Name;
                if (!seen.Add(name))
                    throw new InvalidDataException($"{source}: the header names '{name}' twice.");
                if (name == "__metadata__")
                {
                    if (entry.Value.ValueKind != JsonValueKind.Object)
                        throw new InvalidDataException($"{source}: __metadata__ must be a JSON object of strings.");
                    foreach (var m in entry.Value.EnumerateObject())
                        metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()!
                            : throw new InvalidDataException($"{source}: __metadata__ value '{m.Name}' must be a string but is {m.Value.ValueKind}.");
                    continue;
                }
                key = name;
                if (entry.Value.ValueKind != JsonValueKind.Object)
                    throw new InvalidDataException($"{source}: tensor '{key}' must be a JSON object with dtype, shape and data_offsets.");
                string dtype = entry.Value.GetProperty("dtype").GetString() ?? "";
                if (!ElementSize.TryGetValue(dtype, out int size))
                    throw new InvalidDataException($"{source}: tensor '{key}' has unknown dtype '{dtype}'.");
                int[] shape = entry.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()).ToArray();
                var offsets = entry.Value.GetProperty("data_offsets").EnumerateArray().Select(d => d.GetInt64()).ToArray();
                if (offsets.Length != 2 || offsets[0] < 0 || offsets[1] < offsets[0])
                    throw new InvalidDataException($"{source}: tensor '{key}' has invalid data_offsets [{string.Join(", ", offsets)}].");
                if (shape.Any(d => d < 0))
                    throw new InvalidDataException($"{source}: tensor '{key}' has a negative dimension in shape {ShapeText(shape)}.");
                long count = shape.Aggregate(1L, (a, d) => checked(a * d));
                if (checked(count * size) != offsets[1] - offsets[0])
                    throw new InvalidDataException($"{source}: tensor '{key}' of shape {ShapeText(shape)} and dtype {dtype} needs {count * size} bytes but data_offsets give {offsets[1] - offsets[0]}.");
                entries.Add(new Entry(key, dtype, shape, offsets[0], offsets[1]));
            }
        }
        catch (InvalidDataException) { throw; }
        catch (KeyNotFoundException)
        {
            throw new InvalidDataException($"{source}: tensor '{key}' lacks one of dtype, shape, data_offsets.");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or OverflowException or ArgumentException)
        {
            // Invalid JSON, invalid UTF-8 in a name or value, a value of the wrong JSON kind, a number out of range.
            string where = key is null ? $"the {header.Length}-byte header" : $"the header entry of tensor '{key}'";
            throw new InvalidDataException($"{source}: {where} is malformed ({e.Message}).", e);
        }
        return entries;
    }

    // The reference reader's rule: sorted by offset, the tensors tile the data buffer from 0 to
    // its end, with no gap and no overlap. A header length a few bytes off shifts the data and
    // is caught here.
    private static void CheckLayout(List<Entry> entries, long dataLength, string source)
    {
        entries.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long expected = 0;
        string? previous = null;
        foreach (var e in entries)
        {
            if (e.Begin != expected)
                throw new InvalidDataException(e.Begin > expected
                    ? $"{source}: tensor '{e.Key}' starts at byte {e.Begin} of the data but {(previous is null ? "the data starts at 0" : $"tensor '{previous}' ends at {expected}")}; the tensors must cover the data with no gap (wrong header length or corrupted header)."
                    : $"{source}: tensor '{e.Key}' starts at byte {e.Begin} of the data, inside tensor '{previous}' (which ends at {expected}); tensors must not overlap.");
            if (e.End > dataLength)
                throw new InvalidDataException($"{source}: tensor '{e.Key}' ends at byte {e.End} of the data but the data has {dataLength} bytes; the file is truncated.");
            expected = e.End;
            previous = e.Key;
        }
        if (expected != dataLength)
            throw new InvalidDataException(previous is null
                ? $"{source}: the header lists no tensor but {dataLength} bytes of data follow it; wrong header length or trailing bytes."
                : $"{source}: the last tensor, '{previous}', ends at byte {expected} of the data but {dataLength} bytes follow the header; the tensors must cover the data exactly (wrong header length or trailing bytes).");
    }

    /// <summary>The SHA-256 of <paramref name="data"/> as lowercase hex.</summary>
    private static string Checksum(ReadOnlySpan<byte> data) => Convert.ToHexStringLower(SHA256.HashData(data));

    /// <summary>
    /// Writes tensors (in the given order) as a safetensors file, with <paramref name="metadata"/>
    /// and the SHA-256 of the data under <see cref="ChecksumKey"/> in its <c>__metadata__</c>.
    /// </summary>
    public static void Write(string path, IEnumerable<(string Name, SafeTensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (_, t) in list) sha.AppendData(t.Bytes);
        using var header = new MemoryStream();
        using (var w = new Utf8JsonWriter(header))
        {
            w.WriteStartObject();
            w.WriteStartObject("__metadata__");
            if (metadata != null)
                foreach (var (k, v) in metadata)
                    if (k != ChecksumKey) w.WriteString(k, v);
            w.WriteString(ChecksumKey, Convert.ToHexStringLower(sha.GetHashAndReset()));
            w.WriteEndObject();
            long offset = 0;
            foreach (var (name, t) in list)
            {
                w.WriteStartObject(name);
                w.WriteString("dtype", t.DType);
                w.WriteStartArray("shape");
                foreach (int d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + t.Bytes.Length);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += t.Bytes.Length;
            }
            w.WriteEndObject();
        }
        // The header is padded with spaces to a multiple of 8 bytes, as the reference writer does.
        int pad = (int)((8 - header.Length % 8) % 8);
        using var file = File.Create(path);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)(header.Length + pad));
        file.Write(len);
        header.Position = 0;
        header.CopyTo(file);
        for (int i = 0; i < pad; i++) file.WriteByte((byte)' ');
        foreach (var (_, t) in list) file.Write(t.Bytes);
    }

    /// <summary>An F32 tensor of the given values and shape.</summary>
    public static SafeTensor FromFloats(ReadOnlySpan<float> values, int[] shape)
    {
        var b = new byte[values.Length * 4];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan(4 * i), values[i]);
        return new SafeTensor("F32", shape, b);
    }

    /// <summary>An F64 tensor of the given values and shape.</summary>
    public static SafeTensor FromDoubles(ReadOnlySpan<double> values, int[] shape)
    {
        var b = new byte[values.Length * 8];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteDoubleLittleEndian(b.AsSpan(8 * i), values[i]);
        return new SafeTensor("F64", shape, b);
    }

    /// <summary>An I64 scalar (shape []), as PyTorch stores num_batches_tracked.</summary>
    public static SafeTensor FromInt64(long value) => new("I64", [], BitConverter.GetBytes(value));

    internal static string ShapeText(int[] shape) => "[" + string.Join(", ", shape) + "]";
}
