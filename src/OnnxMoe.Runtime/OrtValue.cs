using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using Ort = Microsoft.ML.OnnxRuntime;

namespace OnnxMoe.Runtime;

/// <summary>
/// An ORT value (a tensor, for everything this wrapper creates), over the binding's
/// <see cref="Ort.OrtValue"/>. Whoever creates it or receives it from <see cref="InferenceSession.Run"/> owns it
/// and must dispose it. A tensor created over managed memory keeps that memory pinned until disposal, and reads
/// and writes go straight to it (no copy).
/// </summary>
public sealed class OrtValue : IDisposable
{
    private readonly Ort.OrtValue _value;
    private readonly ManagedPin? _pin;
    private bool _disposed;
    private long[]? _shape;
    private DataType? _elementType;

    private OrtValue(Ort.OrtValue value, ManagedPin? pin = null)
    {
        _value = value;
        _pin = pin;
    }

    /// <summary>Takes ownership of a value ORT produced.</summary>
    internal static OrtValue Own(Ort.OrtValue value) => new(value);

    /// <summary>The binding's value (for calls into Microsoft.ML.OnnxRuntime); stays owned by this object.</summary>
    internal Ort.OrtValue Native
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _value;
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
            OrtRuntime.EnsureInitialized();
            var value = Ort.OrtValue.CreateTensorValueWithData(Ort.OrtMemoryInfo.DefaultInstance, (Ort.Tensors.TensorElementType)(int)elementType,
                shape.ToArray(), (IntPtr)pin.Pointer, byteLength);
            return new OrtValue(value, new ManagedPin(pin));
        }
        catch (Ort.OnnxRuntimeException e)
        {
            pin.Dispose();
            throw OrtException.From(e);
        }
        catch
        {
            pin.Dispose();
            throw;
        }
    }

    /// <summary>Tensor over native memory the caller keeps alive and unchanged until this value (and any session using it) is disposed.</summary>
    public static OrtValue CreateOverNative(IntPtr data, long byteLength, ReadOnlySpan<long> shape, DataType elementType)
    {
        CheckLayout(elementType, shape, byteLength);
        if (byteLength == 0) return Allocate(elementType, shape);
        OrtRuntime.EnsureInitialized();
        try
        {
            return new OrtValue(Ort.OrtValue.CreateTensorValueWithData(Ort.OrtMemoryInfo.DefaultInstance, (Ort.Tensors.TensorElementType)(int)elementType,
                shape.ToArray(), data, byteLength));
        }
        catch (Ort.OnnxRuntimeException e)
        {
            throw OrtException.From(e);
        }
    }

    /// <summary>Tensor in memory ORT allocates (contents unspecified); fill it through <see cref="GetSpan{T}"/> or <see cref="GetBytes"/>.</summary>
    public static OrtValue Allocate(DataType elementType, ReadOnlySpan<long> shape)
    {
        if (elementType == DataType.String) throw new ArgumentException("use FromTensor with a StringTensor for string tensors");
        CheckLayout(elementType, shape, byteLength: null);
        OrtRuntime.EnsureInitialized();
        try
        {
            return new OrtValue(Ort.OrtValue.CreateAllocatedTensorValue(Ort.OrtAllocator.DefaultInstance, (Ort.Tensors.TensorElementType)(int)elementType, shape.ToArray()));
        }
        catch (Ort.OnnxRuntimeException e)
        {
            throw OrtException.From(e);
        }
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
            OrtRuntime.EnsureInitialized();
            var value = new OrtValue(Ort.OrtValue.CreateTensorWithEmptyStrings(Ort.OrtAllocator.DefaultInstance, tensor.Shape.ToArray()));
            try
            {
                for (int i = 0; i < strings.Values.Count; i++)
                {
                    if (Array.IndexOf(strings.Values[i], (byte)0) >= 0)
                        throw new ArgumentException($"string tensor element {i} contains a NUL byte, which ORT's C API cannot pass");
                    value._value.StringTensorSetElementAt(strings.Values[i], i);
                }
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

    public OnnxValueKind Kind => (OnnxValueKind)(int)Native.OnnxType;

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
    public Span<T> GetSpan<T>() where T : unmanaged
    {
        var type = ElementType;
        if (type == DataType.String || type.BitWidth() != Unsafe.SizeOf<T>() * 8)
            throw new InvalidOperationException($"cannot view a {type.Name()} tensor as {typeof(T).Name}");
        return MemoryMarshal.Cast<byte, T>(GetBytes());
    }

    /// <summary>The tensor's raw bytes in place (ONNX raw layout; sub-byte types packed), valid until disposal.</summary>
    public Span<byte> GetBytes()
    {
        var type = ElementType;
        if (type == DataType.String) throw new InvalidOperationException("string tensors have no raw byte layout");
        long length = type.ByteCount(ElementCount);
        if (length == 0) return [];
        if (type.BitWidth() < 8)
            throw new NotSupportedException($"raw bytes of a {type.Name()} tensor ORT produced are not reachable through the binding (it has no sub-byte element types)");
        var bytes = Native.GetTensorMutableRawData();
        return bytes.Length == length ? bytes : bytes[..checked((int)length)];
    }

    /// <summary>Copy of the elements into a new managed array.</summary>
    public T[] ToArray<T>() where T : unmanaged => GetSpan<T>().ToArray();

    /// <summary>Copy as an IR tensor (an <see cref="InMemoryTensor"/>, or a <see cref="StringTensor"/> for strings).</summary>
    public Tensor ToTensor()
    {
        var shape = Shape;
        if (ElementType == DataType.String)
                    {
            int count = checked((int)ElementCount);
            var values = new byte[count][];
            for (int i = 0; i < count; i++) values[i] = Native.GetStringElementAsSpan(i).ToArray();
            return new StringTensor(shape, values);
        }
        return new InMemoryTensor(ElementType, shape, GetBytes().ToArray());
    }

    /// <summary>Elements converted to float (f32, f16, bf16 or f64 tensors).</summary>
    public float[] ToFloatArray() => ElementType == DataType.Float ? GetSpan<float>().ToArray() : ToTensor().ToFloatArray();

    public override string ToString() =>
        _disposed ? "OrtValue(disposed)" : $"{ElementType.Name()}[{string.Join(",", Shape)}]";

    /// <summary>Releases the native value, then unpins any managed memory it was created over.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _value.Dispose();
        _pin?.Dispose();
    }

    private void ReadTypeAndShape()
    {
        if (Kind != OnnxValueKind.Tensor) throw new InvalidOperationException($"ORT value is a {Kind}, not a tensor");
        var info = Native.GetTensorTypeAndShape();
        _elementType = (DataType)(int)info.ElementDataType;
        _shape = info.Shape;
    }

    private static long CheckLayout(DataType elementType, ReadOnlySpan<long> shape, long? byteLength)
    {
        long elements = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentException($"tensor dimensions must be >= 0, got [{string.Join(",", shape.ToArray())}]");
            elements = checked(elements * d);
        }
        if (elementType.BitWidth() == 0) throw new ArgumentException($"element type {elementType.Name()} has no fixed size");
        if (elementType.BitWidth() < 8)
            throw new NotSupportedException($"{elementType.Name()} tensors cannot be created through the ONNX Runtime C# binding (it has no sub-byte element types); " +
                "pack them into a uint8 tensor, as MatMulNBits does");
        long needed = elementType.ByteCount(elements);
        if (byteLength is long given && given != needed)
            throw new ArgumentException($"a {elementType.Name()}[{string.Join(",", shape.ToArray())}] tensor needs {needed} bytes, the data has {given}");
        return needed;
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
