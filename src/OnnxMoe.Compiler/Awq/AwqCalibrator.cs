using System.Numerics.Tensors;
using OnnxMoe.Inference.Tokenization;
using OnnxMoe.Ir;
using OnnxMoe.Passes;
using OnnxMoe.Passes.Quantization;
using OnnxMoe.Runtime;

namespace OnnxMoe.Compiler.Awq;

/// <summary>The scale chosen for one group and the module losses (mean squared error of the module output) it was chosen by.</summary>
/// <param name="Ratio">The winning a of s = xbar^a (0 = plain round-to-nearest).</param>
/// <param name="RtnLoss">Loss at a = 0 (no scaling).</param>
/// <param name="BestLoss">Loss at the winning ratio.</param>
public sealed record AwqGroupReport(string Name, double Ratio, double RtnLoss, double BestLoss, int Linears, int Quantized);

/// <summary>What the AWQ stage did: the per-weight input to quantize-int4 (method=awq) and a report.</summary>
/// <param name="Scaling">By weight initializer name, every quantization target: clip values where a clip search ran. Scales are already folded into the model, so InputScales is null.</param>
public sealed record AwqResult(
    IReadOnlyDictionary<string, AwqWeightScaling> Scaling,
    IReadOnlyList<AwqGroupReport> Groups,
    IReadOnlyList<string> Skipped,
    int CalibrationSamples,
    int ClippedWeights);

/// <summary>
/// Activation-aware weight quantization, the calibration half (FACTS section 2): statistics through
/// ORT, per-group scale search with the module losses computed by ORT sessions fed trial weights,
/// exact folding into the float model (routers and shared-expert gates compensated, so routing is
/// unchanged), then the per-row-per-block clip search. The quantize-int4 rewrite does the rest.
/// </summary>
public sealed class AwqCalibrator
{
    private readonly AwqOptions _options;
    private readonly Action<AwqProgress>? _progress;
    private readonly Action<string>? _log;

    public AwqCalibrator(AwqOptions options, Action<AwqProgress>? progress = null, Action<string>? log = null)
    {
        options.Validate();
        _options = options;
        _progress = progress;
        _log = log;
    }

    /// <summary>
    /// Calibrates and folds the scales into <paramref name="model"/> in place (its float function is
    /// unchanged up to rounding). <paramref name="quantization"/> says which weights will be quantized
    /// and how (its AwqScaling is ignored). The model must carry onnxmoe.structure metadata.
    /// </summary>
    public AwqResult Run(Model model, QuantizeInt4Options quantization, CancellationToken cancellation = default)
    {
        var format = quantization.Format;
        var selector = new LinearLayerSelector(quantization.Targets, quantization.Exclude);
        var tokenizer = Tokenizer.Load(_options.TokenizerPath!);
        var samples = CalibrationSamples.FromText(_options.CalibrationTextPath, tokenizer, _options.Samples, _options.SequenceLength, _log);

        var finder = new ScaleGroupFinder(model, selector);
        var groups = finder.Find();
        foreach (var s in finder.Skipped) _log?.Invoke($"awq: no scaling for {s}");
        var initializers = new HashSet<Value>(model.Graph.Initializers, ReferenceEqualityComparer.Instance);
        var targets = model.Graph.Nodes.Where(n => n.OpType == "MatMul" && n.Domain == "" && selector.IsTarget(n.Name)
            && n.Inputs.Count == 2 && n.Inputs[1] is { ConstValue.Shape.Length: 2 } w && initializers.Contains(w)
            && w.ConstValue.DataType is DataType.Float or DataType.Float16 or DataType.BFloat16).ToList();
        if (targets.Count == 0) throw new UserErrorException("AWQ: the model has no MatMul with a constant weight to quantize (is it already quantized?)");

        var captured = new List<Value>();
        void Capture(Value v) { if (!captured.Contains(v)) captured.Add(v); }
        foreach (var g in groups) Capture(g.Input);
        if (_options.ClipSearch) foreach (var t in targets.Where(t => !IsQueryOrKey(t))) Capture(t.Inputs[0]!);
        var records = ActivationCapture.Run(model, captured, samples, Math.Min(_options.SearchSamples, samples.Count), _options.Session, _progress, cancellation);

        // Scale per linear input (for the clip search: X / s meets the folded W * s).
        var inputScales = new Dictionary<Node, float[]>(ReferenceEqualityComparer.Instance);
        var reports = new List<AwqGroupReport>();
        var searchIds = Enumerable.Range(0, Math.Min(_options.SearchSamples, samples.Count)).ToList();
        for (int gi = 0; gi < groups.Count; gi++)
        {
            cancellation.ThrowIfCancellationRequested();
            var group = groups[gi];
            var report = SearchAndFold(model, group, records[group.Input], samples, searchIds, format, inputScales, cancellation);
            if (report != null) reports.Add(report);
            _progress?.Invoke(new AwqProgress("scales", gi + 1, groups.Count, group.Name));
        }

        var scaling = new SortedDictionary<string, AwqWeightScaling>(StringComparer.Ordinal);
        int clipped = 0;
        using (var clipError = _options.ClipSearch ? new ClipErrorGraph(format.BlockSize, _options.Session) : null)
            for (int ti = 0; ti < targets.Count; ti++)
            {
                cancellation.ThrowIfCancellationRequested();
                var t = targets[ti];
                var w = t.Inputs[1]!;
                float[]? clip = null;
                if (clipError != null && !IsQueryOrKey(t) && records.TryGetValue(t.Inputs[0]!, out var rec) && rec.Concatenated() is { } x)
                {
                    clip = clipError.Search(w.ConstValue!, x.Data, rec.Channels, inputScales.GetValueOrDefault(t), format, _options.ClipTokens, _options.ClipMaxShrink);
                    clipped++;
                }
                scaling.TryAdd(w.Name, new AwqWeightScaling(null, clip));
                _progress?.Invoke(new AwqProgress("clip", ti + 1, targets.Count, t.Name));
            }
        return new AwqResult(scaling, reports, finder.Skipped.ToList(), samples.Count, clipped);
    }

