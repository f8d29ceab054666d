using OnnxMoe.Ir;
using Ort = Microsoft.ML.OnnxRuntime;

namespace OnnxMoe.Runtime;

/// <summary>Kind of an ORT value or graph input/output (ONNXType in onnxruntime_c_api.h).</summary>
public enum OnnxValueKind
{
    Unknown = 0,
    Tensor = 1,
    Sequence = 2,
    Map = 3,
    Opaque = 4,
    SparseTensor = 5,
    Optional = 6,
}

/// <summary>A session input or output as ORT reports it.</summary>
public sealed class TensorInfo
{
    internal TensorInfo(string name, OnnxValueKind kind, DataType elementType, long[] shape, string?[] dimensionNames)
    {
        Name = name;
        Kind = kind;
        ElementType = elementType;
        Shape = shape;
        DimensionNames = dimensionNames;
    }

    public string Name { get; }
    public OnnxValueKind Kind { get; }
    /// <summary>Element type for tensors; <see cref="DataType.Undefined"/> for other kinds.</summary>
    public DataType ElementType { get; }
    /// <summary>Dimensions, -1 where a dimension is symbolic or unknown; empty for scalars and non-tensors.</summary>
    public IReadOnlyList<long> Shape { get; }
    /// <summary>Per dimension, the symbolic name (dim_param) or null.</summary>
    public IReadOnlyList<string?> DimensionNames { get; }

    /// <summary>E.g. <c>input_ids: i64[batch,sequence]</c>; unnamed unknown dimensions print as <c>?</c>.</summary>
    public override string ToString()
    {
        if (Kind != OnnxValueKind.Tensor) return $"{Name}: {Kind.ToString().ToLowerInvariant()}";
        var dims = Shape.Select((d, i) => d >= 0 ? d.ToString(System.Globalization.CultureInfo.InvariantCulture) : DimensionNames[i] ?? "?");
        return $"{Name}: {ElementType.Name()}[{string.Join(",", dims)}]";
    }

    internal static TensorInfo Read(string name, Ort.NodeMetadata meta)
    {
        var kind = (OnnxValueKind)(int)meta.OnnxValueType;
        if (kind != OnnxValueKind.Tensor && kind != OnnxValueKind.SparseTensor)
            return new TensorInfo(name, kind, DataType.Undefined, [], []);
        var elementType = (DataType)(int)meta.ElementDataType;
        var shape = Array.ConvertAll(meta.Dimensions, d => (long)d);
        var symbolic = meta.SymbolicDimensions ?? [];
        var names = new string?[shape.Length];
        for (int i = 0; i < shape.Length; i++) names[i] = i < symbolic.Length && !string.IsNullOrEmpty(symbolic[i]) ? symbolic[i] : null;
        return new TensorInfo(name, kind, elementType, shape, names);
    }
}
