using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxMoe.Inference.Generation;
using OnnxMoe.Inference.Models;
using OnnxMoe.Ir;
using OnnxMoe.Onnx;
using OnnxMoe.Runtime;
using OnnxMoe.Structure;

namespace OnnxMoe.Compiler.Bench;

/// <summary>What runs a model in a benchmark: onnxmoe's own decoder over ORT, or ONNX Runtime GenAI's generator.</summary>
public enum BenchEngine
{
    /// <summary>onnxmoe's decoder, KV cache as <see cref="KvCacheMode.Auto"/> picks (a shared buffer for fused attention on CPU).</summary>
    Ort,
    GenAi,
    /// <summary>onnxmoe's decoder with a fresh present per step (<see cref="KvCacheMode.Concat"/>), to measure what the shared buffer gains.</summary>
    OrtConcat,
}

public static class BenchEngines
{
    public static string Name(this BenchEngine engine) => engine switch
    {
        BenchEngine.GenAi => "genai",
        BenchEngine.OrtConcat => "ort-concat",
        _ => "ort",
    };

    /// <summary>Parses a comma list such as "ort,genai" (order kept: the first engine's first row is the baseline).</summary>
    public static IReadOnlyList<BenchEngine> Parse(string text)
    {
        var engines = new List<BenchEngine>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            var engine = part.ToLowerInvariant() switch
            {
                "ort" => BenchEngine.Ort,
                "genai" => BenchEngine.GenAi,
                "ort-concat" => BenchEngine.OrtConcat,
                _ => throw new UserErrorException($"--engine: unknown engine '{part}' (expected ort, ort-concat, genai or a comma list of them)"),
            };
            if (engines.Contains(engine)) throw new UserErrorException($"--engine: '{part}' is listed twice");
            engines.Add(engine);
        }
        return engines;
    }
}

/// <summary>Settings of a benchmark run (the paper's protocol: batch 1, decode = 1 / median time per generated token).</summary>
public sealed record BenchOptions
{
    /// <summary>Prompt tokens per sequence for the prefill measurement.</summary>
    public int PromptLength { get; init; } = 128;
    /// <summary>Tokens generated one at a time with the KV cache after the prefill.</summary>
    public int GenerateTokens { get; init; } = 64;
    public int Batch { get; init; } = 1;
    /// <summary>Measured repeats of (prefill + decode); medians are over all of them.</summary>
    public int Repeats { get; init; } = 3;
    /// <summary>Unmeasured (prefill + decode) runs before the repeats (arena growth, first-run kernel selection).</summary>
    public int WarmupRuns { get; init; } = 1;
    /// <summary>Threads and device of the sessions; null = ORT defaults on CPU.</summary>
    public SessionConfig? Session { get; init; }
    /// <summary>Engines each folder is measured with, in row order.</summary>
    public IReadOnlyList<BenchEngine> Engines { get; init; } = [BenchEngine.Ort];
    /// <summary>Folder for ORT's profile of each model (ort engine; a second session runs the same schedule profiled); null = no profiling.</summary>
    public string? ProfileDirectory { get; init; }
    /// <summary>Op types listed per phase in the profile table.</summary>
    public int ProfileTopOps { get; init; } = 12;
    /// <summary>Buffer of the read-bandwidth probe run before each model (see <see cref="ReadBandwidth"/>).</summary>
    public long BandwidthBufferBytes { get; init; } = ReadBandwidth.DefaultBufferBytes;

    /// <summary>Context length the bound charges the KV cache at: the median decode step's (prompt + half the generated tokens).</summary>
    public int BoundContextLength => PromptLength + GenerateTokens / 2;

    /// <summary>Threads of the bandwidth probe: the session's intra-op threads, or every logical processor when ORT chooses.</summary>
    public int BandwidthThreads => Session is { IntraOpThreads: > 0 } s ? s.IntraOpThreads : Environment.ProcessorCount;

