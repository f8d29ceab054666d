using OnnxMoe.Ir;
using OnnxMoe.Passes.Calibration;
using OnnxMoe.Runtime;

namespace OnnxMoe.Compiler.Calibration;

/// <summary>
/// Where calibration keeps residual-stream states between decoder blocks: in memory up to
/// <see cref="Budget"/> bytes, beyond it in spill files. A spill file is unlinked as soon as it is
/// opened (on Linux), so nothing is left on disk whatever happens to the process; elsewhere it is
/// deleted on close.
/// </summary>
public sealed class HiddenStateStore : IDisposable
{
    private readonly string _spillDirectory;
    private readonly List<HiddenStates> _live = new();
    private int _files;

    /// <param name="budget">Bytes of states held in memory; states that do not fit go to a spill file.</param>
    /// <param name="spillDirectory">Where spill files go (default: the system's temporary folder).</param>
    public HiddenStateStore(long budget, string? spillDirectory = null)
    {
        if (budget < 0) throw new ArgumentOutOfRangeException(nameof(budget));
        Budget = budget;
        _spillDirectory = spillDirectory ?? Path.GetTempPath();
    }

    public long Budget { get; }
    /// <summary>Bytes of states held in memory now.</summary>
    public long InMemoryBytes { get; private set; }
    /// <summary>Most bytes ever held in memory at once.</summary>
    public long PeakInMemoryBytes { get; private set; }
    /// <summary>Bytes ever written to spill files.</summary>
    public long SpilledBytes { get; private set; }

    /// <summary>States for <paramref name="count"/> samples of <paramref name="length"/> tokens x <paramref name="hidden"/> channels.</summary>
    public HiddenStates Allocate(int count, int length, int hidden, DataType type)
    {
        long bytes = checked((long)count * length * hidden * (int)type.ByteCount(1));
        HiddenStates states;
        if (InMemoryBytes + bytes <= Budget && bytes <= Array.MaxLength)
        {
            InMemoryBytes += bytes;
            PeakInMemoryBytes = Math.Max(PeakInMemoryBytes, InMemoryBytes);
            states = new HiddenStates(this, count, length, hidden, type, new byte[bytes], null);
        }
        else
        {
            SpilledBytes += bytes;
            states = new HiddenStates(this, count, length, hidden, type, null, OpenSpillFile(bytes));
        }
        _live.Add(states);
        return states;
    }

    private FileStream OpenSpillFile(long bytes)
    {
        string path = Path.Combine(_spillDirectory, $"onnxmoe-calibration-{Environment.ProcessId}-{++_files}.spill");
        FileStream file;
        try
        {
            file = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 16, FileOptions.DeleteOnClose);
        }
        catch (IOException e)
        {
            throw new UserErrorException($"{_spillDirectory}: cannot create a calibration spill file ({e.Message})");
        }
        catch (UnauthorizedAccessException e)
        {
            throw new UserErrorException($"{_spillDirectory}: cannot create a calibration spill file ({e.Message})");
        }
        if (!OperatingSystem.IsWindows())
            File.Delete(path);   // the open handle keeps the data; the name is gone, so a killed process leaves nothing
        try
        {
            file.SetLength(bytes);
        }
        catch (IOException e)
        {
            file.Dispose();
            throw new UserErrorException($"{_spillDirectory}: no room for {bytes / (1 << 20)} MiB of calibration states ({e.Message}); raise --calibration-memory or free disk space");
        }
        return file;
    }

    internal void Release(HiddenStates states)
    {
        if (states.InMemory) InMemoryBytes -= states.ByteLength;
        _live.Remove(states);
    }

    public void Dispose()
    {
        foreach (var s in _live.ToList()) s.Dispose();
    }
}

/// <summary>Residual-stream states [<see cref="Count"/>, <see cref="Length"/>, <see cref="Hidden"/>] of one element type, read and written by samples.</summary>
public sealed class HiddenStates : IHiddenStates
{
    private readonly HiddenStateStore _store;
    private byte[]? _memory;
    private FileStream? _file;
    private bool _disposed;

    internal HiddenStates(HiddenStateStore store, int count, int length, int hidden, DataType type, byte[]? memory, FileStream? file)
    {
        _store = store;
        Count = count;
        Length = length;
        Hidden = hidden;
        ElementType = type;
        _memory = memory;
        _file = file;
    }

    public int Count { get; }
    public int Length { get; }
    public int Hidden { get; }
    public DataType ElementType { get; }
    public bool InMemory => _memory != null;
    public long SampleBytes => (long)Length * Hidden * ElementType.ByteCount(1);
    public long ByteLength => Count * SampleBytes;

    /// <summary>Stores samples <paramref name="first"/>.. from <paramref name="data"/> (whole samples, row-major).</summary>
    public void Write(int first, ReadOnlySpan<byte> data)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (data.Length % SampleBytes != 0 || first < 0 || first + data.Length / SampleBytes > Count)
            throw new ArgumentException($"{data.Length} bytes from sample {first} do not fit states of {Count} samples x {SampleBytes} bytes");
        long at = first * SampleBytes;
        if (_memory != null) data.CopyTo(_memory.AsSpan((int)at));
        else
        {
            _file!.Position = at;
            _file.Write(data);
        }
    }

    /// <summary>Samples <paramref name="first"/>..+<paramref name="count"/> into <paramref name="destination"/>.</summary>
    public void Read(int first, int count, Span<byte> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long bytes = count * SampleBytes;
        if (first < 0 || first + count > Count || destination.Length != bytes) throw new ArgumentOutOfRangeException(nameof(count));
        long at = first * SampleBytes;
        if (_memory != null) _memory.AsSpan((int)at, (int)bytes).CopyTo(destination);
        else
        {
            _file!.Position = at;
            _file.ReadExactly(destination);
        }
    }

    /// <summary>Samples as a tensor [count, Length, Hidden] over a copy the value keeps alive.</summary>
    public OrtValue Batch(int first, int count)
    {
        var data = new byte[count * SampleBytes];
        Read(first, count, data);
        return OrtValue.CreateTensor<byte>(data, [count, Length, Hidden], ElementType);
    }

    /// <summary>Samples as f32 (converted where stored in another float type).</summary>
    public float[] ReadFloats(int first, int count)
    {
        var bytes = new byte[count * SampleBytes];
        Read(first, count, bytes);
        if (ElementType == DataType.Float) return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray();
        var result = new float[count * (long)Length * Hidden];
        Ir.Tensors.TensorKernels.Convert(bytes, ElementType, System.Runtime.InteropServices.MemoryMarshal.AsBytes(result.AsSpan()), DataType.Float);
        return result;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _store.Release(this);
        _memory = null;
        _file?.Dispose();
        _file = null;
    }
}
