using System.Runtime.InteropServices;
using OnnxMoe.Ir.Tensors;
using Ort = Microsoft.ML.OnnxRuntime;

namespace OnnxMoe.Runtime;

/// <summary>The image of one external-data file a model refers to by <paramref name="FileName"/> (its TensorProtos' location).</summary>
public sealed record ExternalDataFile(string FileName, NativeBuffer Data);

/// <summary>
/// Hands in-memory external-data files to ORT (OrtApi::AddExternalInitializersFromFilesInMemory), the one session
/// option the C# binding does not wrap. The function pointer comes from the binding's own public
/// <see cref="Ort.OrtApi"/> table of the library already loaded.
/// </summary>
internal static unsafe class InMemoryExternalData
{
    private static readonly Lazy<Ort.OrtApi> s_api = new(LoadApi, LazyThreadSafetyMode.ExecutionAndPublication);

    public static void Add(Ort.SessionOptions options, IReadOnlyList<ExternalDataFile> files)
    {
        var api = s_api.Value;
        var names = new IntPtr[files.Count];
        var buffers = new IntPtr[files.Count];
        var lengths = new nuint[files.Count];
        try
        {
            for (int i = 0; i < files.Count; i++)
            {
                names[i] = Marshal.StringToCoTaskMemUTF8(files[i].FileName);
                buffers[i] = files[i].Data.Pointer;
                lengths[i] = (nuint)files[i].Data.Length;
            }
            IntPtr status;
            fixed (IntPtr* n = names)
            fixed (IntPtr* b = buffers)
            fixed (nuint* l = lengths)
                status = ((delegate* unmanaged<IntPtr, IntPtr*, IntPtr*, nuint*, nuint, IntPtr>)api.AddExternalInitializersFromFilesInMemory)(
                    options.DangerousGetHandle(), n, b, l, (nuint)files.Count);
            GC.KeepAlive(options);
            if (status != IntPtr.Zero)
            {
                var code = (OrtErrorCode)((delegate* unmanaged<IntPtr, int>)api.GetErrorCode)(status);
                string message = Marshal.PtrToStringUTF8(((delegate* unmanaged<IntPtr, IntPtr>)api.GetErrorMessage)(status)) ?? "";
                ((delegate* unmanaged<IntPtr, void>)api.ReleaseStatus)(status);
                throw new OrtException(code, $"in-memory external data: {message}");
            }
        }
        finally
        {
            foreach (var n in names)
                if (n != IntPtr.Zero) Marshal.FreeCoTaskMem(n);
        }
    }

    private static Ort.OrtApi LoadApi()
    {
        OrtRuntime.EnsureInitialized();
        // dlopen of the loaded library's path returns the handle already mapped.
        var handle = NativeLibrary.Load(OrtRuntime.LibraryPath);
        var getApiBase = NativeLibrary.GetExport(handle, "OrtGetApiBase");
        var apiBase = ((delegate* unmanaged<IntPtr*>)getApiBase)();
        uint version = uint.Parse(OrtLibrary.MajorMinor(OrtRuntime.BindingVersion).Split('.')[1], System.Globalization.CultureInfo.InvariantCulture);
        var table = ((delegate* unmanaged<uint, IntPtr>)apiBase[0])(version);
        if (table == IntPtr.Zero) throw new OrtLibraryException($"ONNX Runtime {OrtRuntime.Version} at {OrtRuntime.LibraryPath} does not serve C API version {version}");
        return Marshal.PtrToStructure<Ort.OrtApi>(table);
    }
}
