using System.Numerics.Tensors;
using OnnxMoe.Compiler.Calibration;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Passes.Quantization;
using OnnxMoe.Runtime;
using OnnxMoe.Structure;

namespace OnnxMoe.Compiler.Awq;

/// <summary>
/// A part of an AWQ module whose quantized weights contribute to the module output additively and independently of the other
/// parts: a routed expert (its <see cref="Output"/> is the update its ScatterND adds at <see cref="Indices"/>), a shared expert (the
/// value an Add joins to the experts' sum), or, when the module does not split, the whole module (<see cref="Output"/> its output).
/// </summary>
internal sealed record ModulePart(IReadOnlyList<Value> Weights, Value Output, Value? Indices);

internal static class ModuleParts
{
    /// <summary>The module's parts: one per ScatterND the quantized linears feed, one per Add joining the rest to the experts' sum; the
    /// whole module as one part when there are no experts or a linear feeds several.</summary>
    public static List<ModulePart> Split(Model model, ScaleGroup group)
    {
        var weights = group.Quantized.Select(n => n.Inputs[1]!).ToList();
        List<ModulePart> Whole() => [new ModulePart(weights, group.ModuleOutput, null)];
        var (nodes, _) = RegionExtractor.Collect(model.Graph, [group.Input], [group.ModuleOutput]);
        var scatters = nodes.Where(n => n.OpType == "ScatterND" && n.Inputs.Count == 3).ToList();
        if (scatters.Count == 0 || group.Quantized.Count < 2) return Whole();

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
                if (ReferenceEquals(v, group.ModuleOutput)) return Whole();   // reaches the output without joining the experts' sum
                foreach (var use in v.Uses)
                {
                    var n = use.Node;
                    if (!nodes.Contains(n)) continue;
                    if (n.OpType == "ScatterND" && use.Index == 2) targets.Add((v, n.Inputs[1]));
                    else if (n.OpType == "ScatterND") return Whole();       // feeds an accumulator or the token indices
                    else if (n.OpType == "Add" && n.Inputs.Any(i => i != null && !ReferenceEquals(i, v) && expertCone.Contains(i))) targets.Add((v, null));
                    else foreach (var o in n.Outputs) walk.Push(o);
                }
            }
            if (targets.Count != 1) return Whole();
            var (output, indices) = targets.First();
            if (!byTarget.TryGetValue(output, out var part)) byTarget[output] = part = (new List<Value>(), indices);
            part.Weights.Add(linear.Inputs[1]!);
        }
        if (byTarget.Count < 2) return Whole();
        // Parts in the order of their weights in the group (the graph's order).
        return byTarget.Select(kv => new ModulePart(kv.Value.Weights, kv.Key, kv.Value.Indices))
            .OrderBy(p => weights.IndexOf(p.Weights[0])).ToList();
    }
}

/// <summary>
/// Runs one <see cref="ModulePart"/> on the group's search activations: a region from the group's input to the part's contribution,
/// the part's weights fed at run time; its reference (original weights) computed once. Owns its session and feeds.
/// </summary>
internal sealed class PartRunner : IDisposable
{
    private readonly ModulePart _part;
    private readonly InMemorySession _session;
    private readonly List<KeyValuePair<string, OrtValue>> _fixed;
    private readonly OrtValue _x;
    private readonly string _inputName;
    private readonly DataType _weightType;
    private readonly CancellationToken _cancellation;
    private readonly float[] _reference;
    private readonly long[]? _indices;

    public PartRunner(Model model, DecoderStructure structure, ScaleGroup group, ModulePart part, (float[] Data, long[] Shape) x,
        CalibrationWindows windows, int searchCount, DataType weightType, SessionConfig? config, AwqCalibrator.TrialBuffers buffers, CancellationToken cancellation)
    {
        _part = part;
        _weightType = weightType;
        _cancellation = cancellation;
        _inputName = group.Input.Name;
        Originals = part.Weights.Select(w => (WeightMatrixReader.ReadTransposed(w.ConstValue!), (int)w.ConstValue!.Shape[1])).ToList();   // [N, K]
        var outputs = part.Indices is { } idx ? new[] { part.Output, idx } : new[] { part.Output };
        _session = new InMemorySession(RegionExtractor.Extract(model, [group.Input], outputs, part.Weights), config, "awq_module");
        // The decoder inputs the region reads (the attention module: mask, positions, empty past); none for an FFN.
        _fixed = CalibrationCore.DecoderFeeds(_session.Session, structure, windows, 0, searchCount);
        var xType = _session.Session.Inputs.First(i => i.Name == _inputName).ElementType;
        _x = AwqCalibrator.ToOrtValue(x.Data, x.Shape, xType);
        int k = (int)part.Weights[0].ConstValue!.Shape[0];
        var originalKN = new List<float[]>();
        for (int j = 0; j < Originals.Count; j++)
        {
            var kn = buffers.Output(j, Originals[j].Data.Length);
            Ir.Tensors.TensorKernels.Transpose<float>(Originals[j].Data, Originals[j].N, k, kn);
            originalKN.Add(kn);
        }
        (_reference, _indices, OutputWidth) = Run(originalKN);
    }

    /// <summary>The part's weights as read before the search, [N, K] each, with N.</summary>
    public List<(float[] Data, int N)> Originals { get; }
    /// <summary>Last dimension of the part's contribution (the module's hidden width).</summary>
    public int OutputWidth { get; }

    /// <summary>Mean squared error of the part's output with <paramref name="trialKN"/> against the reference (a single-part module).</summary>
    public double Loss(List<float[]> trialKN)
    {
        var (y, _, _) = Run(trialKN);
        TensorPrimitives.Subtract(y, _reference, y);
        return TensorPrimitives.SumOfSquares<float>(y) / y.Length;
    }

    /// <summary>Adds the change of the part's contribution with <paramref name="trialKN"/> into <paramref name="error"/> ([tokens, hidden]).</summary>
    public void AddError(List<float[]> trialKN, float[] error)
    {
        var (y, _, _) = Run(trialKN);
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

    private (float[] Output, long[]? Indices, int Width) Run(List<float[]> weightsKN)
    {
        var inputs = new List<KeyValuePair<string, OrtValue>> { new(_inputName, _x) };
        inputs.AddRange(_fixed);
        var owned = new List<OrtValue>();
        try
        {
            for (int j = 0; j < _part.Weights.Count; j++)
            {
                owned.Add(AwqCalibrator.ToOrtValue(weightsKN[j], _part.Weights[j].ConstValue!.Shape, _weightType));
                inputs.Add(new(_part.Weights[j].Name, owned[^1]));
            }
            var names = _part.Indices is { } idx ? new[] { _part.Output.Name, idx.Name } : new[] { _part.Output.Name };
            using var result = _session.Session.Run(inputs, names, _cancellation);
            var shape = result[0].Shape;
            return (result[0].ToFloatArray(), _part.Indices != null ? result[1].ToArray<long>() : null, shape.Length == 0 ? 1 : checked((int)shape[^1]));
        }
        finally
        {
            foreach (var o in owned) o.Dispose();
        }
    }

    public void Dispose()
    {
        _x.Dispose();
        foreach (var f in _fixed) f.Value.Dispose();
        _session.Dispose();
    }
}