    private static bool IsQueryOrKey(Node n) => n.Name.Contains("/q_proj/", StringComparison.Ordinal) || n.Name.Contains("/k_proj/", StringComparison.Ordinal);

    private AwqGroupReport? SearchAndFold(Model model, ScaleGroup group, ActivationRecord record, CalibrationSamples samples, List<int> searchIds,
        BlockQuantFormat format, Dictionary<Node, float[]> inputScales, CancellationToken cancellation)
    {
        if (record.Concatenated() is not { } x)
        {
            _log?.Invoke($"awq: {group.Name}: no calibration rows reached it; left unscaled");
            return null;
        }
        int channels = record.Channels;
        var xMean = record.MeanAbs();
        var weights = group.Quantized.Select(n => n.Inputs[1]!).ToList();
        var original = weights.Select(w => WeightMatrixReader.ReadTransposed(w.ConstValue!)).ToList();   // [N, K]
        var weightType = weights[0].ConstValue!.DataType;
        var wMean = _options.DuoScaling ? WeightChannelMeans(original, weights, channels, format.BlockSize) : null;

        var module = SubgraphExtractor.Extract(model, [group.Input], [group.ModuleOutput], weights);
        using var session = new InMemorySession(module, _options.Session, "awq_module");
        var fixedInputs = group.ReadsDecoderInputs ? DecoderInputs.Create(session.Session, samples, searchIds) : new Dictionary<string, OrtValue>();
        var xType = session.Session.Inputs.First(i => i.Name == group.Input.Name).ElementType;
        try
        {
            using var xValue = ToOrtValue(x.Data, x.Shape, xType);
            float[] RunModule(IReadOnlyList<float[]> weightsKN)
            {
                var inputs = new List<KeyValuePair<string, OrtValue>> { new(group.Input.Name, xValue) };
                inputs.AddRange(fixedInputs);
                var owned = new List<OrtValue>();
                try
                {
                    for (int j = 0; j < weights.Count; j++)
                    {
                        var shape = weights[j].ConstValue!.Shape;
                        owned.Add(ToOrtValue(weightsKN[j], shape, weightType));
                        inputs.Add(new(weights[j].Name, owned[^1]));
                    }
                    using var result = session.Session.Run(inputs, [group.ModuleOutput.Name], cancellation);
                    return result[0].ToFloatArray();
                }
                finally
                {
                    foreach (var o in owned) o.Dispose();
                }
            }

            var reference = RunModule(original.Select((w, j) => Transpose(w, (int)weights[j].ConstValue!.Shape[1], channels)).ToList());
            var diff = new float[reference.Length];
            double Loss(float[] y)
            {
                TensorPrimitives.Subtract(y, reference, diff);
                return TensorPrimitives.SumOfSquares(diff) / diff.Length;
            }

            double best = double.PositiveInfinity, rtn = double.NaN, bestRatio = 0;
            float[]? bestScales = null;
            for (int r = 0; r < _options.GridPoints; r++)
            {
                double ratio = (double)r / _options.GridPoints;
                var s = Scales(xMean, wMean, ratio);
                var trial = new List<float[]>();
                for (int j = 0; j < weights.Count; j++)
                {
                    int n = (int)weights[j].ConstValue!.Shape[1];
                    var scaled = (float[])original[j].Clone();
                    for (int row = 0; row < n; row++) TensorPrimitives.Multiply(scaled.AsSpan(row * channels, channels), s, scaled.AsSpan(row * channels, channels));
                    BlockQuantizer.FakeQuantize(scaled, n, channels, format, scaled, weightType);
                    for (int row = 0; row < n; row++) TensorPrimitives.Divide(scaled.AsSpan(row * channels, channels), s, scaled.AsSpan(row * channels, channels));
                    trial.Add(Transpose(scaled, n, channels));
                }
                double loss = Loss(RunModule(trial));
                if (r == 0) rtn = loss;
                if (!double.IsFinite(loss)) throw new InvalidDataException($"AWQ: {group.Name}: loss {loss} at ratio {ratio} (non-finite activations?)");
                if (loss < best)
                {
                    best = loss;
                    bestRatio = ratio;
                    bestScales = s;
                }
            }

            if (bestRatio > 0)
            {
                var inverse = bestScales!.Select(v => 1f / v).ToArray();
                if (group.Anchor == ScaleAnchorKind.NormWeight) WeightFolding.ScaleVector(group.AnchorWeight, inverse);
                else
                {
                    WeightFolding.ScaleColumns(group.AnchorWeight, inverse);
                    if (group.AnchorBias != null) WeightFolding.ScaleVector(group.AnchorBias, inverse);
                }
                foreach (var linear in group.Linears)
                {
                    WeightFolding.ScaleRows(linear.Inputs[1]!, bestScales!);
                    inputScales[linear] = bestScales!;
                }
            }
            return new AwqGroupReport(group.Name, bestRatio, rtn, best, group.Linears.Count, group.Quantized.Count);
        }
        finally
        {
            foreach (var v in fixedInputs.Values) v.Dispose();
        }
    }

