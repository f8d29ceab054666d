using OnnxMoe.Runtime.Native;

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
    /// <summary>CUDA execution provider (needs a GPU build of ORT via ONNXMOE_ORT_LIBRARY); CPU serves nodes CUDA lacks.</summary>
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

    /// <summary>Parses a device name as the CLI's <c>--device</c> takes it: "cpu" or "cuda" (case-insensitive).</summary>
    public static ExecutionDevice ParseDevice(string text) => text.Trim().ToLowerInvariant() switch
    {
        "cpu" => ExecutionDevice.Cpu,
        "cuda" => ExecutionDevice.Cuda,
        _ => throw new ArgumentException($"unknown device '{text}': expected cpu or cuda"),
    };

    /// <summary>Builds native session options; the caller owns (and disposes) the handle.</summary>
    internal OrtSessionOptionsHandle CreateNative()
    {
        if (IntraOpThreads < 0) throw new ArgumentException($"intra-op threads must be >= 0, got {IntraOpThreads}");
        if (InterOpThreads < 0) throw new ArgumentException($"inter-op threads must be >= 0, got {InterOpThreads}");
        var options = OrtApi.CreateSessionOptions();
        try
        {
            OrtApi.SetGraphOptimizationLevel(options, (int)OptimizationLevel);
            if (IntraOpThreads > 0) OrtApi.SetIntraOpNumThreads(options, IntraOpThreads);
            if (InterOpThreads > 0) OrtApi.SetInterOpNumThreads(options, InterOpThreads);
            foreach (var (key, value) in ConfigEntries) OrtApi.AddSessionConfigEntry(options, key, value);
            if (Device == ExecutionDevice.Cuda) AppendCuda(options);
            return options;
        }
        catch
        {
            options.Dispose();
            throw;
        }
    }

    private void AppendCuda(OrtSessionOptionsHandle options)
    {
        var entries = new List<KeyValuePair<string, string>> { new("device_id", CudaDeviceId.ToString(System.Globalization.CultureInfo.InvariantCulture)) };
        entries.AddRange(CudaProviderOptions.Where(e => e.Key != "device_id"));
        try
        {
            using var cuda = OrtApi.CreateCudaProviderOptions();
            OrtApi.UpdateCudaProviderOptions(cuda, entries);
            OrtApi.AppendCudaProvider(options, cuda);
        }
        catch (OrtException e)
        {
            throw new OrtException(e.Code,
                $"CUDA execution provider requested but ONNX Runtime {OrtRuntime.Version} at {OrtRuntime.LibraryPath} cannot provide it: {e.Message} " +
                $"(the CPU library fetched by the onnxmoe build has no CUDA provider; set {OrtRuntime.LibraryPathVariable} to libonnxruntime.so of an " +
                "ONNX Runtime GPU release, with libonnxruntime_providers_shared.so and libonnxruntime_providers_cuda.so beside it and CUDA/cuDNN installed, " +
                "or use --device cpu)", e);
        }
    }
}
