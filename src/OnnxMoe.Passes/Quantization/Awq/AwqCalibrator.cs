using System.Numerics.Tensors;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Passes.Calibration;
using OnnxMoe.Structure;
using Tensor = OnnxMoe.Ir.Tensors.Tensor;

namespace OnnxMoe.Passes.Quantization.Awq;

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
/// Activation-aware weight quantization, the calibration half (FACTS section 2): statistics from the
/// <see cref="IRegionRunner"/>, per-group scale search with the module losses computed by region runs fed trial weights,
/// exact folding into the float model (routers and shared-expert gates compensated, so routing is
/// unchanged), then the per-row-per-block clip search. The quantize-int4 rewrite does the rest.
/// As the <see cref="IAwqCalibration"/> service a compile puts into its <see cref="PassContext"/>, it runs with the pass's own
/// options (grid, duo scaling, clip, sequential) over <see cref="Options"/> and keeps the last result in <see cref="LastResult"/>.
/// </summary>
public sealed class AwqCalibrator : IAwqCalibration
{
    private readonly AwqOptions _options;
    private readonly BlockStateCache _states;
    private readonly Action<AwqProgress>? _progress;
    private readonly Action<string>? _log;

    /// <param name="options">Checked when a run starts (<see cref="AwqOptions.Validate"/>).</param>
    /// <param name="states">The compile's block states; their runner runs every region.</param>
    public AwqCalibrator(AwqOptions options, BlockStateCache states, Action<AwqProgress>? progress = null, Action<string>? log = null)
    {
        _options = options;
        _states = states;
        _progress = progress;
        _log = log;
    }

    public AwqOptions Options => _options;
    /// <summary>The result of the last <see cref="Calibrate"/>, for reports.</summary>
    public AwqResult? LastResult { get; private set; }

    public IReadOnlyDictionary<string, AwqWeightScaling> Calibrate(Model model, QuantizeInt4Options options, AwqSearchSettings search, PassContext context)
    {
        var o = _options with { Search = search };
        var result = new AwqCalibrator(o, _states, _progress, context.Info).Run(model, options, context.CancellationToken);
        foreach (var g in result.Groups)
            context.Info($"awq: {g.Name}: ratio {g.Ratio:0.00}, loss {g.RtnLoss:G4} -> {g.BestLoss:G4}");
        LastResult = result;
        return result.Scaling;
    }