    public void Validate()
    {
        if (PromptLength < 1) throw new UserErrorException($"--prompt-len must be at least 1, got {PromptLength}");
        if (GenerateTokens < 1) throw new UserErrorException($"--gen must be at least 1, got {GenerateTokens}");
        if (Batch < 1) throw new UserErrorException($"--batch must be at least 1, got {Batch}");
        if (Repeats < 1) throw new UserErrorException($"--repeat must be at least 1, got {Repeats}");
        if (WarmupRuns < 0) throw new UserErrorException($"warm-up runs must be 0 or more, got {WarmupRuns}");
        if (Engines.Count == 0) throw new UserErrorException("--engine needs at least one engine");
        if (Engines.Contains(BenchEngine.GenAi) && Batch != 1) throw new UserErrorException($"--engine genai measures batch 1 only, got --batch {Batch}");
        if (ProfileDirectory is not null && Engines.All(e => e == BenchEngine.GenAi))
            throw new UserErrorException("--profile records ORT's profile of the ort engine; add ort to --engine");
        if (ProfileTopOps < 1) throw new UserErrorException($"profile top ops must be at least 1, got {ProfileTopOps}");
        if (BandwidthBufferBytes < 1L << 20) throw new UserErrorException($"bandwidth buffer must be at least 1 MiB, got {BandwidthBufferBytes} bytes");
        if (Engines.Contains(BenchEngine.GenAi) && Session?.Device == ExecutionDevice.Cuda)
            throw new UserErrorException("--engine genai runs on the CPU here (the provider comes from genai_config.json); drop --device cuda");
    }
}

/// <summary>
/// One model's measurements.
/// <para>Memory: before the model is opened the managed heap is collected, memory freed by earlier
/// sessions is returned to the kernel (glibc malloc_trim), and the kernel's peak RSS
/// (VmHWM) is reset to the current RSS (/proc/self/clear_refs = 5); <see cref="PeakRssBytes"/> is the
/// peak RSS of the process while the model was loaded and run, <see cref="PeakRssDeltaBytes"/> that
/// peak minus the RSS just before loading (what this model cost: weights, ORT arenas, KV cache).
/// Where the reset is refused <see cref="PeakIsolated"/> is false and the peak may belong to an
/// earlier model: run one model per process (e.g. one <c>onnxmoe bench</c> per folder) then.</para>
/// </summary>
public sealed record BenchModelResult(
    string Model,
    string Directory,
    long ModelFileBytes,
    int PromptLength,
    int GenerateTokens,
    int Batch,
    int Repeats,
    double PrefillMedianMs,
    double PrefillTokensPerSecond,
    double DecodeMedianMsPerToken,
    double DecodeTokensPerSecond,
    long PeakRssBytes,
    long PeakRssDeltaBytes,
    bool PeakIsolated,
    double LoadSeconds)
{
    /// <summary>The engine that ran the model (<see cref="BenchEngines.Name"/>).</summary>
    public string Engine { get; init; } = "ort";
    /// <summary>The lower bound on a decode step from the bytes it reads; null on CUDA and when the graph has no onnxmoe structure.</summary>
    public DecodeBound? Bound { get; init; }
    /// <summary>ORT's profile of a second session that ran the same schedule (with --profile, ort engine); the profiler's cost is in its runs only.</summary>
    public BenchProfile? Profile { get; init; }
}

/// <summary>
/// A decode step's lower bound: <see cref="BytesPerStep"/> (see <see cref="DecodeTraffic"/>, KV cache at
/// <see cref="ContextLength"/>) over the read bandwidth measured in this process just before the model was measured.
/// </summary>
public sealed record DecodeBound(DecodeTraffic Traffic, int ContextLength, double BytesPerStep, ReadBandwidth Bandwidth, double BoundMsPerToken, double MeasuredOverBound)
{
    public static DecodeBound Of(DecodeTraffic traffic, ReadBandwidth bandwidth, BenchOptions options, double measuredMsPerStep)
    {
        double bytes = traffic.BytesPerStep(options.BoundContextLength, options.Batch);
        double ms = bytes / bandwidth.BytesPerSecond * 1e3;
        return new DecodeBound(traffic, options.BoundContextLength, bytes, bandwidth, ms, measuredMsPerStep / ms);
    }
}

/// <summary>A result with ratios against the baseline (the first model): speedups (higher is better) and size/memory ratios (lower is better).</summary>
public sealed record BenchRow(BenchModelResult Result, double PrefillSpeedup, double DecodeSpeedup, double MemoryRatio, double FileSizeRatio);

