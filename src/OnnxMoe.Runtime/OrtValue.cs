using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Runtime.Native;

namespace OnnxMoe.Runtime;

/// <summary>
/// An ORT value (a tensor, for everything this wrapper creates). Whoever creates it or receives it from
/// <see cref="InferenceSession.Run"/> owns it and must dispose it. A tensor created over managed memory
/// keeps that memory pinned until disposal, and reads and writes go straight to it (no copy).
/// </summary>
public sealed class OrtValue : IDisposable
{
    private readonly OrtValueHandle _handle;
    private readonly ManagedPin? _pin;
    private long[]? _shape;
    private DataType? _elementType;

    private OrtValue(OrtValueHandle handle, ManagedPin? pin = null)
    {
        _handle = handle;
        _pin = pin;
    }

    /// <summary>Takes ownership of a value ORT produced.</summary>
    internal static OrtValue Own(IntPtr value) => new(new OrtValueHandle(value));

    internal OrtValueHandle Handle
    {
        get
        {
            ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
            return _handle;
        }
    }

    /// <summary>Tensor over <paramref name="data"/> (pinned, not copied); the element type follows
    /// <typeparamref name="T"/> (float, Half, <see cref="BFloat16"/>, double, sbyte, byte, short, ushort, int, uint, long, ulong, bool).</summary>
    public static OrtValue CreateTensor<T>(Memory<T> data, ReadOnlySpan<long> shape) where T : unmanaged =>
        CreateTensor(data, shape, ElementTypeOf<T>());

    /// <summary>Tensor over <paramref name="data"/> viewed as <paramref name="elementType"/>, e.g. ushort bits as bf16, or
    /// bytes holding packed int4; the byte length must equal the raw size of <paramref name="shape"/>.</summary>
    public static unsafe OrtValue CreateTensor<T>(Memory<T> data, ReadOnlySpan<long> shape, DataType elementType) where T : unmanaged
    {
        long byteLength = (long)data.Length * Unsafe.SizeOf<T>();
        CheckLayout(elementType, shape, byteLength);
        if (byteLength == 0) return Allocate(elementType, shape);
        var pin = data.Pin();
        try
        {
            var handle = OrtApi.CreateTensorWithData(OrtRuntime.CpuMemoryInfo, pin.Pointer, byteLength, shape, (int)elementType);
            return new OrtValue(handle, new ManagedPin(pin));
        }
        catch
        {
            pin.Dispose();
            throw;
        }
    }

    /// <summary>Tensor in memory ORT allocates (contents unspecified); fill it through <see cref="GetSpan{T}"/> or <see cref="GetBytes"/>.</summary>
    public static OrtValue Allocate(DataType elementType, ReadOnlySpan<long> shape)
    {
        if (elementType == DataType.String) throw new ArgumentException("use FromTensor with a StringTensor for string tensors");
        CheckLayout(elementType, shape, byteLength: null);
        return new OrtValue(OrtApi.CreateTensor(shape, (int)elementType));
    }

    /// <summary>ORT-allocated tensor holding a copy of <paramref name="data"/> (for data a span cannot keep alive).</summary>
    public static OrtValue CreateCopy<T>(ReadOnlySpan<T> data, ReadOnlySpan<long> shape) where T : unmanaged
    {
        var elementType = ElementTypeOf<T>();
        CheckLayout(elementType, shape, (long)data.Length * Unsafe.SizeOf<T>());
        var value = Allocate(elementType, shape);
        data.CopyTo(value.GetSpan<T>());
        return value;
    }

    /// <summary>ORT-allocated copy of an IR tensor (any element type ORT supports, strings included).</summary>
    public static OrtValue FromTensor(Tensor tensor)
    {
        if (tensor is StringTensor strings)
        {
            var value = new OrtValue(OrtApi.CreateTensor(tensor.Shape, (int)DataType.String));
            try
            {
                OrtApi.FillStringTensor(value.Handle, strings.Values);
            }
            catch
            {
                value.Dispose();
                throw;
            }
            return value;
        }
        var result = Allocate(tensor.DataType, tensor.Shape);
        tensor.GetBytes().CopyTo(result.GetBytes());
        return result;
    }

    public OnnxValueKind Kind => (OnnxValueKind)OrtApi.GetValueType(Handle);

    /// <summary>Element type of a tensor value.</summary>
    public DataType ElementType
    {
        get
        {
            if (_elementType is null) ReadTypeAndShape();
            return _elementType!.Value;
        }
    }

    /// <summary>Dimensions of a tensor value (a copy; a scalar has none).</summary>
    public long[] Shape
    {
        get
        {
            if (_shape is null) ReadTypeAndShape();
            return (long[])_shape!.Clone();
        }
    }

    public long ElementCount
    {
        get
        {
            if (_shape is null) ReadTypeAndShape();
            long n = 1;
            foreach (var d in _shape!) n = checked(n * d);
            return n;
        }
    }

