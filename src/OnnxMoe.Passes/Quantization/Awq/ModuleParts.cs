using System.Numerics.Tensors;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Passes.Calibration;
using OnnxMoe.Structure;

namespace OnnxMoe.Passes.Quantization.Awq;

/// <summary>
/// A part of an AWQ module whose quantized weights contribute to the module output additively and independently of the other
/// parts: a routed expert (its <see cref="Output"/> is the update its ScatterND adds at <see cref="Indices"/>), a shared expert (the
/// value an Add joins to the experts' sum), or, when the module does not split, the whole module (<see cref="Output"/> its output).
/// </summary>
internal sealed record ModulePart(IReadOnlyList<Value> Weights, Value Output, Value? Indices);

internal static class ModuleParts
{
    /// <summary>The whole module as one part: every quantized weight of the group, the module's output.</summary>
    public static ModulePart Whole(ScaleGroup group) => new(group.Quantized.Select(n => n.Inputs[1]!).ToList(), group.ModuleOutput, null);

    /// <summary>The module's parts: one per ScatterND the quantized linears feed, one per Add joining the rest to the experts' sum; the
    /// whole module as one part when there are no experts or a linear feeds several.</summary>
    public static List<ModulePart> Split(ScaleGroup group)
    {
        var weights = group.Quantized.Select(n => n.Inputs[1]!).ToList();
        List<ModulePart> whole = [Whole(group)];
        var (nodes, _) = RegionExtractor.Collect([group.Input], [group.ModuleOutput]);
        var scatters = nodes.Where(n => n.OpType == "ScatterND" && n.Inputs.Count == 3).ToList();
        if (scatters.Count == 0 || group.Quantized.Count < 2) return whole;

        // Values computed from an expert's accumulated output.
        var expertCone = new HashSet<Value>(ReferenceEqualityComparer.Instance);
        var pending = new Stack<Value>(scatters.Select(n => n.Outputs[0]));
        while (pending.Count > 0)
        {
            var v = pending.Pop();
            if (!expertCone.Add(v)) continue;
            foreach (var use in v.Uses)
                if (nodes.Contains(use.Node))
                    foreach (var o in use.Node.Outputs) pending.Push(o);
        }

        var byTarget = new Dictionary<Value, (List<Value> Weights, Value? Indices)>(ReferenceEqualityComparer.Instance);
        foreach (var linear in group.Quantized)
        {
            var targets = new HashSet<(Value Output, Value? Indices)>();
            var seen = new HashSet<Value>(ReferenceEqualityComparer.Instance);
            var walk = new Stack<Value>([linear.Outputs[0]]);
            while (walk.Count > 0)
            {
                var v = walk.Pop();
                if (!seen.Add(v)) continue;
                if (ReferenceEquals(v, group.ModuleOutput)) return whole;   // reaches the output without joining the experts' sum
                foreach (var use in v.Uses)
                {
                    var n = use.Node;
                    if (!nodes.Contains(n)) continue;
                    if (n.OpType == "ScatterND" && use.Index == 2) targets.Add((v, n.Inputs[1]));
                    else if (n.OpType == "ScatterND") return whole;       // feeds an accumulator or the token indices
                    else if (n.OpType == "Add" && n.Inputs.Any(i => i != null && !ReferenceEquals(i, v) && expertCone.Contains(i))) targets.Add((v, null));
                    else foreach (var o in n.Outputs) walk.Push(o);
                }
            }
            if (targets.Count != 1) return whole;
            var (output, indices) = targets.First();
            if (!byTarget.TryGetValue(output, out var part)) byTarget[output] = part = (new List<Value>(), indices);
            part.Weights.Add(linear.Inputs[1]!);
        }
        if (byTarget.Count < 2) return whole;
        // Parts in the order of their weights in the group (the graph's order).
        return byTarget.Select(kv => new ModulePart(kv.Value.Weights, kv.Key, kv.Value.Indices))
            .OrderBy(p => weights.IndexOf(p.Weights[0])).ToList();
    }
}

/// <summary>
/// Runs one <see cref="ModulePart"/> on the group's search activations: a region from the group's input to the part's contribution,
/// the part's weights fed at run time; its reference (original weights) computed once. Per-sample activations [n, S, C] run a few
/// samples at a time (<see cref="TokensPerRun"/>), so the module's intermediates (an attention's scores) stay small; samples are
/// independent, so the outputs concatenated equal one run on all of them. Gathered rows [rows, C] run at once. Owns its opened region.
/// </summary>
internal sealed class PartRunner : IDisposable
{
    private readonly ModulePart _part;
    private readonly IRegion _region;
    /// <summary>Per run: the activations, the decoder inputs the region may read (the attention module: mask, positions, empty past)
    /// and the first token it covers.</summary>
    private readonly List<(RegionInput Activations, DecoderBatch Decoder, long FirstToken)> _runs = new();
    private readonly CancellationToken _cancellation;
    private readonly float[] _reference;
    /// <summary>A trial's output, reused: its length is the reference's (the part's weights do not change which rows it computes).</summary>
    private readonly float[] _trial;
    private readonly long[]? _indices;

    /// <summary>Tokens of per-sample activations one run covers (at least one sample).</summary>
    public const int TokensPerRun = 2048;

