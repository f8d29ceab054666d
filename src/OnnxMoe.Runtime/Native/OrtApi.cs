using System.Runtime.InteropServices;
using System.Text;

namespace OnnxMoe.Runtime.Native;

/// <summary>Zero-based positions in the OrtApi function table (onnxruntime_c_api.h order; entries are only appended).</summary>
internal static class Slot
{
    public const int GetErrorCode = 1;
    public const int GetErrorMessage = 2;
    public const int CreateEnv = 3;
    public const int CreateSession = 7;
    public const int Run = 9;
    public const int CreateSessionOptions = 10;
    public const int SetSessionGraphOptimizationLevel = 23;
    public const int SetIntraOpNumThreads = 24;
    public const int SetInterOpNumThreads = 25;
    public const int SessionGetInputCount = 30;
    public const int SessionGetOutputCount = 31;
    public const int SessionGetInputTypeInfo = 33;
    public const int SessionGetOutputTypeInfo = 34;
    public const int SessionGetInputName = 36;
    public const int SessionGetOutputName = 37;
    public const int CreateRunOptions = 39;
    public const int RunOptionsSetTerminate = 46;
    public const int CreateTensorAsOrtValue = 48;
    public const int CreateTensorWithDataAsOrtValue = 49;
    public const int GetTensorMutableData = 51;
    public const int FillStringTensor = 52;
    public const int GetStringTensorDataLength = 53;
    public const int GetStringTensorContent = 54;
    public const int CastTypeInfoToTensorInfo = 55;
    public const int GetOnnxTypeFromTypeInfo = 56;
    public const int GetTensorElementType = 60;
    public const int GetDimensionsCount = 61;
    public const int GetDimensions = 62;
    public const int GetSymbolicDimensions = 63;
    public const int GetTensorTypeAndShape = 65;
    public const int GetValueType = 67;
    public const int CreateCpuMemoryInfo = 69;
    public const int AllocatorFree = 76;
    public const int GetAllocatorWithDefaultOptions = 78;
    public const int ReleaseEnv = 92;
    public const int ReleaseStatus = 93;
    public const int ReleaseMemoryInfo = 94;
    public const int ReleaseSession = 95;
    public const int ReleaseValue = 96;
    public const int ReleaseRunOptions = 97;
    public const int ReleaseTypeInfo = 98;
    public const int ReleaseTensorTypeAndShapeInfo = 99;
    public const int ReleaseSessionOptions = 100;
    public const int GetAvailableProviders = 125;
    public const int ReleaseAvailableProviders = 126;
    public const int AddSessionConfigEntry = 130;
    public const int SessionOptionsAppendExecutionProvider_CUDA_V2 = 204;
    public const int CreateCUDAProviderOptions = 205;
    public const int UpdateCUDAProviderOptions = 206;
    public const int ReleaseCUDAProviderOptions = 208;
}

/// <summary>
/// Thin typed calls through the OrtApi table. Every status-returning call goes through
/// <see cref="ThrowIfError"/>; handles passed in are kept alive for the duration of the call.
/// </summary>
internal static unsafe class OrtApi
{
    private static void* Fn(int slot) => OrtLibrary.Table[slot];

    /// <summary>Throws <see cref="OrtException"/> with ORT's code and message if <paramref name="status"/> is not NULL; always frees the status.</summary>
    public static void ThrowIfError(IntPtr status)
    {
        if (status == IntPtr.Zero) return;
        int code = ((delegate* unmanaged<IntPtr, int>)Fn(Slot.GetErrorCode))(status);
        string message = Marshal.PtrToStringUTF8(((delegate* unmanaged<IntPtr, IntPtr>)Fn(Slot.GetErrorMessage))(status))?.TrimEnd() ?? "";
        ((delegate* unmanaged<IntPtr, void>)Fn(Slot.ReleaseStatus))(status);
        throw new OrtException((OrtErrorCode)code, message);
    }

    /// <summary>Null-terminated UTF-8 copy of <paramref name="s"/> (pin it with <c>fixed</c>).</summary>
    public static byte[] Utf8(string s)
    {
        var bytes = new byte[Encoding.UTF8.GetByteCount(s) + 1];
        Encoding.UTF8.GetBytes(s, bytes);
        return bytes;
    }

