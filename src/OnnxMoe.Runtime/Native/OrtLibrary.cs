using System.Runtime.InteropServices;

namespace OnnxMoe.Runtime.Native;

/// <summary>
/// The one place that finds and loads the ONNX Runtime shared library and fetches its C API table.
/// Order: the file named by <c>ONNXMOE_ORT_LIBRARY</c>, else <c>libonnxruntime.so.1</c> next to our
/// binaries (placed there by the build). Loaded by full path; the library stays loaded for the process.
/// </summary>
internal static unsafe class OrtLibrary
{
    public const string PathVariable = "ONNXMOE_ORT_LIBRARY";
    public const string BundledFileName = "libonnxruntime.so.1";
    /// <summary>C API version requested from GetApi: the one ORT 1.23 introduced; newer libraries still serve it.</summary>
    public const uint ApiVersion = 23;

    private static readonly Lazy<Loaded> s_loaded = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

    public static string Path => s_loaded.Value.Path;
    public static string Version => s_loaded.Value.Version;
    /// <summary>OrtApi function-pointer table (index by <see cref="Slot"/>); lives as long as the process.</summary>
    public static void** Table => s_loaded.Value.Table;

    private sealed class Loaded(string path, string version, void** table)
    {
        public readonly string Path = path;
        public readonly string Version = version;
        public readonly void** Table = table;
    }

    private static Loaded Load()
    {
        string path = Resolve();
        IntPtr handle;
        try
        {
            handle = NativeLibrary.Load(path);
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
        {
            throw new OrtLibraryException($"cannot load the ONNX Runtime library {path}: {e.Message}", e);
        }

        if (!NativeLibrary.TryGetExport(handle, "OrtGetApiBase", out var getApiBase))
            throw new OrtLibraryException($"{path} is not an ONNX Runtime library: it exports no OrtGetApiBase");

        // OrtApiBase: { const OrtApi* (*GetApi)(uint32_t); const char* (*GetVersionString)(void); }
        var apiBase = ((delegate* unmanaged<IntPtr*>)getApiBase)();
        var getApi = (delegate* unmanaged<uint, void**>)apiBase[0];
        var getVersion = (delegate* unmanaged<byte*>)apiBase[1];
        string version = Marshal.PtrToStringUTF8((IntPtr)getVersion()) ?? "";
        void** table = getApi(ApiVersion);
        if (table == null)
            throw new OrtLibraryException(
                $"ONNX Runtime {version} at {path} does not provide C API version {ApiVersion}; onnxmoe needs ONNX Runtime 1.{ApiVersion} or newer");
        return new Loaded(path, version, table);
    }

    private static string Resolve()
    {
        var candidates = new List<string> { System.IO.Path.Combine(AppContext.BaseDirectory, BundledFileName) };
        string? assemblyDir = System.IO.Path.GetDirectoryName(typeof(OrtLibrary).Assembly.Location);
        if (!string.IsNullOrEmpty(assemblyDir)) candidates.Add(System.IO.Path.Combine(assemblyDir, BundledFileName));
        return Resolve(Environment.GetEnvironmentVariable(PathVariable), candidates);
    }

    /// <summary>The library to load: <paramref name="fromEnvironment"/> when set, else the first existing candidate.</summary>
    internal static string Resolve(string? fromEnvironment, IReadOnlyList<string> candidates)
    {
        if (!string.IsNullOrEmpty(fromEnvironment))
        {
            if (!File.Exists(fromEnvironment))
                throw new OrtLibraryException($"{PathVariable}={fromEnvironment} names no file; point it at a libonnxruntime shared library or unset it to use the bundled {BundledFileName}");
            return System.IO.Path.GetFullPath(fromEnvironment);
        }
        foreach (var c in candidates)
            if (File.Exists(c)) return c;

        throw new OrtLibraryException(
            $"ONNX Runtime library not found (looked for {string.Join(", ", candidates.Distinct())}). Either set {PathVariable} to the path of a " +
            $"libonnxruntime shared library (for example the lib/libonnxruntime.so of a CUDA build), or build onnxmoe with `dotnet build`, " +
            $"which fetches {BundledFileName} of the npm package onnxruntime-node 1.30.0 into ~/.cache/onnxmoe/ort and copies it next to the binaries.");
    }
}
