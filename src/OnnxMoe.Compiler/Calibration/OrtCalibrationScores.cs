using System.Numerics.Tensors;
using OnnxMoe.Ir;
using OnnxMoe.Onnx;
using OnnxMoe.Passes.Trimming;
using OnnxMoe.Runtime;
using OnnxMoe.Structure;

namespace OnnxMoe.Compiler.Calibration;

/// <summary>Progress of one calibration pass over the samples.</summary>
/// <param name="Stage">what is being measured ("scores", "reconstruction layer 3").</param>
public readonly record struct CalibrationProgress(string Stage, int SamplesDone, int SamplesTotal);

/// <summary>How calibration runs: batch size, ORT session settings, where temporary models go, progress.</summary>
public sealed record CalibrationOptions
{
    /// <summary>Samples per ORT run (each of the data's sequence length). Bounds activation memory.</summary>
    public int BatchSize { get; init; } = 1;
    public SessionConfig? Session { get; init; }
    public Action<CalibrationProgress>? Progress { get; init; }
}

/// <summary>
/// <see cref="ICalibrationScores"/> over ORT: each measurement opens an in-memory session on the model's calibration copy (see
/// <see cref="CalibrationProbes"/>, <see cref="InMemorySession"/>), runs it on the calibration samples in batches and
/// accumulates the probes' per-batch sums in double. Nothing per token is kept, so memory is one batch's
/// activations. Reconstruction errors run each MoE layer alone (<see cref="MoeLayerModel"/>) on the layer's
/// inputs, batch by batch, once per candidate subset.
/// </summary>
public sealed class OrtCalibrationScores : ICalibrationScores
{
    private readonly CalibrationData _data;
    private readonly CalibrationOptions _options;

    public OrtCalibrationScores(CalibrationData data, CalibrationOptions? options = null)
    {
        _data = data;
        _options = options ?? new CalibrationOptions();
        if (_options.BatchSize < 1) throw new ArgumentException("calibration batch size must be at least 1");
    }

    public CalibrationData Data => _data;

    public TrimmingScores Measure(Model model, IReadOnlyList<int> consecutiveRuns, CancellationToken cancellationToken = default)
    {
        var s = DecoderStructure.Read(model);
        IReadOnlyList<ProbeSegment> segments;
        int length;
        InMemorySession calibration;
        using (var probes = CalibrationProbes.Attach(model, s, consecutiveRuns))
        {
            calibration = new InMemorySession(model, _options.Session, "calibration");
            segments = probes.Segments;
            length = probes.StatsLength;
        }
        var sums = new double[length];
        using (calibration)
            RunBatches(calibration.Session, s, [CalibrationProbes.StatsOutput], "scores", cancellationToken, result => Accumulate(sums, result[0].GetSpan<float>()));
        return ToScores(s, segments, sums, _data.TokenCount);
    }

    public IReadOnlyList<double> ReconstructionErrors(Model model, int layer, IReadOnlyList<IReadOnlyList<int>> keptExperts,
        CancellationToken cancellationToken = default)
    {
        var s = DecoderStructure.Read(model);
        var moe = s.Blocks.FirstOrDefault(b => b.Index == layer)?.Ffn?.Moe ?? throw new ArgumentException($"layer {layer} is not an MoE layer");
        var masks = keptExperts.Select(kept =>
        {
            var m = new float[moe.ExpertIds.Count];
            for (int c = 0; c < m.Length; c++) m[c] = kept.Contains(moe.ExpertIds[c]) ? 0f : float.NegativeInfinity;
            return m;
        }).ToList();
        string exposed;
        InMemorySession fullModel;
        using (var probes = CalibrationProbes.Attach(model, s, [], [layer]))
        {
            fullModel = new InMemorySession(model, _options.Session, "calibration");
            exposed = probes.MoeInputOutputs[layer];
        }
        using var full = fullModel;
        using var moeLayer = new InMemorySession(MoeLayerModel.Extract(model, s, layer), _options.Session, "moe");
        var errors = new double[masks.Count];
        var fullSession = full.Session;
        var moeSession = moeLayer.Session;
        var zero = new float[moe.ExpertIds.Count];
        RunBatches(fullSession, s, [exposed], $"reconstruction layer {layer}", cancellationToken, result =>
                 {
                     var x = result[0];
                     float[] reference = RunMoe(moeSession, x, zero);
                     var diff = new float[reference.Length];
                     for (int k = 0; k < masks.Count; k++)
                     {
                         TensorPrimitives.Subtract(RunMoe(moeSession, x, masks[k]), reference, diff);
                         errors[k] += TensorPrimitives.SumOfSquares<float>(diff);
                     }
                 });
        return errors;
    }

    private static float[] RunMoe(InferenceSession session, OrtValue x, float[] mask)
    {
        using var m = OrtValue.CreateTensor<float>(mask.AsMemory(), [mask.Length]);
        using var r = session.Run([new(MoeLayerModel.Input, x), new(MoeLayerModel.Mask, m)], [MoeLayerModel.Output]);
        return r[0].ToFloatArray();
    }

    /// <summary>Runs every batch of samples through <paramref name="session"/> with an empty KV cache, handing each result to <paramref name="use"/>.</summary>
    private void RunBatches(InferenceSession session, DecoderStructure s, IReadOnlyList<string> outputs, string stage,
        CancellationToken cancellationToken, Action<RunResult> use)
    {
        var samples = _data.Samples;
        int seq = _data.SequenceLength;
        var cacheType = s.ComputeType == "f16" ? DataType.Float16 : DataType.Float;
        _options.Progress?.Invoke(new CalibrationProgress(stage, 0, samples.Count));
        for (int start = 0; start < samples.Count; start += _options.BatchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int batch = Math.Min(_options.BatchSize, samples.Count - start);
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
            _options.Progress?.Invoke(new CalibrationProgress(stage, start + batch, samples.Count));
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
