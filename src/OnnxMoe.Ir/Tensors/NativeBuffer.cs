using System.Runtime.InteropServices;

namespace OnnxMoe.Ir.Tensors;

/// <summary>
/// Zeroed native memory with a fixed length and alignment (e.g. the image of an external-data file handed
/// to ORT). Owns the memory: dispose it once nothing reads it; a finalizer frees it if nobody does.
/// </summary>
public sealed unsafe class NativeBuffer : IDisposable
{
    private void* _pointer;

    public NativeBuffer(long length, int alignment = 64)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (alignment <= 0 || (alignment & (alignment - 1)) != 0) throw new ArgumentException($"alignment must be a power of two, got {alignment}");
        Length = length;
        _pointer = NativeMemory.AlignedAlloc((nuint)Math.Max(1, length), (nuint)alignment);
        NativeMemory.Clear(_pointer, (nuint)length);
        if (length > 0) GC.AddMemoryPressure(length);
    }

    public long Length { get; }

    public IntPtr Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(_pointer == null, this);
            return (IntPtr)_pointer;
        }
    }

    /// <summary>A writable stream over the whole buffer, starting at offset 0.</summary>
    public Stream AsStream() => new UnmanagedMemoryStream((byte*)Pointer, Length, Length, FileAccess.ReadWrite);

    /// <summary>A slice of the buffer (under 2 GiB).</summary>
    public Span<byte> Slice(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset + length > Length) throw new ArgumentOutOfRangeException(nameof(offset));
        return new Span<byte>((byte*)Pointer + offset, length);
    }

    ~NativeBuffer() => Free();

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    private void Free()
    {
        if (_pointer == null) return;
        NativeMemory.AlignedFree(_pointer);
        _pointer = null;
        if (Length > 0) GC.RemoveMemoryPressure(Length);
    }
}
