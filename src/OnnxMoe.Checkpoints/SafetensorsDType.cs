using OnnxMoe.Ir;

namespace OnnxMoe.Checkpoints;

/// <summary>Mapping between safetensors dtype strings and ONNX element types.</summary>
public static class SafetensorsDType
{
    private static readonly (string Name, DataType Type)[] Table =
    [
        ("F64", DataType.Double), ("F32", DataType.Float), ("F16", DataType.Float16), ("BF16", DataType.BFloat16),
        ("I64", DataType.Int64), ("I32", DataType.Int32), ("I16", DataType.Int16), ("I8", DataType.Int8),
        ("U64", DataType.UInt64), ("U32", DataType.UInt32), ("U16", DataType.UInt16), ("U8", DataType.UInt8),
        ("BOOL", DataType.Bool), ("F8_E4M3", DataType.Float8E4M3FN), ("F8_E5M2", DataType.Float8E5M2),
    ];

    public static bool TryParse(string name, out DataType type)
    {
        foreach (var (n, t) in Table)
            if (n == name) { type = t; return true; }
        type = DataType.Undefined;
        return false;
    }

    public static string ToName(DataType type)
    {
        foreach (var (n, t) in Table)
            if (t == type) return n;
        throw new ArgumentException($"data type {type.Name()} has no safetensors equivalent");
    }

    public static IEnumerable<string> Names => Table.Select(e => e.Name);
}
