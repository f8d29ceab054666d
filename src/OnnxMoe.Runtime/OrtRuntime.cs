using OnnxMoe.Runtime.Native;

namespace OnnxMoe.Runtime;

/// <summary>
/// The loaded ONNX Runtime: version, where the library came from, and the process-wide
/// environment (log level error unless ONNXMOE_ORT_LOG_LEVEL says otherwise) every session is created in. First use loads the library and
/// throws <see cref="OrtLibraryException"/> when it is missing (naming ONNXMOE_ORT_LIBRARY and the build fetch).
/// </summary>
public static class OrtRuntime
{
    /// <summary>Environment variable that, when set, names the libonnxruntime to load instead of the bundled one.</summary>
    public const string LibraryPathVariable = OrtLibrary.PathVariable;

    /// <summary>Environment variable choosing ORT's log level: verbose, info, warning, error (default) or fatal.</summary>
    public const string LogLevelVariable = "ONNXMOE_ORT_LOG_LEVEL";
    private const int OrtArenaAllocator = 1;        // OrtAllocatorType
    private const int OrtMemTypeDefault = 0;        // OrtMemType

    private static readonly Lazy<OrtEnvHandle> s_env =
        new(() => OrtApi.CreateEnv(LogLevelFromEnvironment(), "onnxmoe"), LazyThreadSafetyMode.ExecutionAndPublication);
    private static readonly Lazy<OrtMemoryInfoHandle> s_cpuMemory =
        new(() => OrtApi.CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault), LazyThreadSafetyMode.ExecutionAndPublication);

    // ORT's warnings (legacy opsets, optimizer notes) drown our own output; errors still reach the user as exceptions.
    private static int LogLevelFromEnvironment() => System.Environment.GetEnvironmentVariable(LogLevelVariable)?.Trim().ToLowerInvariant() switch
    {
        "verbose" => 0,
        "info" => 1,
        "warning" => 2,
        "fatal" => 4,
        _ => 3,
    };

    /// <summary>ORT's version string, e.g. "1.30.0".</summary>
    public static string Version => OrtLibrary.Version;

    /// <summary>Full path of the loaded native library.</summary>
    public static string LibraryPath => OrtLibrary.Path;

    /// <summary>C API version requested from the library's OrtGetApiBase.</summary>
    public static int ApiVersion => (int)OrtLibrary.ApiVersion;

    /// <summary>Execution providers compiled into the loaded library (e.g. "CPUExecutionProvider").
    /// A provider listed here may still fail to load its shared library when a session asks for it.</summary>
    public static IReadOnlyList<string> AvailableProviders => OrtApi.GetAvailableProviders();

    /// <summary>Process-wide OrtEnv; lives until the process exits (sessions may outlive any scope).</summary>
    internal static OrtEnvHandle Environment => s_env.Value;

    /// <summary>CPU memory description for tensors over managed memory; lives for the process.</summary>
    internal static OrtMemoryInfoHandle CpuMemoryInfo => s_cpuMemory.Value;
}
