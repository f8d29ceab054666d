using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Passes.Calibration;
using OnnxMoe.Runtime;
using OnnxMoe.Structure;
using Tensor = OnnxMoe.Ir.Tensors.Tensor;

namespace OnnxMoe.Compiler.Calibration;

/// <summary>Progress of a calibration stage: samples of the current pass over the data.</summary>
public readonly record struct CalibrationProgress(string Stage, int SamplesDone, int SamplesTotal);

/// <summary>How the region runner runs.</summary>
public sealed record RegionRunnerOptions
{
    /// <summary>Samples per ORT run. Bounds activation memory.</summary>
    public int BatchSize { get; init; } = 1;
    /// <summary>Device and threads of every calibration session; null: CPU with ORT's defaults.</summary>
    public SessionConfig? Session { get; init; }
    /// <summary>Memory for calibration (one block's weights resident, one batch's activations, hidden states); 0: <see cref="OrtRegionRunner.DefaultMemoryBudget"/>.</summary>
    public long MemoryBudget { get; init; }
    /// <summary>The budget was given by the user: a block that does not fit is an error (otherwise a warning).</summary>
    public bool MemoryBudgetExplicit { get; init; }
    /// <summary>Where hidden states beyond the budget are spilled (default: the system's temporary folder).</summary>
    public string? SpillDirectory { get; init; }
    public Action<CalibrationProgress>? Progress { get; init; }
    public Action<string>? Log { get; init; }
}

/// <summary>
/// <see cref="IRegionRunner"/> over ONNX Runtime, the only one: the calibration corpus (tokenized on first use), one in-memory ORT
/// session per region on the configured device (<see cref="RegionRunnerOptions.Session"/>, from --device and --threads), the
/// decoder inputs of a batch (<see cref="DecoderFeeds"/>, the one place that builds them), and the hidden states between blocks in a
/// <see cref="HiddenStateStore"/> (memory up to a budget, spill files beyond). A block runs with only its weights resident: its
/// region extracted from the IR with <see cref="RegionExtractor"/>, so what calibration runs is the graph that ships.
/// </summary>
public sealed class OrtRegionRunner : IRegionRunner, IDisposable
{
    private readonly Lazy<CalibrationCorpus> _corpus;
    private readonly SessionConfig _session, _unpackedSession, _busySession;

    /// <summary>Blocks with more weight bytes than this run without ORT's prepacked weight copies, and memory is handed back before them.</summary>
    private const long LargeBytes = 256L << 20;

    public OrtRegionRunner(CalibrationCorpus corpus, RegionRunnerOptions? options = null) : this(() => corpus, options) { }

    /// <param name="corpus">Called once, when calibration first needs windows (pipelines that score nothing tokenize nothing).</param>
    public OrtRegionRunner(Func<CalibrationCorpus> corpus, RegionRunnerOptions? options = null)
    {
        _corpus = new Lazy<CalibrationCorpus>(corpus);
        Options = options ?? new RegionRunnerOptions();
        if (Options.BatchSize < 1) throw new ArgumentException("calibration batch size must be at least 1");
        if (Options.MemoryBudget < 0) throw new UserErrorException($"--calibration-memory must be positive, got {Options.MemoryBudget}");
        Budget = Options.MemoryBudget > 0 ? Options.MemoryBudget : DefaultMemoryBudget();
        _session = Options.Session ?? new SessionConfig();
        // Regions whose caller computes between runs (AWQ's trial weights and clip errors of large weights): ORT's pool threads spinning
        // for the next run would take the cores from that work, so they sleep. Short runs of small regions keep the spinning (faster).
        _busySession = _session.With(("session.intra_op.allow_spinning", "0"));
        // A block's session runs a few batches once: ORT's prepacked copies of its weights would double what it holds. Small blocks keep
        // them (faster); the choice depends on the block alone, so the same model gives the same bytes on every machine.
        _unpackedSession = _session.With(("session.disable_prepacking", "1"));
        Store = new HiddenStateStore(Budget, Options.SpillDirectory);
    }

