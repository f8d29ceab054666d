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

    public override void WriteTo(Stream destination)
    {
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent((int)Math.Min(Length, 4 << 20));
        try
        {
            for (long done = 0; done < Length;)
            {
                int n = (int)Math.Min(buffer.Length, Length - done);
                File.ReadExactly(Offset + done, buffer.AsSpan(0, n));
                destination.Write(buffer, 0, n);
                done += n;
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
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