    /// <summary>
    /// Calibrates and folds the scales into <paramref name="model"/> in place (its float function is
    /// unchanged up to rounding), block by block on the states' runner as AutoAWQ runs it: for each decoder
    /// block in order, the statistics of its groups' inputs on the block's input states, the scale search and
    /// fold of its groups, the clip search of its weights, then the block's output handed to the next block
    /// (the float output, or with <see cref="AwqSequential.Quantized"/> the output of the block with its weights
    /// quantized as they will ship). <paramref name="quantization"/> says which weights will be quantized and how
    /// (its AwqScaling is ignored). The model must carry onnxmoe.structure metadata.
    /// </summary>
    public AwqResult Run(Model model, QuantizeInt4Options quantization, CancellationToken cancellation = default)
    {
        _options.Validate();
        var states = _states;
        var runner = states.Runner;
        var format = quantization.Format;
        var selector = new LinearLayerSelector(quantization.Targets, quantization.Exclude);
        var structure = DecoderStructure.Read(model);
        var windows = runner.Windows(_options.Samples, _options.SequenceLength, structure);
        int searchCount = Math.Min(_options.SearchSamples, windows.Count);

        var finder = new ScaleGroupFinder(model, selector);
        var groups = finder.Find();
        foreach (var s in finder.Skipped) _log?.Invoke($"awq: no scaling for {s}");
        var initializers = new HashSet<Value>(model.Graph.Initializers, ReferenceEqualityComparer.Instance);
        var targets = model.Graph.Nodes.Where(n => n.OpType == "MatMul" && n.Domain == "" && selector.IsTarget(n.Name)
            && n.Inputs.Count == 2 && n.Inputs[1] is { ConstValue.Shape.Length: 2 } w && initializers.Contains(w)
            && w.ConstValue.DataType is DataType.Float or DataType.Float16 or DataType.BFloat16).ToList();
        if (targets.Count == 0) throw new UserErrorException("AWQ: the model has no MatMul with a constant weight to quantize (is it already quantized?)");

        // Each group and target belongs to the first block whose region computes it.
        var blockGroups = new List<ScaleGroup>[structure.Blocks.Count];
        var blockTargets = new List<Node>[structure.Blocks.Count];
        var unassignedGroups = new List<ScaleGroup>(groups);
        var unassignedTargets = new List<Node>(targets);
        for (int p = 0; p < structure.Blocks.Count; p++)
        {
            var b = structure.Blocks[p];
            var (nodes, _) = RegionExtractor.Collect([BlockStateCache.Value(model, b.Input)], [BlockStateCache.Value(model, b.Output)]);
            blockGroups[p] = unassignedGroups.Where(g => g.Input.Producer is { } n && nodes.Contains(n)).ToList();
            blockTargets[p] = unassignedTargets.Where(nodes.Contains).ToList();
            unassignedGroups.RemoveAll(blockGroups[p].Contains);
            unassignedTargets.RemoveAll(blockTargets[p].Contains);
        }
        foreach (var g in unassignedGroups) _log?.Invoke($"awq: no scaling for {g.Name}: it is outside the decoder blocks");

        var scaling = new SortedDictionary<string, AwqWeightScaling>(StringComparer.Ordinal);
        var reports = new List<AwqGroupReport>();
        // Scale per linear input (for the clip search: X / s meets the folded W * s).
        var inputScales = new Dictionary<Node, float[]>(ReferenceEqualityComparer.Instance);
        int clipped = 0, groupsDone = 0, targetsDone = 0;
        states.Clear();   // trimming's states: the model is about to change block by block
        var hidden = runner.Embed(model, structure, windows, cancellation);
        try
        {
            for (int p = 0; p < structure.Blocks.Count; p++)
            {
                cancellation.ThrowIfCancellationRequested();
                var captured = new List<Value>();
                void Capture(Value v) { if (!captured.Contains(v)) captured.Add(v); }
                foreach (var g in blockGroups[p]) Capture(g.Input);
                if (_options.Search.ClipSearch) foreach (var t in blockTargets[p].Where(t => !NodeRoles.IsQueryOrKeyProjection(t.Name))) Capture(t.Inputs[0]!);
                var records = new Dictionary<Value, ActivationRecord>(ReferenceEqualityComparer.Instance);
                var output = runner.RunBlock(model, structure, p, hidden, windows, captured, (first, count, values) =>
                {
                    for (int j = 0; j < captured.Count; j++)
                    {
                        var shape = values.Shape(j);
                        if (!records.TryGetValue(captured[j], out var record))
                            records[captured[j]] = record = new ActivationRecord(checked((int)shape[^1]));
                        record.Accumulate(values.ToFloatArray(j), shape, keep: first < searchCount);
                    }
                    // Per block, not per batch: the runner reports the batches, and a second per-batch stage would interleave with its lines.
                    if (first + count == windows.Count)
                        _progress?.Invoke(new AwqProgress("statistics", p + 1, structure.Blocks.Count, $"block {structure.Blocks[p].Index}, {windows.Count} samples"));
                }, keepOutput: _options.Search.Sequential == AwqSequential.Float, batchSize: 1, cancellation: cancellation);
                try
                {
                    foreach (var group in blockGroups[p])
                    {
                        cancellation.ThrowIfCancellationRequested();
                        var report = SearchAndFold(runner, model, structure, group, records[group.Input], windows, searchCount, format, inputScales, cancellation);
                        if (report != null) reports.Add(report);
                        _progress?.Invoke(new AwqProgress("scales", ++groupsDone, groups.Count, group.Name));
                    }
                    // The clip graph is opened for one block: the runtime's buffers for it grow to the largest weight's error tensors.
                    using var clipError = _options.Search.ClipSearch && blockTargets[p].Count > 0 ? new ClipErrorGraph(format.BlockSize, runner, blockTargets[p].Max(t => t.Inputs[1]!.ConstValue!.ElementCount)) : null;
                    foreach (var t in blockTargets[p])
                    {
                        cancellation.ThrowIfCancellationRequested();
                        var w = t.Inputs[1]!;
                        float[]? clip = null;
                        if (clipError != null && !NodeRoles.IsQueryOrKeyProjection(t.Name) && records.TryGetValue(t.Inputs[0]!, out var rec) && rec.Concatenated() is { } x)
                        {
                            clip = clipError.Search(w.ConstValue!, x.Data, rec.Channels, inputScales.GetValueOrDefault(t), format, _options.ClipTokens, _options.ClipMaxShrink);
                            clipped++;
                        }
                        scaling.TryAdd(w.Name, new AwqWeightScaling(null, clip));
                        _progress?.Invoke(new AwqProgress("clip", ++targetsDone, targets.Count, t.Name));
                    }
                    records.Clear();
                    if (_options.Search.Sequential == AwqSequential.Quantized)
                    {
                        var quantized = blockTargets[p].ToDictionary(t => t.Inputs[1]!, t => FakeQuantized(t, scaling[t.Inputs[1]!.Name].ClipMax, format),
                            (IEqualityComparer<Value>)ReferenceEqualityComparer.Instance);
                        output = runner.RunBlock(model, structure, p, hidden, windows, [], null, keepOutput: true, replacements: quantized, cancellation: cancellation)!;
                    }
                }
                catch
                {
                    output?.Dispose();
                    throw;
                }
                hidden.Dispose();
                hidden = output!;
            }
        }
        finally
        {
            hidden.Dispose();
        }
        foreach (var t in unassignedTargets)
        {
            _log?.Invoke($"awq: no clip search for {t.Name}: it is outside the decoder blocks");
            scaling.TryAdd(t.Inputs[1]!.Name, new AwqWeightScaling(null, null));
        }
        return new AwqResult(scaling, reports, finder.Skipped.ToList(), windows.Count, clipped);
    }

