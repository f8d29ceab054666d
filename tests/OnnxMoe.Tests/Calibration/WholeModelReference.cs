using OnnxMoe.Compiler;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Passes.Trimming;
using OnnxMoe.Runtime;
using OnnxMoe.Structure;

namespace OnnxMoe.Tests.Calibration;

// The whole-model calibration that the block-sequential core replaced, kept as the reference its scores are checked
// against: probe nodes attached to the full decoder compute every statistic inside one ORT session.

/// <summary>Trimming scores of the whole decoder in one session (the former OrtCalibrationScores.Measure).</summary>
internal sealed class WholeModelScores(IReadOnlyList<int[]> data, int batchSize = 2)
{
    private readonly IReadOnlyList<int[]> _data = data;
    private int BatchSize { get; } = batchSize;

    public TrimmingScores Measure(Model model, IReadOnlyList<int> consecutiveRuns, CancellationToken cancellationToken = default)
    {
        var s = DecoderStructure.Read(model);
        IReadOnlyList<ProbeSegment> segments;
        int length;
        InMemorySession calibration;
        using (var probes = WholeModelProbes.Attach(model, s, consecutiveRuns))
        {
            calibration = new InMemorySession(model, null, "calibration");
            segments = probes.Segments;
            length = probes.StatsLength;
        }
        var sums = new double[length];
        using (calibration)
            RunBatches(calibration.Session, s, [WholeModelProbes.StatsOutput], cancellationToken, result => Accumulate(sums, result[0].GetSpan<float>()));
        return ToScores(s, segments, sums, (long)_data.Count * _data[0].Length);
    }

    /// <summary>Runs every batch of samples through <paramref name="session"/> with an empty KV cache, handing each result to <paramref name="use"/>.</summary>
    private void RunBatches(InferenceSession session, DecoderStructure s, IReadOnlyList<string> outputs,
        CancellationToken cancellationToken, Action<RunResult> use)
    {
        var samples = _data;
        int seq = samples[0].Length;
        var cacheType = s.ComputeType == "f16" ? DataType.Float16 : DataType.Float;
                for (int start = 0; start < samples.Count; start += BatchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int batch = Math.Min(BatchSize, samples.Count - start);
            var ids = new long[batch * seq];
            var positions = new long[batch * seq];
            var mask = new long[batch * seq];
            for (int r = 0; r < batch; r++)
                for (int t = 0; t < seq; t++)
                {
                    ids[r * seq + t] = samples[start + r][t];
                    positions[r * seq + t] = t;
                    mask[r * seq + t] = 1;
                }
            var values = new List<OrtValue>();
            try
            {
                var feeds = new List<KeyValuePair<string, OrtValue>>();
                void Feed(string name, OrtValue v)
                {
                    values.Add(v);
                    feeds.Add(new(name, v));
                }
                Feed("input_ids", OrtValue.CreateTensor<long>(ids.AsMemory(), [batch, seq]));
                Feed("attention_mask", OrtValue.CreateTensor<long>(mask.AsMemory(), [batch, seq]));
                Feed("position_ids", OrtValue.CreateTensor<long>(positions.AsMemory(), [batch, seq]));
                foreach (var blk in s.Blocks)
                {
                    Feed(blk.Attention.PastKey, OrtValue.Allocate(cacheType, [batch, s.NumKeyValueHeads, 0, s.HeadDim]));
                    Feed(blk.Attention.PastValue, OrtValue.Allocate(cacheType, [batch, s.NumKeyValueHeads, 0, s.HeadDim]));
                }
                using var result = session.Run(feeds, outputs, cancellationToken);
                use(result);
            }
            finally
            {
                foreach (var v in values) v.Dispose();
            }
        }
    }

    private static void Accumulate(double[] sums, ReadOnlySpan<float> batch)
    {
        if (batch.Length != sums.Length) throw new InvalidOperationException($"calibration statistics have {batch.Length} values, expected {sums.Length}");
        for (int i = 0; i < sums.Length; i++) sums[i] += batch[i];
    }