    /// <summary>s = max(xbar^a [/ (wbar^(1-a) + 1e-4)], 1e-4), normalised by sqrt(max * min).</summary>
    internal static float[] Scales(float[] xMean, float[]? wMean, double ratio)
    {
        var s = new float[xMean.Length];
        for (int i = 0; i < s.Length; i++)
        {
            double v = Math.Pow(xMean[i], ratio);
            if (wMean != null) v /= Math.Pow(wMean[i], 1 - ratio) + 1e-4;
            s[i] = (float)Math.Max(v, 1e-4);
        }
        float norm = MathF.Sqrt(TensorPrimitives.Max(s) * TensorPrimitives.Min(s));
        TensorPrimitives.Divide(s, norm, s);
        return s;
    }

    /// <summary>Duo scaling's wbar: per input channel, mean over all the group's output rows of |w| / (its block's max |w|).</summary>
    private static float[] WeightChannelMeans(List<float[]> weightsNK, List<Value> weights, int channels, int blockSize)
    {
        var sum = new double[channels];
        long rows = 0;
        for (int j = 0; j < weightsNK.Count; j++)
        {
            var w = weightsNK[j];
            int n = (int)weights[j].ConstValue!.Shape[1];
            for (int row = 0; row < n; row++)
                for (int start = 0; start < channels; start += blockSize)
                {
                    var block = w.AsSpan(row * channels + start, Math.Min(blockSize, channels - start));
                    float max = MathF.Max(TensorPrimitives.MaxMagnitude(block) is var m && float.IsFinite(m) ? MathF.Abs(m) : 0f, 1e-12f);
                    for (int i = 0; i < block.Length; i++) sum[start + i] += MathF.Abs(block[i]) / max;
                }
            rows += n;
        }
        return sum.Select(v => (float)(v / rows)).ToArray();
    }

    internal static float[] Transpose(float[] source, int rows, int cols)
    {
        var result = new float[source.LongLength];
        Ir.Tensors.TensorKernels.Transpose<float>(source, rows, cols, result);
        return result;
    }

    internal static OrtValue ToOrtValue(float[] data, long[] shape, DataType type) => type switch
    {
        DataType.Float => OrtValue.CreateTensor<float>(data, shape),
        DataType.Float16 => OrtValue.CreateTensor<Half>(data.Select(v => (Half)v).ToArray(), shape),
        _ => throw new NotSupportedException($"AWQ feeds f32 or f16 tensors, not {type.Name()}"),
    };
}
