using Ort = Microsoft.ML.OnnxRuntime;

namespace OnnxMoe.Runtime;

/// <summary>
/// The loaded ONNX Runtime: version, where the native library came from, and the process-wide environment
/// (log level error unless ONNXMOE_ORT_LOG_LEVEL says otherwise) that every session is created in. First use
/// applies <c>ONNXMOE_ORT_LIBRARY</c>, creates the environment and throws <see cref="OrtLibraryException"/> when
/// the library is missing or its version does not match the binding.
/// </summary>
public static class OrtRuntime
{
    /// <summary>Environment variable that, when set, names the libonnxruntime to load instead of NuGet's.</summary>
    public const string LibraryPathVariable = OrtLibrary.PathVariable;

    /// <summary>Environment variable choosing ORT's log level: verbose, info, warning, error (default) or fatal.</summary>
    public const string LogLevelVariable = "ONNXMOE_ORT_LOG_LEVEL";

    private static readonly Lazy<Loaded> s_loaded = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

    private sealed record Loaded(Ort.OrtEnv Env, string Version, string LibraryPath, string[] Providers);

    /// <summary>ORT's version string, e.g. "1.31.0".</summary>
    public static string Version => s_loaded.Value.Version;

    /// <summary>Version of the managed binding onnxmoe was built against (Microsoft.ML.OnnxRuntime.Managed).</summary>
    public static string BindingVersion => OrtLibrary.BindingVersion;

    /// <summary>Full path of the loaded native library.</summary>
    public static string LibraryPath => s_loaded.Value.LibraryPath;

    /// <summary>Execution providers compiled into the loaded library (e.g. "CPUExecutionProvider").
    /// A provider listed here may still fail to load its shared library when a session asks for it.</summary>
    public static IReadOnlyList<string> AvailableProviders => s_loaded.Value.Providers;

    /// <summary>Makes sure the library is loaded and the environment exists (idempotent).</summary>
    public static void EnsureInitialized() => _ = s_loaded.Value;

    // ORT's warnings (legacy opsets, optimizer notes) drown our own output; errors still reach the user as exceptions.
    internal static Ort.OrtLoggingLevel LogLevel => Environment.GetEnvironmentVariable(LogLevelVariable)?.Trim().ToLowerInvariant() switch
    {
        "verbose" => Ort.OrtLoggingLevel.ORT_LOGGING_LEVEL_VERBOSE,
        "info" => Ort.OrtLoggingLevel.ORT_LOGGING_LEVEL_INFO,
        "warning" => Ort.OrtLoggingLevel.ORT_LOGGING_LEVEL_WARNING,
        "fatal" => Ort.OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL,
        _ => Ort.OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
    };

    /// <summary>ORT's own switch (1.29+ on Linux): telemetry, including a database under ~/.cache/Microsoft, stays off unless the user set it.</summary>
    public const string TelemetryVariable = "ORT_DISABLE_TELEMETRY";

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "setenv")]
    private static extern int SetNativeEnvironment(string name, string value, int overwrite);

    private static Loaded Load()
    {
        // A compiler run as a build step writes nothing outside its output: ORT reads the switch with getenv, which
        // Environment.SetEnvironmentVariable does not reach on Unix, hence setenv (without overwriting the user's choice).
        if (Environment.GetEnvironmentVariable(TelemetryVariable) is null && OperatingSystem.IsLinux())
            SetNativeEnvironment(TelemetryVariable, "1", overwrite: 0);
        string? overridePath = OrtLibrary.ApplyOverride();
        Ort.OrtEnv env;
        try
        {
            var options = new Ort.EnvironmentCreationOptions { logId = "onnxmoe", logLevel = LogLevel };
            env = Ort.OrtEnv.CreateInstanceWithOptions(ref options);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or TypeInitializationException or Ort.OnnxRuntimeException)
        {
            var inner = e is TypeInitializationException { InnerException: { } i } ? i : e;
            throw new OrtLibraryException($"cannot load ONNX Runtime {OrtLibrary.BindingVersion}" + (overridePath != null ? $" from {overridePath}" : "") +
                $": {OrtLibrary.OneLine(inner.Message)} (the native library comes from the NuGet package Microsoft.ML.OnnxRuntime beside the binaries; " +
                $"rebuild onnxmoe, or set {LibraryPathVariable} to a libonnxruntime of the same version)", e);
        }
        if (Environment.GetEnvironmentVariable(TelemetryVariable) != "0") env.DisableTelemetryEvents();
        string version = env.GetVersionString();
        OrtLibrary.CheckVersion(version, overridePath != null ? $"{LibraryPathVariable}={overridePath}" : "the loaded libonnxruntime");
        string path = overridePath ?? OrtLibrary.LoadedPath() ?? "libonnxruntime.so (path unknown)";
        return new Loaded(env, version, path, env.GetAvailableProviders());
    }
}
