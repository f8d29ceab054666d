using System.Numerics.Tensors;
using OnnxMoe.Ir;
using OnnxMoe.Passes.Calibration;
using OnnxMoe.Structure;

namespace OnnxMoe.Passes.Trimming;

/// <summary>
/// <see cref="ICalibrationScores"/> measured block by block on an <see cref="IRegionRunner"/>: per MoE block the attention output h,
/// the FFN input x, the FFN output m and the router logits are handed back per batch and reduced at once (cosine similarities and
/// routing weights summed over tokens, in double), and block and consecutive-run similarities compare the cached states entering
/// each block (<see cref="BlockStateCache"/>). A block whose chain is unchanged since the last measurement is not run again
/// (iterative selection restarts from the first changed block). Reconstruction errors run the layer's MoE alone
/// (<see cref="MoeLayerModel"/>) on its own inputs, batch by batch, once per candidate subset.
/// </summary>
public sealed class TrimmingScorer : ICalibrationScores
{
    private readonly BlockStateCache _states;
    private readonly int _samples, _seqLen;
    private CalibrationWindows? _windows;
    private readonly Dictionary<string, BlockSums> _blockSums = new(StringComparer.Ordinal);

    /// <param name="states">The compile's block states (shared with AWQ and other consumers).</param>
    /// <param name="samples">Windows: the recipe's samples x seq-len (at most the model's context), cut when first measured.</param>
    public TrimmingScorer(BlockStateCache states, int samples, int seqLen)
    {
        _states = states;
        _samples = samples;
        _seqLen = seqLen;
    }

    /// <summary>The windows scores were measured on; null before the first measurement.</summary>
    public CalibrationWindows? Windows => _windows;

    private CalibrationWindows WindowsFor(DecoderStructure s) => _windows ??= _states.Runner.Windows(_samples, _seqLen, s);

    public TrimmingScores Measure(Model model, IReadOnlyList<int> consecutiveRuns, CancellationToken cancellationToken = default)
    {
        var s = DecoderStructure.Read(model);
        var w = WindowsFor(s);
        var keys = _states.ChainKeys(model, s, w);
        var routing = new SortedDictionary<int, double[]>();
        var moe = new SortedDictionary<int, double>();
        var moeNoNorm = new SortedDictionary<int, double>();
        for (int p = 0; p < s.Blocks.Count; p++)
        {
            var block = s.Blocks[p];
            if (!_blockSums.TryGetValue(keys[p + 1], out var sums) || !_states.IsCached(keys[p + 1]))
            {
                sums = RunBlock(model, s, p, w, keys, cancellationToken);
                _blockSums[keys[p + 1]] = sums;
            }
            if (sums.Routing is { } r)
            {
                routing[block.Index] = r;
                moe[block.Index] = sums.MoeSimilarity / w.TokenCount;
                moeNoNorm[block.Index] = sums.MoeSimilarityNoNorm / w.TokenCount;
            }
        }
        var current = new HashSet<string>(keys, StringComparer.Ordinal);
        foreach (var stale in _blockSums.Keys.Where(k => !current.Contains(k)).ToList()) _blockSums.Remove(stale);

        var block1 = new SortedDictionary<int, double>();
        var runs = new SortedDictionary<int, double[]>();
        var pairs = new Dictionary<(int, int), double>();
        double Pair(int from, int to)
        {
            if (!pairs.TryGetValue((from, to), out var v))
                pairs[(from, to)] = v = CosineSum(_states.InputOf(model, s, from, w, keys, cancellationToken), _states.InputOf(model, s, to, w, keys, cancellationToken)) / w.TokenCount;
            return v;
        }
        for (int p = 0; p < s.Blocks.Count; p++) block1[s.Blocks[p].Index] = Pair(p, p + 1);
        foreach (var n in consecutiveRuns.Distinct().Order())
        {
            if (n < 1 || n > s.Blocks.Count) continue;
            var arr = new double[s.Blocks.Count - n + 1];
            for (int start = 0; start + n <= s.Blocks.Count; start++) arr[start] = Pair(start, start + n);
            runs[n] = arr;
        }
        return new TrimmingScores
        {
            Tokens = w.TokenCount, ExpertRouting = routing, MoeSimilarity = moe, MoeSimilarityNoNorm = moeNoNorm,
            BlockSimilarity = block1, ConsecutiveSimilarity = runs,
        };
    }