    public CalibrationCorpus Corpus => _corpus.Value;
    public RegionRunnerOptions Options { get; }
    public long Budget { get; }
    public HiddenStateStore Store { get; }
    /// <summary>Largest block weights held resident so far (bytes as the graph stores them).</summary>
    public long PeakBlockBytes { get; private set; }
    /// <summary>Block regions run so far (sessions created for decoder blocks).</summary>
    public int BlocksRun { get; private set; }
    /// <summary>Whether any consumer asked for calibration data (the corpus was tokenized).</summary>
    public bool Used => _corpus.IsValueCreated;

    public long LargeBlockBytes => LargeBytes;

    /// <summary>Half the memory this process may use (the machine's, or a container's limit), at least 256 MiB.</summary>
    public static long DefaultMemoryBudget() => Math.Max(256L << 20, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 2);

    public CalibrationWindows Windows(int samples, int seqLen, DecoderStructure s)
    {
        if (s.MaxPositionEmbeddings > 0 && seqLen > s.MaxPositionEmbeddings && _cutNoted.Add(seqLen))
            Options.Log?.Invoke($"calibration: seq-len {seqLen} is past the model's context (max_position_embeddings {s.MaxPositionEmbeddings}); windows of {s.MaxPositionEmbeddings} tokens");
        return Corpus.Windows(samples, s.MaxPositionEmbeddings > 0 ? Math.Min(seqLen, s.MaxPositionEmbeddings) : seqLen, Options.Log);
    }

    private readonly HashSet<int> _cutNoted = new();

    public IHiddenStates Embed(Model model, DecoderStructure s, CalibrationWindows windows, CancellationToken cancellation = default)
    {
        var output = BlockStateCache.Value(model, s.EmbeddingOutput);
        var region = RegionExtractor.Extract(model, [], [output]);
        using var session = new InMemorySession(region, _session, "calibration_embedding");
        HiddenStates? states = null;
        try
        {
            RunBatches(session.Session, s, windows, null, null, [output.Name], Options.BatchSize, "embedding", cancellation, (first, count, result) =>
            {
                var v = result[0];
                states ??= Store.Allocate(windows.Count, windows.Length, checked((int)v.Shape[^1]), v.ElementType);
                states.Write(first, v.GetBytes());
            });
            return states!;
        }
        catch
        {
            states?.Dispose();
            throw;
        }
    }

    public IHiddenStates? RunBlock(Model model, DecoderStructure s, int position, IHiddenStates input, CalibrationWindows windows,
        IReadOnlyList<Value> outputs, Action<int, int, IRegionValues>? use, bool keepOutput, int? batchSize = null,
        IReadOnlyDictionary<Value, Tensor>? replacements = null, CancellationToken cancellation = default)
    {
        var hidden = input as HiddenStates ?? throw new ArgumentException("hidden states from another runner", nameof(input));
        var block = s.Blocks[position];
        var blockInput = BlockStateCache.Value(model, block.Input);
        var blockOutput = BlockStateCache.Value(model, block.Output);
        var wanted = new List<Value>();
        if (keepOutput) wanted.Add(blockOutput);
        foreach (var v in outputs) if (!wanted.Contains(v)) wanted.Add(v);
        if (wanted.Count == 0) return null;
        var region = RegionExtractor.Extract(model, [blockInput], wanted, replacements: replacements);
        long weightBytes = region.Graph.Initializers.Sum(v => v.ConstValue?.ByteLength ?? 0);
        CheckFits(weightBytes, block, hidden);
        bool large = weightBytes > LargeBytes;
        if (large) ReleaseMemory();
        Options.Log?.Invoke($"calibration: block {block.Index}: {Mib(weightBytes)} MiB of weights; " +
                            $"process {Mib(Environment.WorkingSet)} MiB, managed heap {Mib(GC.GetTotalMemory(false))} MiB, hidden states {Mib(Store.InMemoryBytes)} MiB in memory");
        using var session = new InMemorySession(region, large ? _unpackedSession : _session, $"calibration_block_{block.Index}");
        BlocksRun++;
        HiddenStates? states = null;
        var names = wanted.Select(v => v.Name).ToList();
        var offsets = outputs.Select(v => wanted.IndexOf(v)).ToArray();
        try
        {
            RunBatches(session.Session, s, windows, blockInput.Name, hidden, names, batchSize ?? Options.BatchSize, $"block {block.Index}", cancellation, (first, count, result) =>
            {
                if (keepOutput)
                {
                    var v = result[0];
                    states ??= Store.Allocate(windows.Count, windows.Length, hidden.Hidden, v.ElementType);
                    states.Write(first, v.GetBytes());
                }
                use?.Invoke(first, count, new OrtRegionValues(result, offsets));
            });
            return states;
        }
        catch
        {
            states?.Dispose();
            throw;
        }
    }

