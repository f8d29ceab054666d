using System.Text;
using OnnxMoe.Ir;

namespace OnnxMoe.Tests.Runtime;

/// <summary>
/// Writes tiny ONNX models straight from onnx.proto field numbers, so the runtime tests need neither
/// the serializer project nor checked-in binaries (symbolic dimensions, external data, large inputs).
/// </summary>
internal static class TinyOnnx
{
    /// <summary>One protobuf message being written.</summary>
    public sealed class Message
    {
        private readonly MemoryStream _bytes = new();

        public Message Int(int field, long value)
        {
            Tag(field, 0);
            Varint((ulong)value);
            return this;
        }

        public Message Bytes(int field, ReadOnlySpan<byte> value)
        {
            Tag(field, 2);
            Varint((ulong)value.Length);
            _bytes.Write(value);
            return this;
        }

        public Message String(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));
        public Message Child(int field, Message child) => Bytes(field, child.ToArray());
        public byte[] ToArray() => _bytes.ToArray();

        private void Tag(int field, int wireType) => Varint((ulong)(field << 3 | wireType));

        private void Varint(ulong v)
        {
            while (v >= 0x80)
            {
                _bytes.WriteByte((byte)(v | 0x80));
                v >>= 7;
            }
            _bytes.WriteByte((byte)v);
        }
    }

    public static Message Node(string opType, string[] inputs, string[] outputs)
    {
        var node = new Message();
        foreach (var i in inputs) node.String(1, i);
        foreach (var o in outputs) node.String(2, o);
        return node.String(3, "/" + opType).String(4, opType);
    }

    /// <summary>Tensor value info; a dimension is a long (dim_value) or a string (dim_param).</summary>
    public static Message Value(string name, DataType type, params object[] dims)
    {
        var shape = new Message();
        foreach (var d in dims)
            shape.Child(1, d is string param ? new Message().String(2, param) : new Message().Int(1, Convert.ToInt64(d)));
        var tensorType = new Message().Int(1, (int)type).Child(2, shape);
        return new Message().String(1, name).Child(2, new Message().Child(1, tensorType));
    }

    /// <summary>Initializer whose bytes live in <paramref name="location"/> (relative to the model) at offset/length.</summary>
    public static Message ExternalInitializer(string name, DataType type, long[] dims, string location, long offset, long length)
    {
        var tensor = new Message();
        foreach (var d in dims) tensor.Int(1, d);
        tensor.Int(2, (int)type).String(8, name);
        tensor.Child(13, new Message().String(1, "location").String(2, location));
        tensor.Child(13, new Message().String(1, "offset").String(2, offset.ToString()));
        tensor.Child(13, new Message().String(1, "length").String(2, length.ToString()));
        return tensor.Int(14, 1); // data_location = EXTERNAL
    }

    public static byte[] Model(Message[] nodes, Message[] inputs, Message[] outputs, Message[]? initializers = null, int opset = 17)
    {
        var graph = new Message();
        foreach (var n in nodes) graph.Child(1, n);
        graph.String(2, "tiny");
        foreach (var t in initializers ?? []) graph.Child(5, t);
        foreach (var i in inputs) graph.Child(11, i);
        foreach (var o in outputs) graph.Child(12, o);
        return new Message()
            .Int(1, 8) // ir_version
            .String(2, "onnxmoe-tests")
            .Child(7, graph)
            .Child(8, new Message().String(1, "").Int(2, opset))
            .ToArray();
    }
}
