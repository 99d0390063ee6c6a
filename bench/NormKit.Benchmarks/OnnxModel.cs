using System.Text;

namespace NormKit.Benchmarks;

/// <summary>
/// Writes a single-node ONNX model (ModelProto, protobuf wire format) with one float input X,
/// one output Y and the other inputs as initializers. Only the fields a single node needs.
/// </summary>
public static class OnnxModel
{
    public static byte[] SingleNode(string opType, int opset, int[] shape, (string Name, float[] Data)[] initializers,
        (string Name, float? F, long? I)[] attributes, string domain = "")
    {
        var node = new Proto();
        node.Str(1, "X");
        foreach (var (name, _) in initializers) node.Str(1, name);
        node.Str(2, "Y");
        node.Str(3, "n");
        node.Str(4, opType);
        foreach (var (name, f, i) in attributes)
        {
            var a = new Proto();
            a.Str(1, name);
            if (f is float fv) { a.Fixed32(2, fv); a.Varint(20, 1); }
            else { a.Varint(3, i!.Value); a.Varint(20, 2); }
            node.Msg(5, a);
        }
        if (domain.Length > 0) node.Str(7, domain);

        var graph = new Proto();
        graph.Msg(1, node);
        graph.Str(2, "g");
        foreach (var (name, data) in initializers)
        {
            var t = new Proto();
            t.Varint(1, data.Length);
            t.Varint(2, 1);
            t.Str(8, name);
            var raw = new byte[data.Length * 4];
            Buffer.BlockCopy(data, 0, raw, 0, raw.Length);
            t.Bytes(9, raw);
            graph.Msg(5, t);
        }
        graph.Msg(11, ValueInfo("X", shape));
        graph.Msg(12, ValueInfo("Y", shape));

        var model = new Proto();
        model.Varint(1, opset >= 23 ? 11 : 10);   // IR version
        var opsetId = new Proto();
        opsetId.Str(1, domain);
        opsetId.Varint(2, opset);
        model.Msg(8, opsetId);
        if (domain.Length > 0)
        {
            var onnx = new Proto();
            onnx.Str(1, "");
            onnx.Varint(2, 17);
            model.Msg(8, onnx);
        }
        model.Msg(7, graph);
        return model.ToArray();
    }

    private static Proto ValueInfo(string name, int[] shape)
    {
        var dims = new Proto();
        foreach (int d in shape)
        {
            var dim = new Proto();
            dim.Varint(1, d);
            dims.Msg(1, dim);
        }
        var tensor = new Proto();
        tensor.Varint(1, 1);     // float
        tensor.Msg(2, dims);
        var type = new Proto();
        type.Msg(1, tensor);
        var vi = new Proto();
        vi.Str(1, name);
        vi.Msg(2, type);
        return vi;
    }

    private sealed class Proto
    {
        private readonly MemoryStream _s = new();
        private void Key(int field, int wire) => Raw((ulong)((field << 3) | wire));
        private void Raw(ulong v)
        {
            while (v >= 0x80) { _s.WriteByte((byte)(v | 0x80)); v >>= 7; }
            _s.WriteByte((byte)v);
        }
        public void Varint(int field, long v) { Key(field, 0); Raw((ulong)v); }
        public void Fixed32(int field, float v) { Key(field, 5); _s.Write(BitConverter.GetBytes(v)); }
        public void Bytes(int field, byte[] b) { Key(field, 2); Raw((ulong)b.Length); _s.Write(b); }
        public void Str(int field, string s) => Bytes(field, Encoding.UTF8.GetBytes(s));
        public void Msg(int field, Proto p) => Bytes(field, p.ToArray());
        public byte[] ToArray() => _s.ToArray();
    }
}
