using System.Runtime.InteropServices;
using OnnxMoe.Ir;

namespace OnnxMoe.Passes.Quantization;

/// <summary>
/// A weight matrix W [K, N] (graph layout) quantized in MatMulNBits layout. Owns its arrays.
/// <list type="bullet">
/// <item><see cref="PackedCodes"/>: uint8 [N, k_blocks, block_size*bits/8]; along K inside each block,
/// 4-bit codes two per byte with element 2j in the low nibble; the padded tail of the last block holds the zero point (dequantizes to 0).</item>
/// <item><see cref="Scales"/>: [N, k_blocks], each exactly representable in <see cref="ScaleType"/>.</item>
/// <item><see cref="PackedZeroPoints"/>: uint8 [N, ceil(k_blocks*bits/8)] packed like the codes, null when symmetric; unused nibbles are 0.</item>
/// </list>
/// Dequantized: W[k, n] = (code - zero_point) * scale of block k / block_size.
/// </summary>
public sealed class QuantizedWeight
{
    public QuantizedWeight(int k, int n, BlockQuantFormat format, DataType scaleType, byte[] packedCodes, float[] scales, byte[]? packedZeroPoints)
    {
        K = k;
        N = n;
        Format = format;
        ScaleType = scaleType;
        int blocks = format.BlockCount(k);
        if (packedCodes.LongLength != (long)n * blocks * format.BlockBytes)
            throw new ArgumentException($"packed codes hold {packedCodes.LongLength} bytes, [{n},{blocks},{format.BlockBytes}] needs {(long)n * blocks * format.BlockBytes}");
        if (scales.LongLength != (long)n * blocks)
            throw new ArgumentException($"scales hold {scales.LongLength} values, [{n},{blocks}] needs {(long)n * blocks}");
        if (format.Symmetric != (packedZeroPoints == null))
            throw new ArgumentException(format.Symmetric ? "symmetric weights carry no zero points" : "asymmetric weights need zero points");
        if (packedZeroPoints != null && packedZeroPoints.LongLength != (long)n * format.ZeroPointBytesPerRow(k))
            throw new ArgumentException($"zero points hold {packedZeroPoints.LongLength} bytes, [{n},{format.ZeroPointBytesPerRow(k)}] needs {(long)n * format.ZeroPointBytesPerRow(k)}");
        PackedCodes = packedCodes;
        Scales = scales;
        PackedZeroPoints = packedZeroPoints;
    }

    /// <summary>Input channels (rows of the graph's W).</summary>
    public int K { get; }
    /// <summary>Output channels (columns of the graph's W).</summary>
    public int N { get; }
    public BlockQuantFormat Format { get; }
    /// <summary>Element type the scales are stored in: the activation type (f32, f16 or bf16).</summary>
    public DataType ScaleType { get; }
    public byte[] PackedCodes { get; }
    public float[] Scales { get; }
    public byte[]? PackedZeroPoints { get; }

    public int BlockCount => Format.BlockCount(K);
    public long[] CodesShape => [N, BlockCount, Format.BlockBytes];
    public long[] ScalesShape => [N, BlockCount];
    public long[] ZeroPointsShape => [N, Format.ZeroPointBytesPerRow(K)];

    /// <summary>Scales as raw bytes of <see cref="ScaleType"/> (a new array).</summary>
    public byte[] ScaleBytes() => EncodeScales(Scales, ScaleType);

    internal static byte[] EncodeScales(ReadOnlySpan<float> scales, DataType type)
    {
        switch (type)
        {
            case DataType.Float:
                return MemoryMarshal.AsBytes(scales).ToArray();
            case DataType.Float16:
                {
                    var halves = new Half[scales.Length];
                    System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(scales, halves);
                    return MemoryMarshal.AsBytes(halves.AsSpan()).ToArray();
                }
            case DataType.BFloat16:
                {
                    var bytes = new byte[scales.Length * 2];
                    var dst = MemoryMarshal.Cast<byte, ushort>(bytes.AsSpan());
                    // Scales are exact in bf16 (rounded when computed), so truncation loses nothing.
                    for (int i = 0; i < scales.Length; i++) dst[i] = (ushort)(BitConverter.SingleToUInt32Bits(scales[i]) >> 16);
                    return bytes;
                }
            default:
                throw new ArgumentException($"scale type {type.Name()} is not supported: use f32, f16 or bf16");
        }
    }
}
