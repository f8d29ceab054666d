using Ort = Microsoft.ML.OnnxRuntime;

namespace OnnxMoe.Runtime;

/// <summary>ORT graph optimization level (GraphOptimizationLevel in onnxruntime_c_api.h).</summary>
public enum GraphOptimizationLevel
{
    Disabled = 0,
    Basic = 1,
    Extended = 2,
    All = 99,
}

/// <summary>Where a session runs its nodes.</summary>
public enum ExecutionDevice
{
    Cpu,
    /// <summary>CUDA execution provider (needs a build with -p:OrtFlavor=gpu or a GPU library via ONNXMOE_ORT_LIBRARY); CPU serves nodes CUDA lacks.</summary>
    Cuda,
}

/// <summary>Settings for creating an <see cref="InferenceSession"/>; a plain object, reusable for many sessions.</summary>
public sealed class SessionConfig
{
    /// <summary>Threads of the intra-op pool; 0 lets ORT choose (one per physical core).</summary>
    public int IntraOpThreads { get; set; }

    /// <summary>Threads of the inter-op pool (used only in parallel execution mode); 0 lets ORT choose.</summary>
    public int InterOpThreads { get; set; }

    public GraphOptimizationLevel OptimizationLevel { get; set; } = GraphOptimizationLevel.All;

    public ExecutionDevice Device { get; set; } = ExecutionDevice.Cpu;

    /// <summary>CUDA device ordinal used when <see cref="Device"/> is <see cref="ExecutionDevice.Cuda"/>.</summary>
    public int CudaDeviceId { get; set; }

    /// <summary>Session config entries (AddSessionConfigEntry), e.g. "session.qdq_matmulnbits_accuracy_level" = "4"; applied in key order.</summary>
    public SortedDictionary<string, string> ConfigEntries { get; } = new(StringComparer.Ordinal);

    /// <summary>Extra CUDA provider options (UpdateCUDAProviderOptions keys such as "gpu_mem_limit"); "device_id" comes from <see cref="CudaDeviceId"/>.</summary>
    public SortedDictionary<string, string> CudaProviderOptions { get; } = new(StringComparer.Ordinal);

    /// <summary>
    /// Path prefix of ORT's profile (chrome-trace JSON with one event per node run); null = no profiling. ORT writes
    /// <c>{prefix}_{date_time}.json</c> when the session's profiling ends (<see cref="InferenceSession.EndProfiling"/>).
    /// </summary>
    public string? ProfilePrefix { get; set; }

    /// <summary>A copy with <paramref name="entries"/> added to (or replacing) the config entries.</summary>
    public SessionConfig With(params (string Key, string Value)[] entries)
    {
        var copy = new SessionConfig
        {
            IntraOpThreads = IntraOpThreads, InterOpThreads = InterOpThreads, OptimizationLevel = OptimizationLevel, Device = Device, CudaDeviceId = CudaDeviceId,
            ProfilePrefix = ProfilePrefix,
        };
        foreach (var (k, v) in ConfigEntries) copy.ConfigEntries[k] = v;
        foreach (var (k, v) in CudaProviderOptions) copy.CudaProviderOptions[k] = v;
        foreach (var (k, v) in entries) copy.ConfigEntries[k] = v;
        return copy;
    }

    /// <summary>Parses a device name as the CLI's <c>--device</c> takes it: "cpu" or "cuda" (case-insensitive).</summary>
    public static ExecutionDevice ParseDevice(string text) => text.Trim().ToLowerInvariant() switch
    {
        "cpu" => ExecutionDevice.Cpu,
        "cuda" => ExecutionDevice.Cuda,
        _ => throw new ArgumentException($"unknown device '{text}': expected cpu or cuda"),
    };

    /// <summary>Builds the binding's session options; the caller owns (and disposes) them.</summary>
    internal Ort.SessionOptions CreateNative()
    {
        if (IntraOpThreads < 0) throw new ArgumentException($"intra-op threads must be >= 0, got {IntraOpThreads}");
        if (InterOpThreads < 0) throw new ArgumentException($"inter-op threads must be >= 0, got {InterOpThreads}");
        OrtRuntime.EnsureInitialized();
        var options = new Ort.SessionOptions();
        try
        {
            options.LogSeverityLevel = OrtRuntime.LogLevel;
            options.GraphOptimizationLevel = (Ort.GraphOptimizationLevel)(int)OptimizationLevel;
            if (IntraOpThreads > 0) options.IntraOpNumThreads = IntraOpThreads;
            if (InterOpThreads > 0) options.InterOpNumThreads = InterOpThreads;
            foreach (var (key, value) in ConfigEntries) options.AddSessionConfigEntry(key, value);
            if (ProfilePrefix is not null)
            {
                // The binding reads the prefix when profiling is switched on, so it is set first.
                options.ProfileOutputPathPrefix = ProfilePrefix;
                options.EnableProfiling = true;
            }
            if (Device == ExecutionDevice.Cuda) AppendCuda(options);
            return options;
        }
        catch (Ort.OnnxRuntimeException e)
        {
            options.Dispose();
            throw OrtException.From(e);
        }
        catch
        {
            options.Dispose();
            throw;
        }
    }

    /// <summary>Adds the CUDA provider, or explains in one line what is missing: a GPU build of ORT, or the CUDA libraries it loads.</summary>
    private void AppendCuda(Ort.SessionOptions options)
    {
        if (!OrtRuntime.AvailableProviders.Contains("CUDAExecutionProvider"))
            throw new OrtException(OrtErrorCode.EpFail,
                $"--device cuda: ONNX Runtime {OrtRuntime.Version} at {OrtRuntime.LibraryPath} has no CUDA execution provider (providers: " +
                $"{string.Join(", ", OrtRuntime.AvailableProviders)}); build onnxmoe with -p:OrtFlavor=gpu (NuGet Microsoft.ML.OnnxRuntime.Gpu.Linux), " +
                $"or set {OrtRuntime.LibraryPathVariable} to the libonnxruntime.so of an ONNX Runtime {OrtLibrary.MajorMinor(OrtRuntime.BindingVersion)} GPU release, or use --device cpu");
        var entries = new Dictionary<string, string> { ["device_id"] = CudaDeviceId.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        foreach (var (key, value) in CudaProviderOptions.Where(e => e.Key != "device_id")) entries[key] = value;
        try
        {
            using var cuda = new Ort.OrtCUDAProviderOptions();
            cuda.UpdateOptions(entries);
            options.AppendExecutionProvider_CUDA(cuda);
        }
        catch (Ort.OnnxRuntimeException e)
        {
            var inner = OrtException.From(e);
            // ORT's text carries its source location; the loader's reason (the missing library) is what the user needs.
            var load = System.Text.RegularExpressions.Regex.Match(inner.Message, @"Failed to load library (\S+) with error: (.*)$");
            string reason = load.Success ? $"loading {Path.GetFileName(load.Groups[1].Value)} failed: {load.Groups[2].Value.Trim()}" : OrtLibrary.OneLine(inner.Message);
            throw new OrtException(inner.Code,
                $"--device cuda: the CUDA execution provider of ONNX Runtime {OrtRuntime.Version} cannot be loaded: {reason} " +
                "(it needs an NVIDIA driver, the CUDA 13 runtime, cuBLAS and cuDNN 9 on the library path; or use --device cpu)", e);
        }
    }
}