    /// <summary>Sums over tokens to <see cref="TrimmingScores"/>: similarities become means, routing stays a sum.</summary>
    internal static TrimmingScores ToScores(DecoderStructure s, IReadOnlyList<ProbeSegment> segments, double[] sums, long tokens)
    {
        var routing = new SortedDictionary<int, double[]>();
        var moe = new SortedDictionary<int, double>();
        var moeNoNorm = new SortedDictionary<int, double>();
        var block = new SortedDictionary<int, double>();
        var runs = new SortedDictionary<int, double[]>();
        foreach (var seg in segments)
        {
            double mean = sums[seg.Offset] / tokens;
            switch (seg.Kind)
            {
                case ProbeKind.Routing: routing[seg.Layer] = sums.AsSpan(seg.Offset, seg.Length).ToArray(); break;
                case ProbeKind.MoeSimilarity: moe[seg.Layer] = mean; break;
                case ProbeKind.MoeSimilarityNoNorm: moeNoNorm[seg.Layer] = mean; break;
                case ProbeKind.BlockSimilarity: block[seg.Layer] = mean; break;
                case ProbeKind.Consecutive:
                    if (!runs.TryGetValue(seg.Run, out var arr)) runs[seg.Run] = arr = new double[s.Blocks.Count - seg.Run + 1];
                    arr[seg.Layer] = mean;
                    break;
            }
        }
        return new TrimmingScores
        {
            Tokens = tokens, ExpertRouting = routing, MoeSimilarity = moe, MoeSimilarityNoNorm = moeNoNorm,
            BlockSimilarity = block, ConsecutiveSimilarity = runs,
        };
    }
}

internal enum ProbeKind
{
    /// <summary>[experts]: full-softmax routing weight per router column, summed over the batch's tokens.</summary>
    Routing,
    /// <summary>[1]: sum over tokens of cos(h, h + MoE(Norm(h))).</summary>
    MoeSimilarity,
    /// <summary>[1]: sum over tokens of cos(Norm(h), MoE(Norm(h))).</summary>
    MoeSimilarityNoNorm,
    /// <summary>[1]: sum over tokens of cos(block input, block output).</summary>
    BlockSimilarity,
    /// <summary>[1]: sum over tokens of cos(input of block at Start, output of block at Start + Run - 1).</summary>
    Consecutive,
}

/// <summary>One segment of the statistics vector: <see cref="Length"/> floats from <see cref="Offset"/>.</summary>
/// <param name="Layer">block index (original layer index); for <see cref="ProbeKind.Consecutive"/> the start position in block order.</param>
/// <param name="Run">run length for <see cref="ProbeKind.Consecutive"/>, else 0.</param>
internal sealed record ProbeSegment(ProbeKind Kind, int Layer, int Run, int Offset, int Length);

/// <summary>
/// Turns a lowered decoder into its calibration copy: probe nodes compute, inside the graph, the per-batch
/// statistics the trimming scores need (cosine similarities summed over tokens, routing weights summed over
/// tokens) into one small f32 output <see cref="StatsOutput"/>, so no hidden state leaves ORT and memory stays
/// bounded whatever the sample count. Optionally exposes MoE inputs as extra outputs (for reconstruction).
/// The probes are added to the model in place and removed again by <see cref="Dispose"/>: use
/// <c>using (CalibrationProbes.Attach(...)) write the model;</c>.
/// </summary>
internal sealed class WholeModelProbes : IDisposable
{
    public const string StatsOutput = "onnxmoe_calibration_stats";

    private readonly Graph _graph;
    private readonly HashSet<Node> _before;
    private readonly int _initializers, _outputs;
    private bool _disposed;

    private WholeModelProbes(Graph graph)
    {
        _graph = graph;
        _before = new HashSet<Node>(graph.Nodes, ReferenceEqualityComparer.Instance);
        _initializers = graph.Initializers.Count;
        _outputs = graph.Outputs.Count;
    }

    public IReadOnlyList<ProbeSegment> Segments { get; private set; } = [];
    public int StatsLength { get; private set; }
    /// <summary>Graph output name of each exposed MoE input ([tokens, hidden] after flattening), by layer index.</summary>
    public IReadOnlyDictionary<int, string> MoeInputOutputs { get; private set; } = new Dictionary<int, string>();

    /// <summary>Adds probes for every block and MoE layer, consecutive runs of <paramref name="runs"/>, and MoE-input outputs for
    /// <paramref name="exposeMoeInputs"/>.</summary>
    public static WholeModelProbes Attach(Model model, DecoderStructure s, IReadOnlyList<int> runs, IReadOnlyList<int>? exposeMoeInputs = null)
    {
        var probes = new WholeModelProbes(model.Graph);
        try
        {
            probes.Build(model.Graph, s, runs, exposeMoeInputs ?? []);
        }
        catch
        {
            probes.Dispose();
            throw;
        }
        return probes;
    }