    public static void Release(int slot, IntPtr handle) => ((delegate* unmanaged<IntPtr, void>)Fn(slot))(handle);

    // Environment and options

    public static OrtEnvHandle CreateEnv(int logLevel, string logId)
    {
        IntPtr env;
        fixed (byte* id = Utf8(logId))
            ThrowIfError(((delegate* unmanaged<int, byte*, IntPtr*, IntPtr>)Fn(Slot.CreateEnv))(logLevel, id, &env));
        return new OrtEnvHandle(env);
    }

    public static OrtMemoryInfoHandle CreateCpuMemoryInfo(int allocatorType, int memType)
    {
        IntPtr info;
        ThrowIfError(((delegate* unmanaged<int, int, IntPtr*, IntPtr>)Fn(Slot.CreateCpuMemoryInfo))(allocatorType, memType, &info));
        return new OrtMemoryInfoHandle(info);
    }

    /// <summary>ORT's default CPU allocator; owned by ORT, never released.</summary>
    public static IntPtr GetDefaultAllocator()
    {
        IntPtr allocator;
        ThrowIfError(((delegate* unmanaged<IntPtr*, IntPtr>)Fn(Slot.GetAllocatorWithDefaultOptions))(&allocator));
        return allocator;
    }

    public static void AllocatorFree(IntPtr allocator, IntPtr p) =>
        ThrowIfError(((delegate* unmanaged<IntPtr, IntPtr, IntPtr>)Fn(Slot.AllocatorFree))(allocator, p));

    public static string[] GetAvailableProviders()
    {
        IntPtr* names;
        int count;
        ThrowIfError(((delegate* unmanaged<IntPtr**, int*, IntPtr>)Fn(Slot.GetAvailableProviders))(&names, &count));
        var result = new string[count];
        for (int i = 0; i < count; i++) result[i] = Marshal.PtrToStringUTF8(names[i]) ?? "";
        ThrowIfError(((delegate* unmanaged<IntPtr*, int, IntPtr>)Fn(Slot.ReleaseAvailableProviders))(names, count));
        return result;
    }

    public static OrtSessionOptionsHandle CreateSessionOptions()
    {
        IntPtr options;
        ThrowIfError(((delegate* unmanaged<IntPtr*, IntPtr>)Fn(Slot.CreateSessionOptions))(&options));
        return new OrtSessionOptionsHandle(options);
    }

    public static void SetGraphOptimizationLevel(OrtSessionOptionsHandle options, int level)
    {
        ThrowIfError(((delegate* unmanaged<IntPtr, int, IntPtr>)Fn(Slot.SetSessionGraphOptimizationLevel))(options.DangerousGetHandle(), level));
        GC.KeepAlive(options);
    }

    public static void SetIntraOpNumThreads(OrtSessionOptionsHandle options, int threads)
    {
        ThrowIfError(((delegate* unmanaged<IntPtr, int, IntPtr>)Fn(Slot.SetIntraOpNumThreads))(options.DangerousGetHandle(), threads));
        GC.KeepAlive(options);
    }

    public static void SetInterOpNumThreads(OrtSessionOptionsHandle options, int threads)
    {
        ThrowIfError(((delegate* unmanaged<IntPtr, int, IntPtr>)Fn(Slot.SetInterOpNumThreads))(options.DangerousGetHandle(), threads));
        GC.KeepAlive(options);
    }

    public static void AddSessionConfigEntry(OrtSessionOptionsHandle options, string key, string value)
    {
        fixed (byte* k = Utf8(key))
        fixed (byte* v = Utf8(value))
            ThrowIfError(((delegate* unmanaged<IntPtr, byte*, byte*, IntPtr>)Fn(Slot.AddSessionConfigEntry))(options.DangerousGetHandle(), k, v));
        GC.KeepAlive(options);
    }

    public static OrtCudaProviderOptionsHandle CreateCudaProviderOptions()
    {
        IntPtr cuda;
        ThrowIfError(((delegate* unmanaged<IntPtr*, IntPtr>)Fn(Slot.CreateCUDAProviderOptions))(&cuda));
        return new OrtCudaProviderOptionsHandle(cuda);
    }

