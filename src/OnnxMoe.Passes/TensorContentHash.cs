using System.Security.Cryptography;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Passes;

/// <summary>SHA-256 of a tensor's raw bytes, streamed (never more than one chunk in memory).</summary>
public static class TensorContentHash
{
    /// <summary>Lower-case hex SHA-256 of the raw layout; string tensors hash each element's length and bytes.</summary>
    public static string Sha256Hex(Tensor tensor) => Convert.ToHexStringLower(Sha256(tensor));

    public static byte[] Sha256(Tensor tensor)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        if (tensor is StringTensor s)
        {
            Span<byte> len = stackalloc byte[8];
            foreach (var v in s.Values)
            {
                BitConverter.TryWriteBytes(len, (long)v.Length);
                hash.AppendData(len);
                hash.AppendData(v);
            }
        }
        else
        {
            using var sink = new HashSink(hash);
            tensor.WriteTo(sink);
        }
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

    private sealed class HashSink(IncrementalHash hash) : Stream
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
