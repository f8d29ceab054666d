using System.Security.Cryptography;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Ir.Printing;

/// <summary>Content hash of a tensor's raw bytes, computed by streaming (a 10 GB tensor is never held in memory).</summary>
public static class TensorDigest
{
    /// <summary>Lower-case hex SHA-256 of the raw bytes; for string tensors, of each element as 8-byte little-endian length + bytes.</summary>
    public static string Sha256Hex(Tensor tensor) => Convert.ToHexStringLower(Sha256(tensor));

    /// <summary>SHA-256 of the raw bytes (see <see cref="Sha256Hex"/>).</summary>
    public static byte[] Sha256(Tensor tensor)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        if (tensor is StringTensor st)
        {
            Span<byte> len = stackalloc byte[8];
            foreach (var s in st.Values)
            {
                System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(len, s.Length);
                hash.AppendData(len);
                hash.AppendData(s);
            }
        }
        else if (tensor.IsMaterialized || tensor.ByteLength < (1 << 20))
            hash.AppendData(tensor.GetBytes());
        else
            tensor.WriteTo(new HashingStream(hash));
        return hash.GetHashAndReset();
    }

    /// <summary>SHA-256 of at most the first <paramref name="count"/> raw bytes; reads only those bytes for file tensors.</summary>
    public static byte[] PrefixSha256(Tensor tensor, int count)
    {
        long n = Math.Min(count, tensor.ByteLength);
        var buffer = new byte[n];
        if (tensor is FileTensor f) f.File.ReadExactly(f.Offset, buffer);
        else tensor.GetBytes()[..(int)n].CopyTo(buffer);
        return SHA256.HashData(buffer);
    }

    /// <summary>First 16 hex digits of <see cref="Sha256Hex"/>: what the printer shows.</summary>
    public static string Short(Tensor tensor) => Sha256Hex(tensor)[..16];

    private sealed class HashingStream(IncrementalHash hash) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => hash.AppendData(buffer, offset, count);
        public override void Write(ReadOnlySpan<byte> buffer) => hash.AppendData(buffer);
    }
}
