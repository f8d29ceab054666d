using System.Runtime.InteropServices;

namespace OnnxMoe.Ir.Tensors;

/// <summary>
/// Tensor data behind one interface. Bytes are always ONNX raw layout: little-endian, sub-byte
/// types packed two (4-bit) or four (2-bit) per byte, element 0 in the low bits.
/// Reading <see cref="DataType"/> and <see cref="Shape"/> never does I/O.
/// </summary>
public abstract class Tensor
{
    protected Tensor(DataType dataType, long[] shape)
    {
        DataType = dataType;
        Shape = shape;
        foreach (var d in shape)
            if (d < 0) throw new ArgumentException($"negative tensor dimension {d}");
    }

    public DataType DataType { get; }
    /// <summary>Dimensions; an empty array is a scalar. Owned by the tensor: do not mutate.</summary>
    public long[] Shape { get; }
    public string? Name { get; set; }
    public string? DocString { get; set; }
    /// <summary>Free-form hint a serializer may attach to reproduce the original encoding; never interpreted by passes.</summary>
    public object? SerializationHint { get; set; }

    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Shape) n = checked(n * d);
            return n;
        }
    }

    /// <summary>Length in bytes of the raw layout.</summary>
    public virtual long ByteLength => DataType.ByteCount(ElementCount);

    /// <summary>True when the bytes are already in memory (no file read or computation on access).</summary>
    public abstract bool IsMaterialized { get; }

    /// <summary>Raw bytes. May map a file or run a computation; throws for tensors over 2 GiB (use <see cref="WriteTo"/>).</summary>
    public abstract ReadOnlySpan<byte> GetBytes();

    /// <summary>Streams raw bytes to <paramref name="destination"/> without materialising more than one chunk where possible.</summary>
    public virtual void WriteTo(Stream destination) => destination.Write(GetBytes());

    /// <summary>Elements reinterpreted as <typeparamref name="T"/> (no copy); T must match the element width.</summary>
    public ReadOnlySpan<T> GetSpan<T>() where T : unmanaged
    {
        if (DataType.BitWidth() != Marshal.SizeOf<T>() * 8)
            throw new InvalidOperationException($"cannot view {DataType.Name()} tensor as {typeof(T).Name}");
        return MemoryMarshal.Cast<byte, T>(GetBytes());
    }

    /// <summary>Float copy of a float/f16/bf16/f64 tensor's elements.</summary>
    public float[] ToFloatArray()
    {
        if (!TensorKernels.IsConvertibleSource(DataType)) throw new InvalidOperationException($"{DataType.Name()} tensor is not floating point");
        var result = GC.AllocateUninitializedArray<float>(checked((int)ElementCount));
        var resultBytes = MemoryMarshal.AsBytes(result.AsSpan());
        if (this is FileTensor file && DataType == DataType.Float)
        {
            file.File.ReadExactly(file.Offset, resultBytes);     // straight into the result, no intermediate copy
            return result;
        }
        TensorKernels.Convert(GetBytes(), DataType, resultBytes, DataType.Float);
        return result;
    }

    public override string ToString() => $"{DataType.Name()}[{string.Join(",", Shape)}]";
}

/// <summary>Tensor whose bytes live in a managed array owned by the tensor.</summary>
public sealed class InMemoryTensor : Tensor
{
    private readonly byte[] _data;

    public InMemoryTensor(DataType dataType, long[] shape, byte[] rawData) : base(dataType, shape)
    {
        if (dataType != DataType.String && rawData.LongLength != ByteLength)
            throw new ArgumentException($"tensor {dataType.Name()}[{string.Join(",", shape)}] needs {ByteLength} bytes, got {rawData.Length}");
        _data = rawData;
    }

    public override bool IsMaterialized => true;
    public override ReadOnlySpan<byte> GetBytes() => _data;

    public static InMemoryTensor FromFloats(long[] shape, ReadOnlySpan<float> values) =>
        new(DataType.Float, shape, MemoryMarshal.AsBytes(values).ToArray());

    public static InMemoryTensor FromInt64s(long[] shape, ReadOnlySpan<long> values) =>
        new(DataType.Int64, shape, MemoryMarshal.AsBytes(values).ToArray());

    public static InMemoryTensor FromInt32s(long[] shape, ReadOnlySpan<int> values) =>
        new(DataType.Int32, shape, MemoryMarshal.AsBytes(values).ToArray());

