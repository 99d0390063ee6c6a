using System.Buffers.Binary;
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

/// <summary>
/// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON
/// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then
/// the data. Reading validates everything and names what is wrong.
/// </summary>
public static class SafeTensors
{
    private static readonly Dictionary<string, int> ElementSize = new()
    {
        ["F64"] = 8, ["F32"] = 4, ["F16"] = 2, ["BF16"] = 2, ["I64"] = 8, ["I32"] = 4, ["I16"] = 2, ["I8"] = 1, ["U8"] = 1, ["BOOL"] = 1,
    };

    /// <summary>Reads and validates a safetensors file; keys map to tensors (the metadata is skipped).</summary>
    public static Dictionary<string, SafeTensor> Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors file not found: {path}", path);
        return Read(File.ReadAllBytes(path), path);
    }

    /// <summary>Reads and validates safetensors bytes; <paramref name="source"/> names them in error messages.</summary>
    public static Dictionary<string, SafeTensor> Read(byte[] file, string source = "safetensors data")
    {
        if (file.Length < 8)
            throw new InvalidDataException($"{source}: {file.Length} bytes is shorter than the 8-byte header length; the file is truncated.");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(file);
        if (n > (ulong)(file.Length - 8))
            throw new InvalidDataException($"{source}: the header length says {n} bytes but only {file.Length - 8} follow; wrong header length or truncated file.");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(file.AsMemory(8, (int)n)); }
        catch (JsonException e) { throw new InvalidDataException($"{source}: the {n}-byte header is not valid JSON ({e.Message}).", e); }
        long dataStart = 8 + (long)n, dataLength = file.Length - dataStart;
        var result = new Dictionary<string, SafeTensor>();
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{source}: the header is not a JSON object.");
            foreach (var entry in doc.RootElement.EnumerateObject())
            {
                if (entry.Name == "__metadata__") continue;
                string key = entry.Name;
                try
                {
                    string dtype = entry.Value.GetProperty("dtype").GetString() ?? "";
                    if (!ElementSize.TryGetValue(dtype, out int size))
                        throw new InvalidDataException($"{source}: tensor '{key}' has unknown dtype '{dtype}'.");
                    int[] shape = entry.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()).ToArray();
                    var offsets = entry.Value.GetProperty("data_offsets").EnumerateArray().Select(d => d.GetInt64()).ToArray();
                    if (offsets.Length != 2 || offsets[0] < 0 || offsets[1] < offsets[0])
                        throw new InvalidDataException($"{source}: tensor '{key}' has invalid data_offsets [{string.Join(", ", offsets)}].");
                    if (offsets[1] > dataLength)
                        throw new InvalidDataException($"{source}: tensor '{key}' ends at byte {offsets[1]} of the data but the data has {dataLength} bytes; the file is truncated.");
                    long count = shape.Aggregate(1L, (a, d) => a * d);
                    if (shape.Any(d => d < 0) || count * size != offsets[1] - offsets[0])
                        throw new InvalidDataException($"{source}: tensor '{key}' of shape [{string.Join(", ", shape)}] and dtype {dtype} needs {count * size} bytes but data_offsets give {offsets[1] - offsets[0]}.");
                    var bytes = file.AsSpan((int)(dataStart + offsets[0]), (int)(offsets[1] - offsets[0])).ToArray();
                    result[key] = new SafeTensor(dtype, shape, bytes);
                }
                catch (KeyNotFoundException)
                {
                    throw new InvalidDataException($"{source}: tensor '{key}' lacks one of dtype, shape, data_offsets.");
                }
                catch (InvalidOperationException e)
                {
                    throw new InvalidDataException($"{source}: tensor '{key}' has a malformed entry ({e.Message}).", e);
                }
            }
        }
        return result;
    }

    /// <summary>Writes tensors (in the given order) as a safetensors file.</summary>
    public static void Write(string path, IEnumerable<(string Name, SafeTensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        using var header = new MemoryStream();
        using (var w = new Utf8JsonWriter(header))
        {
            w.WriteStartObject();
            if (metadata != null)
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
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
