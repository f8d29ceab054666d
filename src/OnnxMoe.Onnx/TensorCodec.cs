using System.Buffers.Binary;
using System.Runtime.InteropServices;
using OnnxMoe.Ir;
using OnnxMoe.Onnx.Proto;

namespace OnnxMoe.Onnx;

/// <summary>
/// Converts between TensorProto's typed data fields (float_data, int32_data, ...) and the IR's
/// raw little-endian layout, in both directions, bit-exactly. Widths follow the ONNX spec:
/// int32_data holds one element per entry for 8/16/32-bit types and one packed byte per entry
/// for sub-byte types; uint64_data holds UINT32 and UINT64; float/double_data hold two entries
/// per complex element.
/// </summary>
internal static class TensorCodec
{
    public static bool Allows(TensorEncoding field, DataType t) => field switch
    {
        TensorEncoding.FloatData => t is DataType.Float or DataType.Complex64,
        TensorEncoding.DoubleData => t is DataType.Double or DataType.Complex128,
        TensorEncoding.Int64Data => t is DataType.Int64,
        TensorEncoding.UInt64Data => t is DataType.UInt32 or DataType.UInt64,
        TensorEncoding.Int32Data => t is DataType.Int32 or DataType.Int16 or DataType.Int8 or DataType.UInt16 or DataType.UInt8
            or DataType.Bool or DataType.Float16 or DataType.BFloat16 or DataType.Float8E4M3FN or DataType.Float8E4M3FNUZ
            or DataType.Float8E5M2 or DataType.Float8E5M2FNUZ or DataType.Float8E8M0 or DataType.UInt4 or DataType.Int4
            or DataType.Float4E2M1 or DataType.UInt2 or DataType.Int2,
        TensorEncoding.StringData => t is DataType.String,
        _ => false,
    };

    /// <summary>Entries a typed field holds for <paramref name="elements"/> elements of type <paramref name="t"/>.</summary>
    public static long EntryCount(TensorEncoding field, DataType t, long elements) => field switch
    {
        TensorEncoding.FloatData or TensorEncoding.DoubleData when t is DataType.Complex64 or DataType.Complex128 => elements * 2,
        TensorEncoding.Int32Data when t.BitWidth() < 8 => t.ByteCount(elements),
        _ => elements,
    };

    /// <summary>Raw bytes from the typed field in use; the caller has checked the entry count.</summary>
    public static byte[] Decode(TensorProto p, TensorEncoding field, DataType t)
    {
        switch (field)
        {
            case TensorEncoding.FloatData:
                return MemoryMarshal.AsBytes(p.FloatData.ToArray().AsSpan()).ToArray();
            case TensorEncoding.DoubleData:
                return MemoryMarshal.AsBytes(p.DoubleData.ToArray().AsSpan()).ToArray();
            case TensorEncoding.Int64Data:
                return MemoryMarshal.AsBytes(p.Int64Data.ToArray().AsSpan()).ToArray();
            case TensorEncoding.UInt64Data:
                if (t == DataType.UInt64) return MemoryMarshal.AsBytes(p.Uint64Data.ToArray().AsSpan()).ToArray();
                {
                    var raw = new byte[p.Uint64Data.Count * 4];
                    for (int i = 0; i < p.Uint64Data.Count; i++) BinaryPrimitives.WriteUInt32LittleEndian(raw.AsSpan(i * 4), (uint)p.Uint64Data[i]);
                    return raw;
                }
            case TensorEncoding.Int32Data:
                {
                    int width = t.BitWidth() >= 8 ? t.BitWidth() / 8 : 1;
                    var raw = new byte[p.Int32Data.Count * width];
                    for (int i = 0; i < p.Int32Data.Count; i++)
                    {
                        int v = p.Int32Data[i];
                        switch (width)
                        {
                            case 1: raw[i] = (byte)v; break;
                            case 2: BinaryPrimitives.WriteUInt16LittleEndian(raw.AsSpan(i * 2), (ushort)v); break;
                            default: BinaryPrimitives.WriteInt32LittleEndian(raw.AsSpan(i * 4), v); break;
                        }
                    }
                    return raw;
                }
            default: throw new InvalidOperationException($"no typed decoding for {field}");
        }
    }

    /// <summary>Fills the typed field <paramref name="field"/> of <paramref name="p"/> from raw bytes (inverse of <see cref="Decode"/>).</summary>
    public static void Encode(TensorProto p, TensorEncoding field, DataType t, ReadOnlySpan<byte> raw)
    {
        switch (field)
        {
            case TensorEncoding.FloatData:
                p.FloatData.AddRange(MemoryMarshal.Cast<byte, float>(raw).ToArray());
                break;
            case TensorEncoding.DoubleData:
                p.DoubleData.AddRange(MemoryMarshal.Cast<byte, double>(raw).ToArray());
                break;
            case TensorEncoding.Int64Data:
                p.Int64Data.AddRange(MemoryMarshal.Cast<byte, long>(raw).ToArray());
                break;
            case TensorEncoding.UInt64Data:
                if (t == DataType.UInt64) p.Uint64Data.AddRange(MemoryMarshal.Cast<byte, ulong>(raw).ToArray());
                else foreach (var v in MemoryMarshal.Cast<byte, uint>(raw)) p.Uint64Data.Add(v);
                break;
            case TensorEncoding.Int32Data:
                {
                    int bits = t.BitWidth();
                    // Signed narrow types are sign-extended (as numpy's astype(int32) writes them); bit patterns of
                    // floats, unsigned types and packed sub-byte pairs are zero-extended.
                    bool signed = t is DataType.Int8 or DataType.Int16;
                    if (bits == 32) p.Int32Data.AddRange(MemoryMarshal.Cast<byte, int>(raw).ToArray());
                    else if (bits == 16)
                        foreach (var v in MemoryMarshal.Cast<byte, ushort>(raw)) p.Int32Data.Add(signed ? (short)v : v);
                    else
                        foreach (var v in raw) p.Int32Data.Add(signed ? (sbyte)v : v);
                    break;
                }
            default: throw new InvalidOperationException($"no typed encoding for {field}");
        }
    }

    public static TensorEncoding FieldInUse(TensorProto p)
    {
        if (p.HasRawData) return TensorEncoding.Raw;
        if (p.FloatData.Count > 0) return TensorEncoding.FloatData;
        if (p.Int32Data.Count > 0) return TensorEncoding.Int32Data;
        if (p.StringData.Count > 0) return TensorEncoding.StringData;
        if (p.Int64Data.Count > 0) return TensorEncoding.Int64Data;
        if (p.DoubleData.Count > 0) return TensorEncoding.DoubleData;
        if (p.Uint64Data.Count > 0) return TensorEncoding.UInt64Data;
        return TensorEncoding.None;
    }

    public static string FieldName(TensorEncoding e) => e switch
    {
        TensorEncoding.Raw => "raw_data",
        TensorEncoding.FloatData => "float_data",
        TensorEncoding.Int32Data => "int32_data",
        TensorEncoding.StringData => "string_data",
        TensorEncoding.Int64Data => "int64_data",
        TensorEncoding.DoubleData => "double_data",
        TensorEncoding.UInt64Data => "uint64_data",
        TensorEncoding.External => "external data",
        _ => "no data field",
    };
}