    private void Build(Graph g, DecoderStructure s, IReadOnlyList<int> runs, IReadOnlyList<int> exposeMoeInputs)
    {
        var values = new Dictionary<string, Value>(StringComparer.Ordinal);
        foreach (var v in g.Inputs) values.TryAdd(v.Name, v);
        foreach (var n in g.Nodes) foreach (var o in n.Outputs) values.TryAdd(o.Name, o);
        Value V(string name) => values.TryGetValue(name, out var v) ? v
            : throw new InvalidDataException($"structure metadata names value '{name}', which the graph does not have");
        var nodes = g.Nodes.Where(n => n.Name.Length > 0).GroupBy(n => n.Name).ToDictionary(x => x.Key, x => x.First(), StringComparer.Ordinal);

        var b = new GraphBuilder(g);
        using var _ = b.PushScope("onnxmoe_calibration");
        var f32 = new Dictionary<Value, Value>(ReferenceEqualityComparer.Instance);
        var norms = new Dictionary<Value, Value>(ReferenceEqualityComparer.Instance);
        Value F(Value v) => f32.TryGetValue(v, out var c) ? c : f32[v] = b.Cast(v, DataType.Float);
        Value Norm(Value v) => norms.TryGetValue(v, out var n) ? n : norms[v] = b.Sqrt(b.ReduceSum(b.Mul(F(v), F(v)), [-1], keepDims: false));
        var eps = b.FloatScalar(1e-30f);
        Value CosSum(Value x, Value y)
        {
            var dot = b.ReduceSum(b.Mul(F(x), F(y)), [-1], keepDims: false);
            var cos = b.Div(dot, b.Clip(b.Mul(Norm(x), Norm(y)), eps, null));
            return b.ReduceSum(b.Reshape(cos, -1), [0], keepDims: true);                       // [1]
        }

        var pieces = new List<Value>();
        var segments = new List<ProbeSegment>();
        int offset = 0;
        void Add(ProbeKind kind, int layer, int run, Value v, int length)
        {
            pieces.Add(v);
            segments.Add(new ProbeSegment(kind, layer, run, offset, length));
            offset += length;
        }

        var exposed = new Dictionary<int, string>();
        foreach (var block in s.Blocks)
        {
            Add(ProbeKind.BlockSimilarity, block.Index, 0, CosSum(V(block.Input), V(block.Output)), 1);
            if (block.Ffn is not { Kind: FfnKind.Moe, Moe: { } moe } ffn) continue;
            var h = V(block.Attention.Output);
            var x = V(ffn.Input);
            var m = V(ffn.Output);
            Add(ProbeKind.MoeSimilarity, block.Index, 0, CosSum(h, b.Add(F(h), F(m))), 1);
            Add(ProbeKind.MoeSimilarityNoNorm, block.Index, 0, CosSum(x, m), 1);
            if (!nodes.TryGetValue(moe.RouterMatMul, out var router))
                throw new InvalidDataException($"structure metadata names router node '{moe.RouterMatMul}', which the graph does not have");
            var probs = b.Softmax(F(router.Outputs[0]), -1);
            Add(ProbeKind.Routing, block.Index, 0, b.ReduceSum(b.Reshape(probs, -1, moe.ExpertIds.Count), [0], keepDims: false), moe.ExpertIds.Count);
            if (exposeMoeInputs.Contains(block.Index))
            {
                var flat = b.Reshape(x, -1, s.HiddenSize);
                b.AddOutput(flat, $"onnxmoe_calibration_moe_input.{block.Index}");
                exposed[block.Index] = flat.Name;
            }
        }
        foreach (var run in runs.Distinct().Order())
            for (int start = 0; start + run <= s.Blocks.Count; start++)
                Add(ProbeKind.Consecutive, start, run, CosSum(V(s.Blocks[start].Input), V(s.Blocks[start + run - 1].Output)), 1);

        var stats = pieces.Count == 1 ? b.Identity(pieces[0]) : b.Concat(0, pieces.ToArray());
        b.AddOutput(stats, StatsOutput, offset);
        Segments = segments;
        StatsLength = offset;
        MoeInputOutputs = exposed;
    }

    /// <summary>Removes every probe node, initializer and output again, leaving the model as it was.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        while (_graph.Outputs.Count > _outputs) _graph.Outputs.RemoveAt(_graph.Outputs.Count - 1);
        foreach (var n in _graph.Nodes.Reverse().ToList())
            if (!_before.Contains(n)) _graph.Remove(n);
        _graph.Initializers.RemoveRange(_initializers, _graph.Initializers.Count - _initializers);
    }
}
