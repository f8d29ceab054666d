using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Ir;

/// <summary>AttributeProto.AttributeType codes.</summary>
public enum AttributeType
{
    Undefined = 0,
    Float = 1,
    Int = 2,
    String = 3,
    Tensor = 4,
    Graph = 5,
    Floats = 6,
    Ints = 7,
    Strings = 8,
    Tensors = 9,
    Graphs = 10,
    SparseTensor = 11,
    SparseTensors = 12,
    TypeProto = 13,
    TypeProtos = 14,
}

/// <summary>
/// A node attribute. <see cref="Value"/> holds: float, long, byte[] (strings are bytes in ONNX),
/// Tensor, Graph, SparseTensor, ValueType, or a list of those (float[], long[], byte[][], ...).
/// <see cref="RefAttrName"/> set means a reference to a function attribute.
/// </summary>
public sealed class Attribute
{
    public Attribute(string name, AttributeType type, object? value)
    {
        Name = name;
        Type = type;
        Value = value;
    }

    public string Name { get; set; }
    public AttributeType Type { get; set; }
    public object? Value { get; set; }
    public string? RefAttrName { get; set; }
    public string? DocString { get; set; }

    /// <summary>Opaque data a serializer attaches to reproduce the original encoding exactly; never interpreted by passes.</summary>
    public object? SerializationHint { get; set; }

    public static Attribute Int(string name, long v) => new(name, AttributeType.Int, v);
    public static Attribute Float(string name, float v) => new(name, AttributeType.Float, v);
    public static Attribute String(string name, string v) => new(name, AttributeType.String, System.Text.Encoding.UTF8.GetBytes(v));
    public static Attribute Ints(string name, params long[] v) => new(name, AttributeType.Ints, v);
    public static Attribute Floats(string name, params float[] v) => new(name, AttributeType.Floats, v);
    public static Attribute TensorValue(string name, Tensor t) => new(name, AttributeType.Tensor, t);
    public static Attribute GraphValue(string name, Graph g) => new(name, AttributeType.Graph, g);

    public long AsInt() => (long)Value!;
    public float AsFloat() => (float)Value!;
    public string AsString() => System.Text.Encoding.UTF8.GetString((byte[])Value!);
    public long[] AsInts() => (long[])Value!;
    public float[] AsFloats() => (float[])Value!;
    public Tensor AsTensor() => (Tensor)Value!;
    public Graph AsGraph() => (Graph)Value!;

    /// <summary>Subgraphs held by this attribute (GRAPH or GRAPHS), else empty.</summary>
    public IEnumerable<Graph> Subgraphs => Value switch
    {
        Graph g => [g],
        Graph[] gs => gs,
        _ => [],
    };
}

/// <summary>Sparse tensor (SparseTensorProto): values, indices and dense shape.</summary>
public sealed class SparseTensor
{
    public SparseTensor(Tensor values, Tensor indices, long[] dims)
    {
        Values = values;
        Indices = indices;
        Dims = dims;
    }

    public Tensor Values { get; }
    public Tensor Indices { get; }
    public long[] Dims { get; }
}