    public static void UpdateCudaProviderOptions(OrtCudaProviderOptionsHandle cuda, IReadOnlyList<KeyValuePair<string, string>> entries)
    {
        using var keys = new PinnedCStrings(entries.Select(e => Utf8(e.Key)));
        using var values = new PinnedCStrings(entries.Select(e => Utf8(e.Value)));
        ThrowIfError(((delegate* unmanaged<IntPtr, IntPtr*, IntPtr*, nuint, IntPtr>)Fn(Slot.UpdateCUDAProviderOptions))(
            cuda.DangerousGetHandle(), keys.Pointers, values.Pointers, (nuint)entries.Count));
        GC.KeepAlive(cuda);
    }

    public static void AppendCudaProvider(OrtSessionOptionsHandle options, OrtCudaProviderOptionsHandle cuda)
    {
        ThrowIfError(((delegate* unmanaged<IntPtr, IntPtr, IntPtr>)Fn(Slot.SessionOptionsAppendExecutionProvider_CUDA_V2))(
            options.DangerousGetHandle(), cuda.DangerousGetHandle()));
        GC.KeepAlive(options);
        GC.KeepAlive(cuda);
    }

    public static OrtRunOptionsHandle CreateRunOptions()
    {
        IntPtr runOptions;
        ThrowIfError(((delegate* unmanaged<IntPtr*, IntPtr>)Fn(Slot.CreateRunOptions))(&runOptions));
        return new OrtRunOptionsHandle(runOptions);
    }

    public static void RunOptionsSetTerminate(OrtRunOptionsHandle runOptions)
    {
        ThrowIfError(((delegate* unmanaged<IntPtr, IntPtr>)Fn(Slot.RunOptionsSetTerminate))(runOptions.DangerousGetHandle()));
        GC.KeepAlive(runOptions);
    }

    // Session

    public static OrtSessionHandle CreateSession(OrtEnvHandle env, string modelPath, OrtSessionOptionsHandle options)
    {
        IntPtr session;
        fixed (byte* path = Utf8(modelPath))
            ThrowIfError(((delegate* unmanaged<IntPtr, byte*, IntPtr, IntPtr*, IntPtr>)Fn(Slot.CreateSession))(
                env.DangerousGetHandle(), path, options.DangerousGetHandle(), &session));
        GC.KeepAlive(env);
        GC.KeepAlive(options);
        return new OrtSessionHandle(session);
    }

    public static int SessionGetCount(OrtSessionHandle session, bool outputs)
    {
        nuint count;
        ThrowIfError(((delegate* unmanaged<IntPtr, nuint*, IntPtr>)Fn(outputs ? Slot.SessionGetOutputCount : Slot.SessionGetInputCount))(
            session.DangerousGetHandle(), &count));
        GC.KeepAlive(session);
        return checked((int)count);
    }

    public static string SessionGetName(OrtSessionHandle session, bool output, int index)
    {
        IntPtr allocator = GetDefaultAllocator();
        IntPtr name;
        ThrowIfError(((delegate* unmanaged<IntPtr, nuint, IntPtr, IntPtr*, IntPtr>)Fn(output ? Slot.SessionGetOutputName : Slot.SessionGetInputName))(
            session.DangerousGetHandle(), (nuint)index, allocator, &name));
        GC.KeepAlive(session);
        try
        {
            return Marshal.PtrToStringUTF8(name) ?? "";
        }
        finally
        {
            AllocatorFree(allocator, name);
        }
    }

    public static OrtTypeInfoHandle SessionGetTypeInfo(OrtSessionHandle session, bool output, int index)
    {
        IntPtr info;
        ThrowIfError(((delegate* unmanaged<IntPtr, nuint, IntPtr*, IntPtr>)Fn(output ? Slot.SessionGetOutputTypeInfo : Slot.SessionGetInputTypeInfo))(
            session.DangerousGetHandle(), (nuint)index, &info));
        GC.KeepAlive(session);
        return new OrtTypeInfoHandle(info);
    }