    /// <summary>The weight of <paramref name="linear"/> as it will ship (its folded scales, clip and rounding), back in float: what the
    /// next block sees with <see cref="AwqSequential.Quantized"/>. Computed when the block's region is loaded.</summary>
    private static Tensor FakeQuantized(Node linear, float[]? clip, BlockQuantFormat format)
    {
        var weight = linear.Inputs[1]!.ConstValue!;
        var x = linear.Inputs[0]!;
        var scaleType = x.ElementType is { } t && t != DataType.Undefined ? t : weight.DataType;
        var shape = weight.Shape;
        int k = checked((int)shape[0]), n = checked((int)shape[1]);
        return new LazyTensor(weight.DataType, shape, () =>
        {
            var nk = WeightMatrixReader.ReadTransposed(weight);
            var kn = new float[nk.LongLength];
            BlockQuantizer.FakeQuantizeScaledTransposed(nk, n, k, default, format, kn, scaleType, clip ?? default(ReadOnlySpan<float>));
            return GraphBuilder.FloatBytes(weight.DataType, kn);
        }) { Name = weight.Name };
    }

    /// <summary>
    /// Scale search of one group: for each ratio, the module's output error with the group's quantized weights replaced by their trial
    /// Q(W s) / s, then the winning scales folded. A module whose quantized linears split into parts that add into its output (each
    /// routed expert's ScatterND update, a shared expert's Add) runs part by part: each part's trial weights alone are fed to a region
    /// computing only that part's contribution, and the errors are summed into the module's output error, so no trial holds every
    /// expert's weights at once (the sum is exact: the parts are independent and their contributions add). A module whose trial weights
    /// take at most a quarter of <see cref="IRegionRunner.LargeBlockBytes"/> as f32 runs whole, one region run per trial and batch.
    /// </summary>
    private AwqGroupReport? SearchAndFold(IRegionRunner regionRunner, Model model, DecoderStructure structure, ScaleGroup group, ActivationRecord record, CalibrationWindows windows, int searchCount,
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
        var weightType = weights[0].ConstValue!.DataType;
        var wMean = _options.Search.DuoScaling ? WeightChannelMeans(weights, channels, format.BlockSize) : null;
        // A module whose trial weights are small runs whole (one run per trial instead of one per expert); a large one part by part.
        long trialBytes = weights.Sum(w => w.ConstValue!.ElementCount * sizeof(float));
        var parts = trialBytes <= regionRunner.LargeBlockBytes / 4 ? [ModuleParts.Whole(group)] : ModuleParts.Split(group);
        var scales = Enumerable.Range(0, _options.Search.GridPoints).Select(r => Scales(xMean, wMean, (double)r / _options.Search.GridPoints)).ToList();
        var losses = new double[_options.Search.GridPoints];
        var buffers = new TrialBuffers();
        if (parts.Count == 1)
        {
            using var runner = new PartRunner(regionRunner, model, structure, group, parts[0], x, windows, searchCount, buffers, cancellation);
            for (int r = 0; r < losses.Length; r++)
            {
                cancellation.ThrowIfCancellationRequested();
                losses[r] = runner.Loss(Trial(runner, scales[r], channels, format, weightType, buffers));
            }
        }
        else
        {
            // Part by part (one part's weights and opened region resident at a time), each ratio's output error summed over the parts.
            long rows = x.Data.LongLength / channels;
            float[][]? errors = null;
            foreach (var part in parts)
            {
                using (var runner = new PartRunner(regionRunner, model, structure, group, part, x, windows, searchCount, buffers, cancellation))
                {
                    errors ??= Enumerable.Range(0, losses.Length).Select(_ => new float[checked(rows * runner.OutputWidth)]).ToArray();
                    for (int r = 0; r < losses.Length; r++)
                    {
                        cancellation.ThrowIfCancellationRequested();
                        runner.AddError(Trial(runner, scales[r], channels, format, weightType, buffers), errors[r]);
                    }
                }
                if (part.Weights.Sum(w => w.ConstValue!.ByteLength) > regionRunner.LargeBlockBytes / 8) regionRunner.ReleaseMemory();
            }
            for (int r = 0; r < losses.Length; r++) losses[r] = TensorPrimitives.SumOfSquares<float>(errors![r]) / errors[r].Length;
        }

        double best = double.PositiveInfinity, rtn = losses[0], bestRatio = 0;
        float[]? bestScales = null;
        for (int r = 0; r < losses.Length; r++)
        {
            double ratio = (double)r / _options.Search.GridPoints, loss = losses[r];
            if (!double.IsFinite(loss)) throw new InvalidDataException($"AWQ: {group.Name}: loss {loss} at ratio {ratio} (non-finite activations?)");
            if (loss < best)
            {
                best = loss;
                bestRatio = ratio;
                bestScales = scales[r];
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

    /// <summary>The part's trial weights [K, N] for scales <paramref name="s"/>, Q(W s) / s, into <paramref name="buffers"/> (reused across parts and ratios,
    /// so a search allocates nothing per trial).</summary>
    private static List<float[]> Trial(PartRunner runner, float[] s, int channels, BlockQuantFormat format, DataType weightType, TrialBuffers buffers)
    {
        var trial = new List<float[]>();
        for (int j = 0; j < runner.Originals.Count; j++)
        {
            var (original, n) = runner.Originals[j];
            var kn = buffers.Output(j, original.Length);
            BlockQuantizer.FakeQuantizeScaledTransposed(original, n, channels, s, format, kn, weightType);
            trial.Add(kn);
        }
        return trial;
    }

    /// <summary>Scratch arrays of a scale search: one [K, N] output per weight of a part.</summary>
    internal sealed class TrialBuffers
    {
        private readonly List<float[]> _outputs = new();

        public float[] Output(int index, int length)
        {
            while (_outputs.Count <= index) _outputs.Add([]);
            return _outputs[index].Length == length ? _outputs[index] : _outputs[index] = new float[length];
        }
    }

    /// <summary>Weights of at least this many elements make the C# work between two region runs (a trial's weights, a clip step's
    /// errors) long enough that the runtime's threads should sleep rather than spin through it: measured on 2 cores, the 1.2 B medium
    /// model's AWQ (weights of 2.9 M elements) ran 24% faster with them sleeping, tiny-mixtral's (at most 65 K) 15% slower.</summary>
    private const long BusyWeightElements = 1 << 20;

    internal static bool BusyBetweenRuns(long weightElements) => weightElements >= BusyWeightElements;

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

    /// <summary>Duo scaling's wbar: per input channel, mean over all the group's output rows of |w| / (its block's max |w|); one weight read at a time.</summary>
    private static float[] WeightChannelMeans(List<Value> weights, int channels, int blockSize)
    {
        var sum = new double[channels];
        long rows = 0;
        foreach (var weight in weights)
        {
            var w = WeightMatrixReader.ReadTransposed(weight.ConstValue!);   // [N, K]
            int n = (int)weight.ConstValue!.Shape[1];
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
}
