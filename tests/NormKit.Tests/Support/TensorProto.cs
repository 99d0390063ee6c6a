namespace NormKit.Tests.Support;

/// <summary>
/// A minimal reader of ONNX TensorProto files (protobuf wire format): dims (field 1),
/// data_type (2, only 1 = float32), raw_data (9); every other field is skipped by wire type.
/// </summary>
public sealed record TensorProto(int[] Dims, float[] Data)
{
    public static TensorProto Read(string path)
    {
        byte[] b = File.ReadAllBytes(path);
        int i = 0;
        var dims = new List<int>();
        int dataType = 0;
        float[]? data = null;
        while (i < b.Length)
        {
            ulong key = Varint(b, ref i);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            switch (wire)
            {
                case 0:
                    ulong v = Varint(b, ref i);
                    if (field == 1) dims.Add(checked((int)v));
                    else if (field == 2) dataType = (int)v;
                    break;
                case 1: i += 8; break;
                case 5: i += 4; break;
                case 2:
                    int len = checked((int)Varint(b, ref i));
                    if (i + len > b.Length) throw new InvalidDataException($"{path}: field {field} runs past the end of the file.");
                    if (field == 9)
                    {
                        if (len % 4 != 0) throw new InvalidDataException($"{path}: raw_data length {len} is not a multiple of 4.");
                        data = new float[len / 4];
                        for (int k = 0; k < data.Length; k++) data[k] = BitConverter.ToSingle(b, i + 4 * k);
                    }
                    i += len;
                    break;
                default: throw new InvalidDataException($"{path}: unsupported wire type {wire} at byte {i}.");
            }
        }
        if (dataType != 1) throw new InvalidDataException($"{path}: data_type {dataType}, only 1 (float32) is supported.");
        data ??= [];
        long count = dims.Aggregate(1L, (a, d) => a * d);
        if (count != data.Length) throw new InvalidDataException($"{path}: dims [{string.Join(", ", dims)}] need {count} values but raw_data has {data.Length}.");
        return new TensorProto([.. dims], data);
    }

    private static ulong Varint(byte[] b, ref int i)
    {
        ulong r = 0;
        for (int shift = 0; ; shift += 7)
        {
            if (i >= b.Length) throw new InvalidDataException("Truncated varint.");
            byte c = b[i++];
            r |= (ulong)(c & 0x7f) << shift;
            if (c < 0x80) return r;
        }
    }
}