    /// <summary>Runs the session; <paramref name="outputs"/> receives new OrtValues the caller must release.</summary>
    public static void Run(OrtSessionHandle session, OrtRunOptionsHandle? runOptions, IntPtr* inputNames, IntPtr* inputs, int inputCount,
        IntPtr* outputNames, int outputCount, IntPtr* outputs)
    {
        ThrowIfError(((delegate* unmanaged<IntPtr, IntPtr, IntPtr*, IntPtr*, nuint, IntPtr*, nuint, IntPtr*, IntPtr>)Fn(Slot.Run))(
            session.DangerousGetHandle(), runOptions?.DangerousGetHandle() ?? IntPtr.Zero,
            inputNames, inputs, (nuint)inputCount, outputNames, (nuint)outputCount, outputs));
        GC.KeepAlive(session);
        GC.KeepAlive(runOptions);
    }

    // Type information

    public static int GetOnnxType(OrtTypeInfoHandle typeInfo)
    {
        int type;
        ThrowIfError(((delegate* unmanaged<IntPtr, int*, IntPtr>)Fn(Slot.GetOnnxTypeFromTypeInfo))(typeInfo.DangerousGetHandle(), &type));
        GC.KeepAlive(typeInfo);
        return type;
    }

    /// <summary>Tensor info inside <paramref name="typeInfo"/> (owned by it, not released), or NULL for non-tensors.</summary>
    public static IntPtr CastToTensorInfo(OrtTypeInfoHandle typeInfo)
    {
        IntPtr info;
        ThrowIfError(((delegate* unmanaged<IntPtr, IntPtr*, IntPtr>)Fn(Slot.CastTypeInfoToTensorInfo))(typeInfo.DangerousGetHandle(), &info));
        GC.KeepAlive(typeInfo);
        return info;
    }

    public static int GetElementType(IntPtr tensorInfo)
    {
        int type;
        ThrowIfError(((delegate* unmanaged<IntPtr, int*, IntPtr>)Fn(Slot.GetTensorElementType))(tensorInfo, &type));
        return type;
    }

    public static long[] GetDimensions(IntPtr tensorInfo)
    {
        nuint rank;
        ThrowIfError(((delegate* unmanaged<IntPtr, nuint*, IntPtr>)Fn(Slot.GetDimensionsCount))(tensorInfo, &rank));
        var dims = new long[(int)rank];
        fixed (long* d = dims)
            ThrowIfError(((delegate* unmanaged<IntPtr, long*, nuint, IntPtr>)Fn(Slot.GetDimensions))(tensorInfo, d, rank));
        return dims;
    }

    /// <summary>Per-dimension symbolic names ("" where a dimension has none).</summary>
    public static string[] GetSymbolicDimensions(IntPtr tensorInfo, int rank)
    {
        var pointers = new IntPtr[rank];
        fixed (IntPtr* p = pointers)
            ThrowIfError(((delegate* unmanaged<IntPtr, IntPtr*, nuint, IntPtr>)Fn(Slot.GetSymbolicDimensions))(tensorInfo, p, (nuint)rank));
        return Array.ConvertAll(pointers, p => p == IntPtr.Zero ? "" : Marshal.PtrToStringUTF8(p) ?? "");
    }

    // Values

    public static OrtValueHandle CreateTensorWithData(OrtMemoryInfoHandle memoryInfo, void* data, long byteLength, ReadOnlySpan<long> shape, int elementType)
    {
        IntPtr value;
        fixed (long* s = shape)
            ThrowIfError(((delegate* unmanaged<IntPtr, void*, nuint, long*, nuint, int, IntPtr*, IntPtr>)Fn(Slot.CreateTensorWithDataAsOrtValue))(
                memoryInfo.DangerousGetHandle(), data, (nuint)byteLength, s, (nuint)shape.Length, elementType, &value));
        GC.KeepAlive(memoryInfo);
        return new OrtValueHandle(value);
    }

    public static OrtValueHandle CreateTensor(ReadOnlySpan<long> shape, int elementType)
    {
        IntPtr allocator = GetDefaultAllocator();
        IntPtr value;
        fixed (long* s = shape)
            ThrowIfError(((delegate* unmanaged<IntPtr, long*, nuint, int, IntPtr*, IntPtr>)Fn(Slot.CreateTensorAsOrtValue))(
                allocator, s, (nuint)shape.Length, elementType, &value));
        return new OrtValueHandle(value);
    }

