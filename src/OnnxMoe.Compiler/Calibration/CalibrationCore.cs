using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Runtime;
using OnnxMoe.Structure;

namespace OnnxMoe.Compiler.Calibration;

/// <summary>Progress of a calibration stage: samples of the current pass over the data.</summary>
public readonly record struct CalibrationProgress(string Stage, int SamplesDone, int SamplesTotal);

/// <summary>How the calibration core runs.</summary>
public sealed record CalibrationCoreOptions
{
    /// <summary>Samples per ORT run. Bounds activation memory.</summary>
    public int BatchSize { get; init; } = 1;
    /// <summary>Device and threads of every calibration session; null: CPU with ORT's defaults.</summary>
    public SessionConfig? Session { get; init; }
    /// <summary>Memory for calibration (one block's weights resident, one batch's activations, hidden states); 0: <see cref="CalibrationCore.DefaultMemoryBudget"/>.</summary>
    public long MemoryBudget { get; init; }
    /// <summary>The budget was given by the user: a block that does not fit is an error (otherwise a warning).</summary>
    public bool MemoryBudgetExplicit { get; init; }
    /// <summary>Where hidden states beyond the budget are spilled (default: the system's temporary folder).</summary>
    public string? SpillDirectory { get; init; }
    public Action<CalibrationProgress>? Progress { get; init; }
    public Action<string>? Log { get; init; }
}

/// <summary>
/// The block-sequential calibration executor every calibration consumer runs on (trimming scores,
/// reconstruction errors, AWQ statistics and searches, <c>onnxmoe analyze</c>). It runs a lowered decoder
/// the way it ships, one region at a time: the embedding region, then each decoder block in order
/// with only that block's weights resident (its region extracted from the IR with
/// <see cref="RegionExtractor"/>, so the graph run is the graph that ships), in batches on the
/// current hidden states, handing each consumer the values it asked for and passing the block's
/// output on. Hidden states live in a <see cref="HiddenStateStore"/> (memory up to a budget, spill
/// files beyond). States entering each block are cached by the chain of block fingerprints before
/// it, so a consumer measuring again after a change restarts from the first changed block.
/// </summary>
public sealed class CalibrationCore : IDisposable
{
    private readonly Dictionary<string, HiddenStates> _cache = new(StringComparer.Ordinal);
    private readonly ConditionalWeakTable<Tensor, StrongBox<long>> _tensorIds = new();
    private readonly SessionConfig _session, _unpackedSession;

    /// <summary>Blocks with more weight bytes than this run without ORT's prepacked weight copies, and memory is handed back after them.</summary>
    public const long LargeBlockBytes = 256L << 20;
    private long _nextTensorId;

    public CalibrationCore(CalibrationCorpus corpus, CalibrationCoreOptions? options = null)
    {
        Corpus = corpus;
        Options = options ?? new CalibrationCoreOptions();
        if (Options.BatchSize < 1) throw new ArgumentException("calibration batch size must be at least 1");
        if (Options.MemoryBudget < 0) throw new UserErrorException($"--calibration-memory must be positive, got {Options.MemoryBudget}");
        Budget = Options.MemoryBudget > 0 ? Options.MemoryBudget : DefaultMemoryBudget();
        _session = Options.Session ?? new SessionConfig();
        // A block's session runs a few batches once: ORT's prepacked copies of its weights would double what it holds. Small blocks keep
        // them (faster); the choice depends on the block alone, so the same model gives the same bytes on every machine.
        _unpackedSession = _session.With(("session.disable_prepacking", "1"));
        Store = new HiddenStateStore(Budget, Options.SpillDirectory);
    }

    public CalibrationCorpus Corpus { get; }
    public CalibrationCoreOptions Options { get; }
    public long Budget { get; }
    public HiddenStateStore Store { get; }
    /// <summary>Largest block weights held resident so far (bytes as the graph stores them).</summary>
    public long PeakBlockBytes { get; private set; }
    /// <summary>Blocks run so far (a cached block is not run again).</summary>
    public int BlocksRun { get; private set; }

    /// <summary>Half the memory this process may use (the machine's, or a container's limit), at least 256 MiB.</summary>
    public static long DefaultMemoryBudget() => Math.Max(256L << 20, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 2);

