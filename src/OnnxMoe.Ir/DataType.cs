namespace OnnxMoe.Ir;

/// <summary>ONNX tensor element type; numeric values are TensorProto.DataType codes, so unknown
/// codes survive a round trip as plain integers cast to this enum.</summary>
public enum DataType
{
    Undefined = 0,
    Float = 1,
    UInt8 = 2,
    Int8 = 3,
    UInt16 = 4,
    Int16 = 5,
    Int32 = 6,
    Int64 = 7,
    String = 8,
    Bool = 9,
    Float16 = 10,
    Double = 11,
    UInt32 = 12,
    UInt64 = 13,
    Complex64 = 14,
    Complex128 = 15,
    BFloat16 = 16,
    Float8E4M3FN = 17,
    Float8E4M3FNUZ = 18,
    Float8E5M2 = 19,
    Float8E5M2FNUZ = 20,
    UInt4 = 21,
    Int4 = 22,
    Float4E2M1 = 23,
    Float8E8M0 = 24,
    UInt2 = 25,
    Int2 = 26,
}

public static class DataTypeInfo
{
    /// <summary>Bits one element takes in ONNX raw (little-endian, packed) layout; 0 for strings and unknown codes.</summary>
    public static int BitWidth(this DataType t) => t switch
    {
        DataType.Float or DataType.Int32 or DataType.UInt32 => 32,
        DataType.Double or DataType.Int64 or DataType.UInt64 or DataType.Complex64 => 64,
        DataType.Complex128 => 128,
        DataType.UInt8 or DataType.Int8 or DataType.Bool => 8,
        DataType.Float8E4M3FN or DataType.Float8E4M3FNUZ or DataType.Float8E5M2 or DataType.Float8E5M2FNUZ or DataType.Float8E8M0 => 8,
        DataType.UInt16 or DataType.Int16 or DataType.Float16 or DataType.BFloat16 => 16,
        DataType.UInt4 or DataType.Int4 or DataType.Float4E2M1 => 4,
        DataType.UInt2 or DataType.Int2 => 2,
        _ => 0,
    };

    /// <summary>Bytes needed for <paramref name="elements"/> elements in raw layout (sub-byte types packed, rounded up).</summary>
    public static long ByteCount(this DataType t, long elements)
    {
        int bits = t.BitWidth();
        if (bits == 0) throw new ArgumentException($"data type {t.Name()} has no fixed raw size");
        return (elements * bits + 7) / 8;
    }

    public static bool IsFloatingPoint(this DataType t) => t is DataType.Float or DataType.Double or DataType.Float16 or DataType.BFloat16
        or DataType.Float8E4M3FN or DataType.Float8E4M3FNUZ or DataType.Float8E5M2 or DataType.Float8E5M2FNUZ or DataType.Float8E8M0 or DataType.Float4E2M1;

    /// <summary>Short lower-case name used by the text printer and CLI (f32, bf16, i64 ...).</summary>
    public static string Name(this DataType t) => t switch
    {
        DataType.Float => "f32",
        DataType.UInt8 => "u8",
        DataType.Int8 => "i8",
        DataType.UInt16 => "u16",
        DataType.Int16 => "i16",
        DataType.Int32 => "i32",
        DataType.Int64 => "i64",
        DataType.String => "string",
        DataType.Bool => "bool",
        DataType.Float16 => "f16",
        DataType.Double => "f64",
        DataType.UInt32 => "u32",
        DataType.UInt64 => "u64",
        DataType.Complex64 => "c64",
        DataType.Complex128 => "c128",
        DataType.BFloat16 => "bf16",
        DataType.Float8E4M3FN => "f8e4m3fn",
        DataType.Float8E4M3FNUZ => "f8e4m3fnuz",
        DataType.Float8E5M2 => "f8e5m2",
        DataType.Float8E5M2FNUZ => "f8e5m2fnuz",
        DataType.UInt4 => "u4",
        DataType.Int4 => "i4",
        DataType.Float4E2M1 => "f4e2m1",
        DataType.Float8E8M0 => "f8e8m0",
        DataType.UInt2 => "u2",
        DataType.Int2 => "i2",
        DataType.Undefined => "undefined",
        _ => $"dtype{(int)t}",
    };
}