    public IRegion Open(Model region, string name, bool busyBetweenRuns = false) =>
        new OrtRegion(new InMemorySession(region, busyBetweenRuns ? _busySession : _session, name));

    /// <summary>The one place that builds decoder inputs: for a batch of windows, the feeds <paramref name="session"/> declares among
    /// input_ids, attention_mask (all ones), position_ids (0..), the empty KV cache of the structure's blocks, and the hidden
    /// states <paramref name="hiddenName"/>.</summary>
    public static List<KeyValuePair<string, OrtValue>> DecoderFeeds(InferenceSession session, DecoderStructure s, CalibrationWindows windows,
        int first, int count, string? hiddenName = null, HiddenStates? hidden = null)
    {
        int len = windows.Length;
        var past = new HashSet<string>(s.Blocks.SelectMany(b => new[] { b.Attention.PastKey, b.Attention.PastValue }), StringComparer.Ordinal);
        var feeds = new List<KeyValuePair<string, OrtValue>>();
        try
        {
            foreach (var input in session.Inputs)
            {
                OrtValue value;
                if (input.Name == hiddenName) value = hidden!.Batch(first, count);
                else if (input.Name == "input_ids")
                {
                    var ids = new long[count * len];
                    for (int b = 0; b < count; b++)
                    {
                        var sample = windows.Sample(first + b);
                        for (int t = 0; t < len; t++) ids[b * len + t] = sample[t];
                    }
                    value = OrtValue.CreateTensor<long>(ids, [count, len]);
                }
                else if (input.Name == "attention_mask") value = OrtValue.CreateTensor<long>(Enumerable.Repeat(1L, count * len).ToArray(), [count, len]);
                else if (input.Name == "position_ids")
                {
                    var positions = new long[count * len];
                    for (int i = 0; i < positions.Length; i++) positions[i] = i % len;
                    value = OrtValue.CreateTensor<long>(positions, [count, len]);
                }
                else if (past.Contains(input.Name)) value = OrtValue.Allocate(input.ElementType, [count, s.NumKeyValueHeads, 0, s.HeadDim]);
                else continue;
                feeds.Add(new(input.Name, value));
            }
            return feeds;
        }
        catch
        {
            foreach (var f in feeds) f.Value.Dispose();
            throw;
        }
    }

    private void RunBatches(InferenceSession session, DecoderStructure s, CalibrationWindows windows, string? hiddenName, HiddenStates? hidden,
        IReadOnlyList<string> outputs, int batchSize, string stage, CancellationToken cancellation, Action<int, int, RunResult> use)
    {
        Options.Progress?.Invoke(new CalibrationProgress(stage, 0, windows.Count));
        for (int first = 0; first < windows.Count; first += batchSize)
        {
            cancellation.ThrowIfCancellationRequested();
            int count = Math.Min(batchSize, windows.Count - first);
            var feeds = DecoderFeeds(session, s, windows, first, count, hiddenName, hidden);
            try
            {
                if (feeds.Count < session.Inputs.Count)
                    throw new InvalidOperationException($"calibration region ({stage}) reads inputs the calibration cannot feed: " +
                        string.Join(", ", session.Inputs.Select(i => i.Name).Where(n => !feeds.Any(f => f.Key == n))));
                using var result = session.Run(feeds, outputs, cancellation);
                use(first, count, result);
            }
            finally
            {
                foreach (var f in feeds) f.Value.Dispose();
            }
            Options.Progress?.Invoke(new CalibrationProgress(stage, first + count, windows.Count));
        }
    }