/// <summary>All models of one run, the first being the baseline.</summary>
public sealed class BenchReport
{
    public BenchReport(BenchOptions options, IReadOnlyList<BenchModelResult> results, string runtime)
    {
        Options = options;
        Runtime = runtime;
        var b = results[0];
        Rows = results.Select(r => new BenchRow(r,
            r.PrefillTokensPerSecond / b.PrefillTokensPerSecond,
            r.DecodeTokensPerSecond / b.DecodeTokensPerSecond,
            b.PeakRssDeltaBytes > 0 ? (double)r.PeakRssDeltaBytes / b.PeakRssDeltaBytes : double.NaN,
            (double)r.ModelFileBytes / b.ModelFileBytes)).ToList();
    }

    public BenchOptions Options { get; }
    /// <summary>e.g. "ONNX Runtime 1.23.2, CPU".</summary>
    public string Runtime { get; }
    public IReadOnlyList<BenchRow> Rows { get; }

    /// <summary>Fixed-width table, one line per model, ratios against the first.</summary>
    public string ToTable()
    {
        var inv = CultureInfo.InvariantCulture;
        var header = new[] { "model", "engine", "file MB", "prefill tok/s", "decode tok/s", "ms/token", "peak RSS MB", "prefill x", "decode x", "memory x", "size x",
            "MB/token", "GB/s", "bound ms", "measured/bound" };
        var lines = Rows.Select(r => new[]
        {
            r.Result.Model,
            r.Result.Engine,
            (r.Result.ModelFileBytes / 1e6).ToString("F1", inv),
            r.Result.PrefillTokensPerSecond.ToString("F1", inv),
            r.Result.DecodeTokensPerSecond.ToString("F2", inv),
            r.Result.DecodeMedianMsPerToken.ToString("F2", inv),
            (r.Result.PeakRssDeltaBytes / 1e6).ToString("F0", inv) + (r.Result.PeakIsolated ? "" : "*"),
            r.PrefillSpeedup.ToString("F2", inv),
            r.DecodeSpeedup.ToString("F2", inv),
            r.MemoryRatio.ToString("F2", inv),
            r.FileSizeRatio.ToString("F2", inv),
            r.Result.Bound is { } b ? (b.BytesPerStep / 1e6).ToString("F1", inv) : "-",
            r.Result.Bound is { } b1 ? (b1.Bandwidth.BytesPerSecond / 1e9).ToString("F1", inv) : "-",
            r.Result.Bound is { } b2 ? b2.BoundMsPerToken.ToString("F2", inv) : "-",
            r.Result.Bound is { } b3 ? b3.MeasuredOverBound.ToString("F2", inv) : "-",
        }).ToList();
        var widths = header.Select((h, i) => Math.Max(h.Length, lines.Count == 0 ? 0 : lines.Max(l => l[i].Length))).ToArray();
        var sb = new StringBuilder();
        sb.Append(string.Join("  ", header.Select((h, i) => i == 0 ? h.PadRight(widths[i]) : h.PadLeft(widths[i])))).Append('\n');
        foreach (var l in lines) sb.Append(string.Join("  ", l.Select((c, i) => i == 0 ? c.PadRight(widths[i]) : c.PadLeft(widths[i])))).Append('\n');
        sb.Append(CultureInfo.InvariantCulture, $"{Runtime}; batch {Options.Batch}, prompt {Options.PromptLength}, {Options.GenerateTokens} generated tokens, median of {Options.Repeats} repeats after {Options.WarmupRuns} warm-up; ratios vs {Rows[0].Result.Model} ({Rows[0].Result.Engine}); peak RSS = process peak minus RSS before loading the model");
        if (Rows.Any(r => !r.Result.PeakIsolated)) sb.Append(" (* peak not isolated: the kernel refused to reset it)");
        sb.Append('\n');
        if (Rows.FirstOrDefault(r => r.Result.Bound is not null)?.Result.Bound is { } bound)
            sb.Append(CultureInfo.InvariantCulture, $"bound = bytes a decode step reads at least (weights, top-k of the routed experts, one embedding row, KV cache at context {bound.ContextLength}) / read bandwidth " +
                $"({bound.Bandwidth.Threads} threads, best of {bound.Bandwidth.Passes} passes over {bound.Bandwidth.BufferBytes / (1 << 20)} MiB, measured before each model)\n");
        if (Rows.Any(r => r.Result.Bound is null))
            sb.Append(Options.Session?.Device == ExecutionDevice.Cuda ? "bound columns \"-\": no bound on CUDA (the bandwidth probe reads host memory)\n" : "bound columns \"-\": the graph has no onnxmoe.structure metadata\n");
        if (Rows.Any(r => r.Result.Profile is not null))
            sb.Append("profiles: a second session per model ran the same schedule with ORT's profiler on (the table's timings are unprofiled; the profiler's cost shows as time between kernels)\n");
        foreach (var r in Rows)
            if (r.Result.Profile is { } profile) sb.Append('\n').Append(profile.ToTable(r.Result.Model, Options.ProfileTopOps));
        return sb.ToString();
    }

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson() => JsonSerializer.Serialize(new
    {
        runtime = Runtime,
        options = new { Options.PromptLength, Options.GenerateTokens, Options.Batch, Options.Repeats, Options.WarmupRuns, Options.BoundContextLength, Options.ProfileDirectory },
        rows = Rows,
    }, Json);
}