    public PartRunner(IRegionRunner runner, Model model, DecoderStructure structure, ScaleGroup group, ModulePart part, (float[] Data, long[] Shape) x,
        CalibrationWindows windows, int searchCount, AwqCalibrator.TrialBuffers buffers, CancellationToken cancellation)
    {
        _part = part;
        _cancellation = cancellation;
        Originals = part.Weights.Select(w => (WeightMatrixReader.ReadTransposed(w.ConstValue!), (int)w.ConstValue!.Shape[1])).ToList();   // [N, K]
        var outputs = part.Indices is { } idx ? new[] { part.Output, idx } : new[] { part.Output };
        _region = runner.Open(RegionExtractor.Extract(model, [group.Input], outputs, part.Weights), "awq_module",
            busyBetweenRuns: AwqCalibrator.BusyBetweenRuns(part.Weights.Sum(w => w.ConstValue!.ElementCount)));
        try
        {
            bool perSample = x.Shape.Length == 3;
            int samples = perSample ? checked((int)x.Shape[0]) : 1;
            int step = perSample ? (int)Math.Clamp(TokensPerRun / x.Shape[1], 1, samples) : 1;
            long sampleLength = x.Data.LongLength / samples;
            for (int first = 0; first < samples; first += step)
            {
                int count = Math.Min(step, samples - first);
                var shape = (long[])x.Shape.Clone();
                if (perSample) shape[0] = count;
                var data = x.Data.AsMemory(checked((int)(first * sampleLength)), checked((int)(count * sampleLength)));
                _runs.Add((new RegionInput(group.Input.Name, data, shape), new DecoderBatch(structure, windows, 0, perSample ? count : searchCount),
                    first * sampleLength / x.Shape[^1]));
            }
            int k = (int)part.Weights[0].ConstValue!.Shape[0];
            var originalKN = new List<float[]>();
            for (int j = 0; j < Originals.Count; j++)
            {
                var kn = buffers.Output(j, Originals[j].Data.Length);
                Ir.Tensors.TensorKernels.Transpose<float>(Originals[j].Data, Originals[j].N, k, kn);
                originalKN.Add(kn);
            }
            (_reference, _indices, OutputWidth) = Run(originalKN, null);
            _trial = new float[_reference.Length];
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The part's weights as read before the search, [N, K] each, with N.</summary>
    public List<(float[] Data, int N)> Originals { get; }
    /// <summary>Last dimension of the part's contribution (the module's hidden width).</summary>
    public int OutputWidth { get; }

    /// <summary>Mean squared error of the part's output with <paramref name="trialKN"/> against the reference (a single-part module).</summary>
    public double Loss(List<float[]> trialKN)
    {
        var (y, _, _) = Run(trialKN, _trial);
        TensorPrimitives.Subtract(y, _reference, y);
        return TensorPrimitives.SumOfSquares<float>(y) / y.Length;
    }

    /// <summary>Adds the change of the part's contribution with <paramref name="trialKN"/> into <paramref name="error"/> ([tokens, hidden]).</summary>
    public void AddError(List<float[]> trialKN, float[] error)
    {
        var (y, _, _) = Run(trialKN, _trial);
        TensorPrimitives.Subtract(y, _reference, y);
        if (_indices == null)
        {
            if (y.Length != error.Length) throw new InvalidOperationException($"AWQ module part {_part.Output.Name} has {y.Length} values, the module output {error.Length}");
            TensorPrimitives.Add(error, y, error);
            return;
        }
        int h = OutputWidth;
        for (int i = 0; i < _indices.Length; i++)
        {
            var row = error.AsSpan(checked((int)(_indices[i] * h)), h);
            TensorPrimitives.Add(row, y.AsSpan(i * h, h), row);
        }
    }

    /// <summary>The part's contribution over every run concatenated (into <paramref name="into"/> when given, which must have the
    /// reference's length), the token indices of its rows (a routed expert), and its width.</summary>
    private (float[] Output, long[]? Indices, int Width) Run(List<float[]> weightsKN, float[]? into)
    {
        var outputs = into == null ? new List<float[]>() : null;
        var indices = _part.Indices != null && into == null ? new List<long>() : null;
        int width = 1, at = 0;
        var inputs = new List<RegionInput> { default };
        for (int j = 0; j < _part.Weights.Count; j++) inputs.Add(new RegionInput(_part.Weights[j].Name, weightsKN[j], _part.Weights[j].ConstValue!.Shape));
        var names = _part.Indices is { } idx ? new[] { _part.Output.Name, idx.Name } : new[] { _part.Output.Name };
        foreach (var (activations, decoder, firstToken) in _runs)
        {
            inputs[0] = activations;
            using var result = _region.Run(inputs, names, decoder, _cancellation);
            var shape = result.Shape(0);
            width = shape.Length == 0 ? 1 : checked((int)shape[^1]);
            if (into == null) outputs!.Add(result.ToFloatArray(0));
            else
            {
                var y = result.Floats(0);
                y.CopyTo(into.AsSpan(at));
                at += y.Length;
            }
            if (indices != null) foreach (var t in result.Int64s(1)) indices.Add(t + firstToken);
        }
        if (into != null)
        {
            if (at != into.Length) throw new InvalidOperationException($"AWQ module part {_part.Output.Name} gave {at} values with trial weights, {into.Length} with its own");
            return (into, null, width);
        }
        var output = outputs!.Count == 1 ? outputs[0] : new float[outputs.Sum(o => (long)o.Length)];
        if (outputs.Count > 1)
        {
            long offset = 0;
            foreach (var o in outputs)
            {
                o.CopyTo(output, offset);
                offset += o.Length;
            }
        }
        return (output, indices?.ToArray(), width);
    }

    public void Dispose() => _region?.Dispose();
}