    /// <summary>Hidden states of the residual stream entering block <paramref name="position"/> (in current block order; the
    /// block count for the last block's output), cached; owned by the core (do not dispose).</summary>
    public HiddenStates InputOf(Model model, DecoderStructure s, int position, CalibrationWindows windows, CancellationToken cancellation = default) =>
        InputOf(model, s, position, windows, ChainKeys(model, s, windows), cancellation);

    /// <summary><see cref="InputOf(Model, DecoderStructure, int, CalibrationWindows, CancellationToken)"/> with the model's <see cref="ChainKeys"/> computed already.</summary>
    public HiddenStates InputOf(Model model, DecoderStructure s, int position, CalibrationWindows windows, string[] keys, CancellationToken cancellation = default)
    {
        int start = position;
        while (start >= 0 && !_cache.ContainsKey(keys[start])) start--;
        if (start < 0)
        {
            Cache(keys[0], Embed(model, s, windows, cancellation));
            start = 0;
        }
        for (int p = start; p < position; p++)
            Cache(keys[p + 1], RunBlock(model, s, p, _cache[keys[p]], windows, [], null, keepOutput: true, cancellation: cancellation)!);
        // States of other chains (before a change) are stale now.
        var current = new HashSet<string>(keys, StringComparer.Ordinal);
        string prefix = $"{windows.Id}:";
        foreach (var stale in _cache.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal) && !current.Contains(k)).ToList())
        {
            _cache[stale].Dispose();
            _cache.Remove(stale);
        }
        return _cache[keys[position]];
    }

    /// <summary>Cache keys of the states entering each block position and, last, the last block's output: the window set plus
    /// the fingerprints of the embedding region and every block before.</summary>
    public string[] ChainKeys(Model model, DecoderStructure s, CalibrationWindows windows)
    {
        var keys = new string[s.Blocks.Count + 1];
        var chain = new StringBuilder(Fingerprint(model, [], [Value(model, s.EmbeddingOutput)]));
        keys[0] = $"{windows.Id}:{Hash(chain)}";
        for (int p = 0; p < s.Blocks.Count; p++)
        {
            var b = s.Blocks[p];
            chain.Append('|').Append(Fingerprint(model, [Value(model, b.Input)], [Value(model, b.Output)]));
            keys[p + 1] = $"{windows.Id}:{Hash(chain)}";
        }
        return keys;
    }

    /// <summary>Frees every cached state (a consumer that runs its own chain, as AWQ does, first makes room).</summary>
    public void ClearCache()
    {
        foreach (var states in _cache.Values) states.Dispose();
        _cache.Clear();
    }

    /// <summary>Whether states for <paramref name="key"/> are cached.</summary>
    public bool IsCached(string key) => _cache.ContainsKey(key);

    /// <summary>Keeps <paramref name="states"/> as the states for <paramref name="key"/> (the core owns them from here).</summary>
    public void Cache(string key, HiddenStates states)
    {
        if (_cache.Remove(key, out var old) && !ReferenceEquals(old, states)) old.Dispose();
        _cache[key] = states;
    }

    /// <summary>Runs the embedding region (decoder inputs -> the residual stream entering the first block); the caller owns the result.</summary>
    public HiddenStates Embed(Model model, DecoderStructure s, CalibrationWindows windows, CancellationToken cancellation = default)
    {
        var output = Value(model, s.EmbeddingOutput);
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

    /// <summary>
    /// Runs block <paramref name="position"/> (in current block order) on <paramref name="input"/>: batch by batch, hands the values
    /// <paramref name="outputs"/> (any values the block computes) to <paramref name="use"/> with the batch's first sample and size,
    /// and returns the block's output states when <paramref name="keepOutput"/> (the caller owns them).
    /// <paramref name="replacements"/> swaps weight tensors for this run only (AWQ's quantized block outputs).
    /// </summary>
    public HiddenStates? RunBlock(Model model, DecoderStructure s, int position, HiddenStates input, CalibrationWindows windows,
        IReadOnlyList<Value> outputs, Action<int, int, IReadOnlyList<OrtValue>>? use, bool keepOutput, int? batchSize = null,
        IReadOnlyDictionary<Value, Tensor>? replacements = null, CancellationToken cancellation = default)
    {
        var block = s.Blocks[position];
        var blockInput = Value(model, block.Input);
        var blockOutput = Value(model, block.Output);
        var wanted = new List<Value>();
        if (keepOutput) wanted.Add(blockOutput);
        foreach (var v in outputs) if (!wanted.Contains(v)) wanted.Add(v);
        if (wanted.Count == 0) return null;
        var region = RegionExtractor.Extract(model, [blockInput], wanted, replacements: replacements);
        long weightBytes = region.Graph.Initializers.Sum(v => v.ConstValue?.ByteLength ?? 0);
        CheckFits(weightBytes, block, input);
        bool large = weightBytes > LargeBlockBytes;
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
            RunBatches(session.Session, s, windows, blockInput.Name, input, names, batchSize ?? Options.BatchSize, $"block {block.Index}", cancellation, (first, count, result) =>
            {
                if (keepOutput)
                {
                    var v = result[0];
                    states ??= Store.Allocate(windows.Count, windows.Length, input.Hidden, v.ElementType);
                    states.Write(first, v.GetBytes());
                }
                use?.Invoke(first, count, offsets.Length == wanted.Count ? result : new RunResultView(result, offsets));
            });
            return states;
        }
        catch
        {
            states?.Dispose();
            throw;
        }
    }

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
    public static void ReleaseMemory()
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

    /// <summary>What a region computes: its nodes (op, name, attributes, value names) and the identity of every initializer tensor it reads.</summary>
    private string Fingerprint(Model model, IReadOnlyList<Value> cut, IReadOnlyList<Value> outputs)
    {
        var (nodes, leaves) = RegionExtractor.Collect(model.Graph, cut, outputs);
        var text = new StringBuilder();
        foreach (var n in model.Graph.Nodes)
        {
            if (!nodes.Contains(n)) continue;
            text.Append(n.Domain).Append(':').Append(n.OpType).Append(' ').Append(n.Name).Append('(');
            foreach (var i in n.Inputs) text.Append(i?.Name).Append(',');
            text.Append(")->");
            foreach (var o in n.Outputs) text.Append(o.Name).Append(',');
            foreach (var a in n.Attributes) text.Append(' ').Append(a.Name).Append('=').Append(AttributeText(a));
            text.Append('\n');
        }
        foreach (var v in leaves.OrderBy(v => v.Name, StringComparer.Ordinal))
            text.Append(v.Name).Append('#').Append(v.ConstValue is { } t ? TensorId(t) : -1).Append('\n');
        return Hash(text);
    }

    private string AttributeText(Ir.Attribute a) => a.Value switch
    {
        long[] l => string.Join(",", l),
        float[] f => string.Join(",", f.Select(x => BitConverter.SingleToInt32Bits(x))),
        byte[] b => Convert.ToHexString(b),
        Tensor t => $"tensor#{TensorId(t)}",
        float f => BitConverter.SingleToInt32Bits(f).ToString(),
        null => "",
        var o => o.ToString() ?? "",
    };

    private long TensorId(Tensor t) => _tensorIds.GetValue(t, _ => new StrongBox<long>(Interlocked.Increment(ref _nextTensorId))).Value;

    private static string Hash(StringBuilder text) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));

    internal static Value Value(Model model, string name)
    {
        foreach (var v in model.Graph.Inputs) if (v.Name == name) return v;
        foreach (var n in model.Graph.Nodes)
            foreach (var o in n.Outputs)
                if (o.Name == name) return o;
        throw new InvalidDataException($"structure metadata names value '{name}', which the graph does not have");
    }

    public void Dispose()
    {
        ClearCache();
        Store.Dispose();
    }

    /// <summary>The requested outputs of a run that computed the block output first.</summary>
    private sealed class RunResultView(RunResult inner, int[] offsets) : IReadOnlyList<OrtValue>
    {
        public OrtValue this[int index] => inner[offsets[index]];
        public int Count => offsets.Length;
        public IEnumerator<OrtValue> GetEnumerator() => offsets.Select(o => inner[o]).GetEnumerator();
        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }
}