    /// <summary>Returns the large arrays a block left behind to the system (the managed heap would otherwise keep them, and under a
    /// memory limit the next block's weights would not fit beside them).</summary>
    public void ReleaseMemory()
    {
        System.Runtime.GCSettings.LargeObjectHeapCompactionMode = System.Runtime.GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        // glibc keeps freed native memory (ORT's arenas of the sessions just closed) in its heaps; hand it back.
        if (OperatingSystem.IsLinux())
            try { MallocTrim(0); }
            catch (EntryPointNotFoundException) { }
            catch (DllNotFoundException) { }
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);

    /// <summary>Checks that one block's weights and a batch of activations fit the budget (an error when the user set it, a note otherwise).</summary>
    private void CheckFits(long weights, BlockStructure block, HiddenStates input)
    {
        PeakBlockBytes = Math.Max(PeakBlockBytes, weights);
        // A batch's activations: the block's widest intermediates are roughly 4x the FFN width per token; hidden states in and out.
        long batch = Math.Min(Options.BatchSize, input.Count) * input.SampleBytes * 8;
        long need = weights + batch;
        if (need <= Budget) return;
        string message = $"calibration needs {Mib(need)} MiB for block {block.Index} ({Mib(weights)} MiB of weights, ~{Mib(batch)} MiB for a batch of activations); " +
                         $"the calibration memory budget is {(Budget < 1 << 20 ? $"{Budget} bytes" : $"{Mib(Budget)} MiB")}";
        if (Options.MemoryBudgetExplicit) throw new UserErrorException($"{message}: raise --calibration-memory to at least {Mib(need)} MiB");
        if (_warned.Add(block.Index)) Options.Log?.Invoke(message);
    }

    private readonly HashSet<int> _warned = new();

    private static long Mib(long bytes) => (bytes + (1 << 20) - 1) >> 20;

    public void Dispose() => Store.Dispose();

    /// <summary>The requested outputs of a run (those at <paramref name="offsets"/> when the run computed others first).</summary>
    private class OrtRegionValues(IReadOnlyList<OrtValue> values, int[]? offsets = null) : IRegionValues
    {
        private OrtValue At(int index) => values[offsets == null ? index : offsets[index]];
        public int Count => offsets?.Length ?? values.Count;
        public long[] Shape(int index) => At(index).Shape;
        public float[] ToFloatArray(int index) => At(index).ToFloatArray();
        public ReadOnlySpan<float> Floats(int index) => At(index) is { ElementType: DataType.Float } v ? v.GetSpan<float>() : At(index).ToFloatArray();
        public ReadOnlySpan<long> Int64s(int index) => At(index).GetSpan<long>();
    }

    private sealed class OrtRegionResult(RunResult result) : OrtRegionValues(result), IRegionResult
    {
        public void Dispose() => result.Dispose();
    }

    /// <summary>A region's session; inputs are converted to the element type the region declares (f32 as is, f16 converted).</summary>
    private sealed class OrtRegion(InMemorySession session) : IRegion
    {
        public IRegionResult Run(IReadOnlyList<RegionInput> inputs, IReadOnlyList<string> outputs, DecoderBatch? decoder = null, CancellationToken cancellation = default)
        {
            var s = session.Session;
            var feeds = new List<KeyValuePair<string, OrtValue>>();
            try
            {
                foreach (var input in inputs)
                {
                    var type = s.Inputs.FirstOrDefault(i => i.Name == input.Name)?.ElementType
                        ?? throw new ArgumentException($"region {s.ModelPath} has no input '{input.Name}'");
                    feeds.Add(new(input.Name, type switch
                    {
                        DataType.Float => OrtValue.CreateTensor<float>(input.Data, input.Shape),
                        DataType.Float16 => OrtValue.CreateTensor<Half>(input.Data.ToArray().Select(v => (Half)v).ToArray(), input.Shape),
                        _ => throw new NotSupportedException($"regions take f32 or f16 inputs, not {type.Name()} ({input.Name})"),
                    }));
                }
                if (decoder != null) feeds.AddRange(DecoderFeeds(s, decoder.Structure, decoder.Windows, decoder.First, decoder.Count));
                return new OrtRegionResult(s.Run(feeds, outputs, cancellation));
            }
            finally
            {
                foreach (var f in feeds) f.Value.Dispose();
            }
        }

        public void Dispose() => session.Dispose();
    }
}
