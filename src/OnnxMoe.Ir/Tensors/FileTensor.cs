using Microsoft.Win32.SafeHandles;

namespace OnnxMoe.Ir.Tensors;

/// <summary>
/// Tensor stored in a byte range of a file (safetensors, .onnx.data). Shape and dtype are known
/// without I/O; bytes are read with positioned reads when used. We read rather than memory-map so
/// that streaming a 100 GB checkpoint does not leave every page resident (mapped pages count in RSS).
/// </summary>
public sealed class FileTensor : Tensor
{
    public FileTensor(DataType dataType, long[] shape, SharedFile file, long offset, long length) : base(dataType, shape)
    {
        if (dataType != DataType.String && length != ByteLength)
            throw new InvalidDataException($"{file.Path}: tensor {dataType.Name()}[{string.Join(",", shape)}] needs {ByteLength} bytes, the file gives {length}");
        if (offset < 0 || offset + length > file.Length)
            throw new InvalidDataException($"{file.Path}: tensor bytes [{offset}, {offset + length}) lie outside the file ({file.Length} bytes)");
        File = file;
        Offset = offset;
        Length = length;
    }

    public SharedFile File { get; }
    public long Offset { get; }
    public long Length { get; }
    public override bool IsMaterialized => false;

    /// <summary>Reads the tensor's bytes into a new array owned by the caller.</summary>
    public override ReadOnlySpan<byte> GetBytes()
    {
        if (Length > Array.MaxLength) throw new InvalidOperationException($"tensor {Name} is {Length} bytes: too large for one span, stream it with WriteTo");
        var buffer = GC.AllocateUninitializedArray<byte>((int)Length);
        File.ReadExactly(Offset, buffer);
        return buffer;
    }

    /// <summary>Copies the bytes in 4 MiB chunks; a larger tensor's next chunk is read while the previous one is written (in order).</summary>
    public override void WriteTo(Stream destination)
    {
        const int Chunk = 4 << 20;
        var pool = System.Buffers.ArrayPool<byte>.Shared;
        if (Length <= Chunk)
        {
            var one = pool.Rent((int)Length);
            try
            {
                File.ReadExactly(Offset, one.AsSpan(0, (int)Length));
                destination.Write(one, 0, (int)Length);
            }
            finally { pool.Return(one); }
            return;
        }
        byte[] a = pool.Rent(Chunk), b = pool.Rent(Chunk);
        Task pending = Task.CompletedTask;
        try
        {
            for (long done = 0; done < Length;)
            {
                int n = (int)Math.Min(Chunk, Length - done);
                File.ReadExactly(Offset + done, a.AsSpan(0, n));
                pending.GetAwaiter().GetResult();          // the previous chunk (in b) is written
                var full = a;
                pending = Task.Run(() => destination.Write(full, 0, n));
                (a, b) = (b, a);
                done += n;
            }
            pending.GetAwaiter().GetResult();
        }
        finally
        {
            try { pending.Wait(); } catch (AggregateException) { }
            pool.Return(a);
            pool.Return(b);
        }
    }
}

/// <summary>A read-only file opened once and shared by all tensors that live in it. Owns its handle.</summary>
public sealed class SharedFile : IDisposable
{
    private readonly SafeFileHandle _handle;

    public SharedFile(string path)
    {
        Path = System.IO.Path.GetFullPath(path);
        _handle = System.IO.File.OpenHandle(Path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        Length = RandomAccess.GetLength(_handle);
    }

    public string Path { get; }
    public long Length { get; }

    public void ReadExactly(long offset, Span<byte> destination)
    {
        while (destination.Length > 0)
        {
            int n = RandomAccess.Read(_handle, destination, offset);
            if (n <= 0) throw new EndOfStreamException($"{Path}: unexpected end of file at byte {offset}");
            destination = destination[n..];
            offset += n;
        }
    }

    public void Dispose() => _handle.Dispose();
}