    /// <summary>The tensor's elements in place (valid until disposal); <typeparamref name="T"/> must have the element width.</summary>
    public unsafe Span<T> GetSpan<T>() where T : unmanaged
    {
        var type = ElementType;
        if (type == DataType.String || type.BitWidth() != Unsafe.SizeOf<T>() * 8)
            throw new InvalidOperationException($"cannot view a {type.Name()} tensor as {typeof(T).Name}");
        return new Span<T>((void*)OrtApi.GetTensorMutableData(Handle), checked((int)ElementCount));
    }

    /// <summary>The tensor's raw bytes in place (ONNX raw layout; sub-byte types packed), valid until disposal.</summary>
    public unsafe Span<byte> GetBytes()
    {
        var type = ElementType;
        if (type == DataType.String) throw new InvalidOperationException("string tensors have no raw byte layout");
        long length = type.ByteCount(ElementCount);
        return new Span<byte>((void*)OrtApi.GetTensorMutableData(Handle), checked((int)length));
    }

    /// <summary>Copy of the elements into a new managed array.</summary>
    public T[] ToArray<T>() where T : unmanaged => GetSpan<T>().ToArray();

    /// <summary>Copy as an IR tensor (an <see cref="InMemoryTensor"/>, or a <see cref="StringTensor"/> for strings).</summary>
    public Tensor ToTensor()
    {
        var shape = Shape;
        if (ElementType == DataType.String)
            return new StringTensor(shape, OrtApi.GetStringTensorContent(Handle, checked((int)ElementCount)));
        return new InMemoryTensor(ElementType, shape, GetBytes().ToArray());
    }

    /// <summary>Elements converted to float (f32, f16, bf16 or f64 tensors).</summary>
    public float[] ToFloatArray() => ToTensor().ToFloatArray();

    public override string ToString() =>
        _handle.IsClosed ? "OrtValue(disposed)" : $"{ElementType.Name()}[{string.Join(",", Shape)}]";

    /// <summary>Releases the native value, then unpins any managed memory it was created over.</summary>
    public void Dispose()
    {
        _handle.Dispose();
        _pin?.Dispose();
    }

    private void ReadTypeAndShape()
    {
        if (Kind != OnnxValueKind.Tensor) throw new InvalidOperationException($"ORT value is a {Kind}, not a tensor");
        using var info = OrtApi.GetTensorTypeAndShape(Handle);
        var raw = info.DangerousGetHandle();
        _elementType = (DataType)OrtApi.GetElementType(raw);
        _shape = OrtApi.GetDimensions(raw);
        GC.KeepAlive(info);
    }

    private static void CheckLayout(DataType elementType, ReadOnlySpan<long> shape, long? byteLength)
    {
        long elements = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentException($"tensor dimensions must be >= 0, got [{string.Join(",", shape.ToArray())}]");
            elements = checked(elements * d);
        }
        if (elementType.BitWidth() == 0) throw new ArgumentException($"element type {elementType.Name()} has no fixed size");
        long needed = elementType.ByteCount(elements);
        if (byteLength is long given && given != needed)
            throw new ArgumentException($"a {elementType.Name()}[{string.Join(",", shape.ToArray())}] tensor needs {needed} bytes, the data has {given}");
    }

    /// <summary>Keeps managed memory pinned for a value; if the value is never disposed, the finalizer unpins it
    /// (ordinary finalizers run before SafeHandle ones, and ORT's ReleaseValue never reads the buffer).</summary>
    private sealed class ManagedPin(MemoryHandle pin) : IDisposable
    {
        private MemoryHandle _pin = pin;

        ~ManagedPin() => _pin.Dispose();

        public void Dispose()
        {
            _pin.Dispose();
            _pin = default;
            GC.SuppressFinalize(this);
        }
    }

    internal static DataType ElementTypeOf<T>() where T : unmanaged =>
        typeof(T) == typeof(float) ? DataType.Float
        : typeof(T) == typeof(Half) ? DataType.Float16
        : typeof(T) == typeof(BFloat16) ? DataType.BFloat16
        : typeof(T) == typeof(double) ? DataType.Double
        : typeof(T) == typeof(sbyte) ? DataType.Int8
        : typeof(T) == typeof(byte) ? DataType.UInt8
        : typeof(T) == typeof(short) ? DataType.Int16
        : typeof(T) == typeof(ushort) ? DataType.UInt16
        : typeof(T) == typeof(int) ? DataType.Int32
        : typeof(T) == typeof(uint) ? DataType.UInt32
        : typeof(T) == typeof(long) ? DataType.Int64
        : typeof(T) == typeof(ulong) ? DataType.UInt64
        : typeof(T) == typeof(bool) ? DataType.Bool
        : throw new ArgumentException($"{typeof(T).Name} is not a tensor element type; pass the element type explicitly");
}
