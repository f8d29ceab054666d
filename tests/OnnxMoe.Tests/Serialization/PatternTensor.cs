using System.Buffers.Binary;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Tests.Serialization;

/// <summary>
/// A large lazy tensor whose bytes are a deterministic function of (seed, byte position), streamed
/// in 1 MiB chunks by <see cref="WriteTo"/>: lets a test write gigabytes without holding them.
/// </summary>
internal sealed class PatternTensor(DataType dataType, long[] shape, ulong seed) : Tensor(dataType, shape)
{
    public override bool IsMaterialized => false;

    public override ReadOnlySpan<byte> GetBytes() => throw new InvalidOperationException("pattern tensors are only streamed");

    public override void WriteTo(Stream destination)
    {
        var buffer = new byte[1 << 20];
        for (long pos = 0; pos < ByteLength; pos += buffer.Length)
        {
            int n = (int)Math.Min(buffer.Length, ByteLength - pos);
            Fill(seed, pos, buffer.AsSpan(0, n));
            destination.Write(buffer, 0, n);
        }
    }

    /// <summary>Bytes [position, position + span.Length) of the pattern; position must be a multiple of 8.</summary>
    public static void Fill(ulong seed, long position, Span<byte> span)
    {
        long word = position / 8;
        int i = 0;
        for (; i + 8 <= span.Length; i += 8, word++) BinaryPrimitives.WriteUInt64LittleEndian(span[i..], Mix(seed, word));
        if (i < span.Length)
        {
            Span<byte> last = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(last, Mix(seed, word));
            last[..(span.Length - i)].CopyTo(span[i..]);
        }
    }

    private static ulong Mix(ulong seed, long word)
    {
        ulong z = seed + (ulong)word * 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