    public static int GetValueType(OrtValueHandle value)
    {
        int type;
        ThrowIfError(((delegate* unmanaged<IntPtr, int*, IntPtr>)Fn(Slot.GetValueType))(value.DangerousGetHandle(), &type));
        GC.KeepAlive(value);
        return type;
    }

    public static OrtTensorTypeAndShapeInfoHandle GetTensorTypeAndShape(OrtValueHandle value)
    {
        IntPtr info;
        ThrowIfError(((delegate* unmanaged<IntPtr, IntPtr*, IntPtr>)Fn(Slot.GetTensorTypeAndShape))(value.DangerousGetHandle(), &info));
        GC.KeepAlive(value);
        return new OrtTensorTypeAndShapeInfoHandle(info);
    }

    /// <summary>Address of the tensor's elements; valid while the value lives.</summary>
    public static IntPtr GetTensorMutableData(OrtValueHandle value)
    {
        IntPtr data;
        ThrowIfError(((delegate* unmanaged<IntPtr, IntPtr*, IntPtr>)Fn(Slot.GetTensorMutableData))(value.DangerousGetHandle(), &data));
        GC.KeepAlive(value);
        return data;
    }

    public static void FillStringTensor(OrtValueHandle value, IReadOnlyList<byte[]> elements)
    {
        var terminated = new byte[elements.Count][];
        for (int i = 0; i < elements.Count; i++)
        {
            if (Array.IndexOf(elements[i], (byte)0) >= 0)
                throw new ArgumentException($"string tensor element {i} contains a NUL byte, which ORT's C API cannot pass");
            terminated[i] = [.. elements[i], 0];
        }
        using var strings = new PinnedCStrings(terminated);
        ThrowIfError(((delegate* unmanaged<IntPtr, IntPtr*, nuint, IntPtr>)Fn(Slot.FillStringTensor))(
            value.DangerousGetHandle(), strings.Pointers, (nuint)elements.Count));
        GC.KeepAlive(value);
    }

    public static byte[][] GetStringTensorContent(OrtValueHandle value, int count)
    {
        nuint total;
        ThrowIfError(((delegate* unmanaged<IntPtr, nuint*, IntPtr>)Fn(Slot.GetStringTensorDataLength))(value.DangerousGetHandle(), &total));
        var bytes = new byte[(int)total];
        var offsets = new nuint[count];
        fixed (byte* b = bytes)
        fixed (nuint* o = offsets)
            ThrowIfError(((delegate* unmanaged<IntPtr, byte*, nuint, nuint*, nuint, IntPtr>)Fn(Slot.GetStringTensorContent))(
                value.DangerousGetHandle(), b, total, o, (nuint)count));
        GC.KeepAlive(value);
        var result = new byte[count][];
        for (int i = 0; i < count; i++)
        {
            int start = (int)offsets[i], end = i + 1 < count ? (int)offsets[i + 1] : bytes.Length;
            result[i] = bytes[start..end];
        }
        return result;
    }
}

/// <summary>Pinned NUL-terminated byte strings exposed as a <c>const char**</c> array until disposed.</summary>
internal sealed unsafe class PinnedCStrings : IDisposable
{
    private readonly GCHandle[] _strings;
    private GCHandle _array;

    public PinnedCStrings(IEnumerable<byte[]> terminatedStrings)
    {
        var arrays = terminatedStrings.ToArray();
        _strings = new GCHandle[arrays.Length];
        var pointers = new IntPtr[arrays.Length];
        for (int i = 0; i < arrays.Length; i++)
        {
            _strings[i] = GCHandle.Alloc(arrays[i], GCHandleType.Pinned);
            pointers[i] = _strings[i].AddrOfPinnedObject();
        }
        _array = GCHandle.Alloc(pointers, GCHandleType.Pinned);
    }

    public IntPtr* Pointers => (IntPtr*)_array.AddrOfPinnedObject();

    public void Dispose()
    {
        foreach (var h in _strings) if (h.IsAllocated) h.Free();
        if (_array.IsAllocated) _array.Free();
    }
}