/// <summary>
/// Benchmarks compiled model folders one after another in this process through <see cref="OrtDecoder"/> and/or ONNX
/// Runtime GenAI (the folder's genai_config.json): prefill of a synthetic prompt (deterministic token ids), then greedy
/// decoding one token at a time with the KV cache. Memory is measured as described on <see cref="BenchModelResult"/>.
/// </summary>
public sealed class BenchRunner
{
    private readonly BenchOptions _options;
    private readonly Action<string>? _progress;

    public BenchRunner(BenchOptions options, Action<string>? progress = null)
    {
        options.Validate();
        _options = options;
        _progress = progress;
    }

    public BenchReport Run(IReadOnlyList<string> modelDirectories)
    {
        if (modelDirectories.Count == 0) throw new UserErrorException("bench needs at least one model folder");
        var folders = modelDirectories.Select(ModelFolder.Open).ToList();   // fail on a bad folder before measuring anything
        var names = UniqueNames(folders.Select(f => f.Directory).ToList());
        WarmUpProcess(folders[0]);
        var results = new List<BenchModelResult>();
        for (int i = 0; i < folders.Count; i++)
        {
            // The probe reads host memory, so a bound is only given for the CPU.
            var traffic = _options.Session?.Device == ExecutionDevice.Cuda ? null : Traffic(folders[i]);
            foreach (var engine in _options.Engines)
            {
                _progress?.Invoke($"bench {names[i]} with {engine.Name()} ({i + 1}/{folders.Count})");
                var bandwidth = traffic is null ? null : MeasureBandwidth();
                var result = engine switch
                {
                    BenchEngine.GenAi => GenAiBench.Measure(this, folders[i], names[i]),
                    BenchEngine.OrtConcat => Measure(folders[i], names[i], KvCacheMode.Concat) with { Engine = engine.Name() },
                    _ => Measure(folders[i], names[i]),
                };
                results.Add(traffic is null ? result : result with { Bound = DecodeBound.Of(traffic, bandwidth!, _options, result.DecodeMedianMsPerToken) });
            }
        }
        string device = (_options.Session?.Device ?? ExecutionDevice.Cpu) == ExecutionDevice.Cuda ? "CUDA" : "CPU";
        string genAi = _options.Engines.Contains(BenchEngine.GenAi) ? $", ONNX Runtime GenAI {GenAiBench.Version}" : "";
        return new BenchReport(_options, results, $"ONNX Runtime {OrtRuntime.Version}{genAi}, {device}");
    }

    internal BenchOptions Options => _options;
    internal void Progress(string message) => _progress?.Invoke(message);

    /// <summary>
    /// One untimed run before any measurement: ORT's thread pools and kernel registry and our own JIT are
    /// process-wide one-time costs that would otherwise be charged to the first (baseline) model's memory and time.
    /// </summary>
    private void WarmUpProcess(ModelFolder folder)
    {
        _progress?.Invoke("bench: warming up the process (untimed)");
        if (_options.Engines.Any(e => e != BenchEngine.GenAi))
            using (var decoder = OrtDecoder.Open(folder, _options.Session)) RunOnce(decoder);
        if (_options.Engines.Contains(BenchEngine.GenAi)) GenAiBench.WarmUp(this, folder);
        ReleaseFreedMemory();
    }