    public static InMemoryTensor FromHalves(long[] shape, ReadOnlySpan<Half> values) =>
        new(DataType.Float16, shape, MemoryMarshal.AsBytes(values).ToArray());

    public static InMemoryTensor Scalar(float v) => FromFloats([], [v]);
    public static InMemoryTensor Scalar(long v) => FromInt64s([], [v]);
}

/// <summary>String tensor (TensorProto.string_data); each element is an arbitrary byte string.</summary>
public sealed class StringTensor : Tensor
{
    public StringTensor(long[] shape, IReadOnlyList<byte[]> values) : base(DataType.String, shape)
    {
        if (values.Count != ElementCount) throw new ArgumentException("string tensor element count mismatch");
        Values = values;
    }

    public IReadOnlyList<byte[]> Values { get; }
    public override long ByteLength => Values.Sum(v => (long)v.Length);
    public override bool IsMaterialized => true;
    public override ReadOnlySpan<byte> GetBytes() => throw new InvalidOperationException("string tensors have no raw byte layout");
    public override void WriteTo(Stream destination) => throw new InvalidOperationException("string tensors have no raw byte layout");
}

/// <summary>Tensor whose bytes are computed when first needed (e.g. quantized while the writer streams).
/// The computation runs on each <see cref="GetBytes"/> call unless <paramref name="cache"/> is set.
/// An optional <paramref name="write"/> streams the same bytes straight to a stream (chunk by chunk, without
/// materialising the whole tensor); <see cref="WriteTo"/> uses it unless the bytes are cached.</summary>
public sealed class LazyTensor : Tensor
{
    private readonly Func<byte[]> _compute;
    private readonly Action<Stream>? _write;
    private readonly bool _cache;
    private byte[]? _cached;

    public LazyTensor(DataType dataType, long[] shape, Func<byte[]> compute, bool cache = false) : this(dataType, shape, compute, null, cache) { }

    public LazyTensor(DataType dataType, long[] shape, Func<byte[]> compute, Action<Stream>? write, bool cache = false) : base(dataType, shape)
    {
        _compute = compute;
        _write = write;
        _cache = cache;
    }

    /// <summary>
    /// <paramref name="parts"/> (one element type, equal dimensions after the first) one after the other along dimension 0,
    /// lazily: written part by part, each as it writes itself (a lazy part streams), and materialised the same way into one
    /// array only for <see cref="GetBytes"/> callers.
    /// </summary>
    public static LazyTensor ConcatRows(IReadOnlyList<Tensor> parts)
    {
        if (parts.Count == 0) throw new ArgumentException("nothing to concatenate");
        var first = parts[0];
        if (parts.Any(t => t.DataType != first.DataType || t.Shape.Length == 0 || !t.Shape.AsSpan(1).SequenceEqual(first.Shape.AsSpan(1))))
            throw new InvalidOperationException($"cannot stack {string.Join(", ", parts.Select(t => $"{t.Name} {t}"))} along rows");
        var shape = first.Shape.ToArray();
        shape[0] = parts.Sum(t => t.Shape[0]);
        void Write(Stream destination)
        {
            foreach (var t in parts) t.WriteTo(destination);
        }
        return new LazyTensor(first.DataType, shape,
            () =>
            {
                long length = parts.Sum(t => t.ByteLength);
                if (length > Array.MaxLength) throw new InvalidOperationException($"concatenation of {first.Name} and others is {length} bytes: too large for one array, stream it with WriteTo");
                var bytes = GC.AllocateUninitializedArray<byte>((int)length);
                using var ms = new MemoryStream(bytes, writable: true);
                Write(ms);
                return bytes;
            },
            Write);
    }

    public override bool IsMaterialized => _cached != null;

    public override ReadOnlySpan<byte> GetBytes()
    {
        if (_cached != null) return _cached;
        var bytes = _compute();
        if (bytes.LongLength != ByteLength)
            throw new InvalidOperationException($"lazy tensor {Name} produced {bytes.Length} bytes, expected {ByteLength}");
        if (_cache) _cached = bytes;
        return bytes;
    }

    public override void WriteTo(Stream destination)
    {
        if (_write == null || _cache || _cached != null)
        {
            destination.Write(GetBytes());
            return;
        }
        long start = destination.CanSeek ? destination.Position : -1;
        _write(destination);
        if (start >= 0 && destination.Position - start != ByteLength)
            throw new InvalidOperationException($"lazy tensor {Name} streamed {destination.Position - start} bytes, expected {ByteLength}");
    }
}
