using System.Runtime.InteropServices;
using Ort = Microsoft.ML.OnnxRuntime;

namespace OnnxMoe.Runtime;

/// <summary>
/// Chooses the native ONNX Runtime library the official binding (Microsoft.ML.OnnxRuntime.Managed) uses:
/// the one NuGet placed beside our binaries, or the file named by <c>ONNXMOE_ORT_LIBRARY</c>, whose version
/// must match the binding's (major.minor): the binding asks the library for its own C API version and an
/// older library cannot serve it. Runs once, before the binding's first native call.
/// </summary>
internal static unsafe class OrtLibrary
{
    public const string PathVariable = "ONNXMOE_ORT_LIBRARY";

    /// <summary>Version of the managed binding (the Microsoft.ML.OnnxRuntime.Managed package), e.g. "1.31.0".</summary>
    public static string BindingVersion { get; } = ReadBindingVersion();

    /// <summary>Installs the override when <c>ONNXMOE_ORT_LIBRARY</c> is set; returns its full path, or null for NuGet's library.</summary>
    public static string? ApplyOverride()
    {
        string? requested = Environment.GetEnvironmentVariable(PathVariable);
        if (string.IsNullOrEmpty(requested)) return null;
        string path = ResolveOverride(requested);
        IntPtr handle;
        try
        {
            handle = NativeLibrary.Load(path);
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
        {
            throw new OrtLibraryException($"{PathVariable}={requested}: cannot load it: {OneLine(e.Message)}", e);
        }
        string version = ReadLibraryVersion(handle, path);
        CheckVersion(version, $"{PathVariable}={requested}");
        Ort.OrtEnv.DisableDllImportResolver = true;
        NativeLibrary.SetDllImportResolver(typeof(Ort.InferenceSession).Assembly,
            (name, _, _) => name is "onnxruntime" or "libonnxruntime" or "libonnxruntime.so" ? handle : IntPtr.Zero);
        return path;
    }

    /// <summary>The full path of an override; a missing file is one clear error.</summary>
    internal static string ResolveOverride(string requested)
    {
        if (!File.Exists(requested))
            throw new OrtLibraryException($"{PathVariable}={requested} names no file; point it at a libonnxruntime shared library of ONNX Runtime " +
                $"{MajorMinor(BindingVersion)}.x or unset it to use the one NuGet provides");
        return Path.GetFullPath(requested);
    }

    /// <summary>Refuses a library whose major.minor differs from the binding's.</summary>
    internal static void CheckVersion(string libraryVersion, string what)
    {
        if (MajorMinor(libraryVersion) != MajorMinor(BindingVersion))
            throw new OrtLibraryException($"{what} is ONNX Runtime {libraryVersion}, but onnxmoe binds ONNX Runtime {BindingVersion} " +
                $"(Microsoft.ML.OnnxRuntime.Managed); use a {MajorMinor(BindingVersion)}.x library or unset {PathVariable}");
    }

    /// <summary>Path of the loaded libonnxruntime, read from /proc/self/maps (null where that cannot be read).</summary>
    public static string? LoadedPath()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                int slash = line.IndexOf('/');
                if (slash < 0) continue;
                string file = line[slash..];
                if (Path.GetFileName(file).StartsWith("libonnxruntime.so", StringComparison.Ordinal)) return file;
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    private static string ReadLibraryVersion(IntPtr handle, string path)
    {
        if (!NativeLibrary.TryGetExport(handle, "OrtGetApiBase", out var getApiBase))
            throw new OrtLibraryException($"{path} is not an ONNX Runtime library: it exports no OrtGetApiBase");
        // OrtApiBase: { const OrtApi* (*GetApi)(uint32_t); const char* (*GetVersionString)(void); }
        var apiBase = ((delegate* unmanaged<IntPtr*>)getApiBase)();
        var getVersion = (delegate* unmanaged<byte*>)apiBase[1];
        return Marshal.PtrToStringUTF8((IntPtr)getVersion()) ?? "";
    }

    private static string ReadBindingVersion()
    {
        var version = typeof(Ort.InferenceSession).Assembly.GetName().Version;
        return version is null ? "?" : $"{version.Major}.{version.Minor}.{Math.Max(0, version.Build)}";
    }

    internal static string MajorMinor(string version)
    {
        var parts = version.Split('.');
        return parts.Length >= 2 ? $"{parts[0]}.{parts[1]}" : version;
    }

    internal static string OneLine(string text) => string.Join(" ", text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}