    /// <summary>The folder's decode traffic, or null when its graph carries no onnxmoe structure.</summary>
    private static DecodeTraffic? Traffic(ModelFolder folder)
    {
        var model = OnnxReader.Read(folder.ModelPath);
        return DecoderStructure.TryRead(model) is null ? null : DecodeTraffic.Of(model);
    }

    private ReadBandwidth MeasureBandwidth()
    {
        var bandwidth = ReadBandwidth.Measure(_options.BandwidthBufferBytes, _options.BandwidthThreads);
        _progress?.Invoke($"  read bandwidth {bandwidth.BytesPerSecond / 1e9:F1} GB/s ({bandwidth.Threads} threads)");
        return bandwidth;
    }

    /// <summary>
    /// Measures one folder (see <see cref="BenchModelResult"/>). With a profile folder, a second session then runs the
    /// same schedule (warm-up and repeats) with ORT's profiler on, so the profiler's own cost stays out of the timings.
    /// </summary>
    public BenchModelResult Measure(ModelFolder folder, string name, KvCacheMode kvCache = KvCacheMode.Auto)
    {
        var session = _options.Session ?? new SessionConfig();
        ReleaseFreedMemory();
        bool isolated = PeakMemory.TryResetPeak();
        long before = PeakMemory.ResidentBytes;
        var load = Stopwatch.StartNew();
        var prefill = new List<double>();
        var decode = new List<double>();
        BenchModelResult result;
        using (var decoder = OrtDecoder.Open(folder, session, kvCache))
        {
            double loadSeconds = load.Elapsed.TotalSeconds;
            RunSchedule(decoder, (p, d) =>
            {
                prefill.Add(p);
                decode.AddRange(d);
                _progress?.Invoke($"  repeat {prefill.Count}/{_options.Repeats}: prefill {p * 1e3:F1} ms, decode median {Median(d) * 1e3:F2} ms/token");
            });
            var memory = PeakMemory.Read();
            double prefillMedian = Median(prefill), decodeMedian = Median(decode);
            result = new BenchModelResult(name, folder.Directory, ModelFileBytes(folder), _options.PromptLength, _options.GenerateTokens, _options.Batch, _options.Repeats,
                prefillMedian * 1e3, _options.Batch * _options.PromptLength / prefillMedian,
                decodeMedian * 1e3, _options.Batch / decodeMedian,
                memory.PeakResidentBytes, memory.PeakResidentBytes - before, isolated, loadSeconds);
        }
        return _options.ProfileDirectory is { } directory ? result with { Profile = Profile(folder, name, session, directory, kvCache) } : result;
    }

    /// <summary>The warm-up runs, then the repeats, each (prefill + decode); <paramref name="measured"/> gets each repeat's times in seconds.</summary>
    private void RunSchedule(OrtDecoder decoder, Action<double, List<double>> measured)
    {
        for (int run = 0; run < _options.WarmupRuns + _options.Repeats; run++)
        {
            var (p, d) = RunOnce(decoder);
            if (run >= _options.WarmupRuns) measured(p, d);
        }
    }

    /// <summary>Runs the schedule in a profiled session and writes ORT's profile as <c>{directory}/{name}.ort-profile.json</c>.</summary>
    private BenchProfile Profile(ModelFolder folder, string name, SessionConfig session, string directory, KvCacheMode kvCache)
    {
        _progress?.Invoke($"  profiling {name} (a second session, same schedule)");
        System.IO.Directory.CreateDirectory(directory);
        string fileName = string.Join("_", name.Split(Path.GetInvalidFileNameChars().Append('/').ToArray()));
        string file = Path.GetFullPath(Path.Combine(directory, fileName + ".ort-profile.json"));
        var profiled = session.With();
        profiled.ProfilePrefix = Path.Combine(Path.GetDirectoryName(file)!, "." + fileName + ".tmp-" + Environment.ProcessId);
        try
        {
            using var decoder = OrtDecoder.Open(folder, profiled, kvCache);
            RunSchedule(decoder, (_, _) => { });
            File.Move(decoder.Session.EndProfiling(), file, overwrite: true);
        }
        finally
        {
            // A failed run leaves ORT's file (written when the session ends) under the hidden prefix: nothing half-written stays.
            foreach (var left in System.IO.Directory.EnumerateFiles(Path.GetDirectoryName(profiled.ProfilePrefix)!, Path.GetFileName(profiled.ProfilePrefix) + "*"))
                File.Delete(left);
        }
        return BenchProfile.Summarize(file, OrtProfileReader.Read(file), _options.WarmupRuns, _options.Repeats, _options.GenerateTokens);
    }