    /// <summary>Runs block <paramref name="p"/> on its cached input, caching its output and reducing its MoE values.</summary>
    private BlockSums RunBlock(Model model, DecoderStructure s, int p, CalibrationWindows w, string[] keys, CancellationToken cancellation)
    {
        var block = s.Blocks[p];
        var input = _states.InputOf(model, s, p, w, keys, cancellation);
        var sums = new BlockSums();
        var outputs = new List<Value>();
        if (block.Ffn is { Kind: FfnKind.Moe, Moe: { } moe } ffn)
        {
            var router = model.Graph.Nodes.FirstOrDefault(n => n.Name == moe.RouterMatMul)
                ?? throw new InvalidDataException($"structure metadata names router node '{moe.RouterMatMul}', which the graph does not have");
            outputs.AddRange([BlockStateCache.Value(model, block.Attention.Output), BlockStateCache.Value(model, ffn.Input),
                BlockStateCache.Value(model, ffn.Output), router.Outputs[0]]);
            sums.Routing = new double[moe.ExpertIds.Count];
        }
        var output = _states.Runner.RunBlock(model, s, p, input, w, outputs, outputs.Count == 0 ? null : (_, _, values) =>
        {
            var h = values.ToFloatArray(0);
            var x = values.ToFloatArray(1);
            var m = values.ToFloatArray(2);
            int hidden = s.HiddenSize;
            var hm = new float[hidden];
            for (long t = 0; t < h.LongLength / hidden; t++)
            {
                var ht = h.AsSpan((int)(t * hidden), hidden);
                var mt = m.AsSpan((int)(t * hidden), hidden);
                TensorPrimitives.Add(ht, mt, hm);
                sums.MoeSimilarity += Cosine(ht, hm);
                sums.MoeSimilarityNoNorm += Cosine(x.AsSpan((int)(t * hidden), hidden), mt);
            }
            var logits = values.ToFloatArray(3);
            int experts = sums.Routing!.Length;
            var probs = new float[experts];
            for (long t = 0; t < logits.LongLength / experts; t++)
            {
                TensorPrimitives.SoftMax(logits.AsSpan((int)(t * experts), experts), probs);
                for (int e = 0; e < experts; e++) sums.Routing[e] += probs[e];
            }
        }, keepOutput: true, cancellation: cancellation)!;
        _states.Cache(keys[p + 1], output);
        return sums;
    }

    public IReadOnlyList<double> ReconstructionErrors(Model model, int layer, IReadOnlyList<IReadOnlyList<int>> keptExperts,
        CancellationToken cancellationToken = default)
    {
        var s = DecoderStructure.Read(model);
        int p = s.Blocks.FindIndex(b => b.Index == layer);
        var ffn = p >= 0 ? s.Blocks[p].Ffn : null;
        var moe = ffn?.Moe ?? throw new ArgumentException($"layer {layer} is not an MoE layer");
        var masks = keptExperts.Select(kept =>
        {
            var m = new float[moe.ExpertIds.Count];
            for (int c = 0; c < m.Length; c++) m[c] = kept.Contains(moe.ExpertIds[c]) ? 0f : float.NegativeInfinity;
            return m;
        }).ToList();
        var w = WindowsFor(s);
        var keys = _states.ChainKeys(model, s, w);
        var input = _states.InputOf(model, s, p, w, keys, cancellationToken);
        using var moeLayer = _states.Runner.Open(MoeLayerModel.Extract(model, s, layer), "moe");
        var errors = new double[masks.Count];
        var zero = new float[moe.ExpertIds.Count];
        var output = _states.Runner.RunBlock(model, s, p, input, w, [BlockStateCache.Value(model, ffn!.Input)], (_, _, values) =>
        {
            var x = new RegionInput(MoeLayerModel.Input, values.ToFloatArray(0), values.Shape(0));
            float[] reference = RunMoe(moeLayer, x, zero, cancellationToken);
            var diff = new float[reference.Length];
            for (int k = 0; k < masks.Count; k++)
            {
                TensorPrimitives.Subtract(RunMoe(moeLayer, x, masks[k], cancellationToken), reference, diff);
                errors[k] += TensorPrimitives.SumOfSquares<float>(diff);
            }
        }, keepOutput: !_states.IsCached(keys[p + 1]), cancellation: cancellationToken);
        if (output != null) _states.Cache(keys[p + 1], output);
        return errors;
    }

    private static float[] RunMoe(IRegion moeLayer, RegionInput x, float[] mask, CancellationToken cancellation)
    {
        using var r = moeLayer.Run([x, new RegionInput(MoeLayerModel.Mask, mask, [mask.Length])], [MoeLayerModel.Output], cancellation: cancellation);
        return r.ToFloatArray(0);
    }

    /// <summary>Sum over tokens of cos(a_t, b_t), the two states read sample by sample.</summary>
    private static double CosineSum(IHiddenStates a, IHiddenStates b)
    {
        double sum = 0;
        int hidden = a.Hidden;
        for (int i = 0; i < a.Count; i++)
        {
            var x = a.ReadFloats(i, 1);
            var y = b.ReadFloats(i, 1);
            for (int t = 0; t < a.Length; t++) sum += Cosine(x.AsSpan(t * hidden, hidden), y.AsSpan(t * hidden, hidden));
        }
        return sum;
    }

    /// <summary>cos(x, y) as the in-graph probes computed it: dot / max(|x| |y|, 1e-30), in f32.</summary>
    private static double Cosine(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        float dot = TensorPrimitives.Dot(x, y);
        float norms = MathF.Sqrt(TensorPrimitives.Dot(x, x)) * MathF.Sqrt(TensorPrimitives.Dot(y, y));
        return dot / MathF.Max(norms, 1e-30f);
    }

    private sealed class BlockSums
    {
        public double[]? Routing;
        public double MoeSimilarity, MoeSimilarityNoNorm;
    }
}