    /// <summary>The deterministic synthetic prompt: <paramref name="count"/> ids below <paramref name="vocab"/>.</summary>
    internal static long[] PromptIds(int count, int vocab)
    {
        var ids = new long[count];
        for (int i = 0; i < ids.Length; i++) ids[i] = (i * 7919L + 13) % vocab;
        return ids;
    }

    /// <summary>One prefill (seconds) and the per-token decode times (seconds).</summary>
    private (double Prefill, List<double> Decode) RunOnce(OrtDecoder decoder)
    {
        int batch = _options.Batch, p = _options.PromptLength, vocab = decoder.VocabSize;
        var ids = PromptIds(batch * p, vocab);
        var positions = new long[batch * p];
        for (int b = 0; b < batch; b++) for (int t = 0; t < p; t++) positions[b * p + t] = t;
        using var state = decoder.CreateState(batch);
        var sw = Stopwatch.StartNew();
        var logits = state.Forward(ids, p, Ones(batch * p), positions);
        double prefill = sw.Elapsed.TotalSeconds;
        var next = new long[batch];
        for (int b = 0; b < batch; b++) next[b] = ArgMax(logits.Slice(((b + 1) * p - 1) * vocab, vocab));
        var times = new List<double>(_options.GenerateTokens);
        var pos = new long[batch];
        for (int g = 0; g < _options.GenerateTokens; g++)
        {
            int total = state.PastLength + 1;
            Array.Fill(pos, total - 1);
            sw.Restart();
            logits = state.Forward(next, 1, Ones(batch * total), pos);
            times.Add(sw.Elapsed.TotalSeconds);
            for (int b = 0; b < batch; b++) next[b] = ArgMax(logits.Slice(b * vocab, vocab));
        }
        return (prefill, times);
    }

    /// <summary>
    /// Collects the managed heap and hands memory freed by an earlier session back to the kernel
    /// (glibc malloc_trim), so the RSS before the next model is what is really in use and its delta is
    /// not hidden by reuse of the previous model's freed pages.
    /// </summary>
    internal static void ReleaseFreedMemory()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        try { MallocTrim(0); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }   // not glibc: nothing to trim
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);

    private static long[] Ones(int n)
    {
        var a = new long[n];
        Array.Fill(a, 1L);
        return a;
    }

    private static int ArgMax(ReadOnlySpan<float> v) => System.Numerics.Tensors.TensorPrimitives.IndexOfMax(v);

    internal static double Median(IReadOnlyList<double> values)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        int m = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[m] : (sorted[m - 1] + sorted[m]) / 2;
    }

    /// <summary>Bytes of the decoder file and every external-data file beside it (*.onnx, *.onnx.data, *.data).</summary>
    public static long ModelFileBytes(ModelFolder folder) =>
        System.IO.Directory.EnumerateFiles(folder.Directory)
            .Where(f => f.EndsWith(".onnx", StringComparison.Ordinal) || f.EndsWith(".data", StringComparison.Ordinal))
            .Sum(f => new FileInfo(f).Length);

    /// <summary>Folder names, made unique with their parents' names where two are equal.</summary>
    private static List<string> UniqueNames(List<string> dirs)
    {
        var names = dirs.Select(Path.GetFileName).Select(n => n ?? "").ToList();
        for (int i = 0; i < names.Count; i++)
            if (names.Count(n => n == names[i]) > 1)
                names[i] = Path.Combine(Path.GetFileName(Path.GetDirectoryName(dirs[i])) ?? "", names[i]);
        return names;
    }
}
