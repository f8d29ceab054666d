using OnnxMoe.Ir;
using Attribute = OnnxMoe.Ir.Attribute;

namespace OnnxMoe.Passes.Quantization;

/// <summary>A target MatMul that was left in full precision, and why (the failed check).</summary>
public sealed record SkippedLinear(string NodeName, string Reason);

/// <summary>What one run of the rewrite did. Byte counts are raw tensor bytes (weights shared by several MatMuls count once).</summary>
public sealed record QuantizeInt4Result(
    bool Changed,
    int MatMulsQuantized,
    int WeightsQuantized,
    long BytesBefore,
    long BytesAfter,
    IReadOnlyList<SkippedLinear> Skipped);

/// <summary>
/// Replaces <c>MatMul(x, W)</c>, W a constant [K, N] initializer selected by name, with com.microsoft
/// <c>MatMulNBits(x, B, scales[, zero_points])</c>. B, scales and zero points are lazy tensors: W's
/// bytes are read and quantized only when the writer streams them, one weight at a time.
/// Node names keep their prefix (<c>.../w1/MatMul</c> becomes <c>.../w1/MatMulNBits</c>); the output
/// value keeps its name and type; every reader of the old output now reads the new one.
/// </summary>
public sealed class QuantizeInt4Rewrite
{
    public const string MicrosoftDomain = "com.microsoft";
    public const string OpType = "MatMulNBits";

    /// <summary>Validates <paramref name="options"/> (throws <see cref="UserErrorException"/> on bad ones).</summary>
    public QuantizeInt4Rewrite(QuantizeInt4Options options)
    {
        options.Validate();
        Options = options;
    }

    public QuantizeInt4Options Options { get; }

    /// <summary>
    /// Rewrites the main graph of <paramref name="model"/> in place. Throws
    /// <see cref="InvalidDataException"/> when the model already holds MatMulNBits and no target
    /// MatMul is left, and <see cref="UserErrorException"/> when AWQ scales do not fit the model.
    /// </summary>
    public QuantizeInt4Result Apply(Model model)
    {
        var graph = model.Graph;
        var format = Options.Format;
        var selector = new LinearLayerSelector(Options.Targets, Options.Exclude);
        var initializers = new HashSet<Value>(graph.Initializers, ReferenceEqualityComparer.Instance);
        var graphInputs = new HashSet<Value>(graph.Inputs, ReferenceEqualityComparer.Instance);

        var targets = new List<Node>();
        var skipped = new List<SkippedLinear>();
        foreach (var node in graph.Nodes)
        {
            if (!IsMatMul(node) || !selector.IsTarget(node.Name)) continue;
            // Activation x activation products (attention scores) are not linear layers: nothing to report.
            if (node.Inputs.Count == 2 && node.Inputs[1] is { ConstValue: null } && node.Inputs[1]!.Producer != null) continue;
            var why = CheckEligible(node, initializers, graphInputs);
            if (why == null) targets.Add(node); else skipped.Add(new SkippedLinear(node.Name, why));
        }

        if (targets.Count == 0)
        {
            int quantized = graph.Nodes.Count(n => n.Domain == MicrosoftDomain && n.OpType == OpType);
            if (quantized > 0)
                throw new InvalidDataException($"model is already quantized: it has {quantized} MatMulNBits nodes and no target MatMul with a constant weight left to quantize");
            return new QuantizeInt4Result(false, 0, 0, 0, 0, skipped);
        }

        CheckAwqScaling(targets, format);

        var names = NameAuthority.ForGraph(graph);
        var replaced = new Dictionary<Value, Value?[]>(ReferenceEqualityComparer.Instance);
        var weightOrder = new List<Value>();
        long bytesBefore = 0, bytesAfter = 0;
        foreach (var node in targets)
        {
            var x = node.Inputs[0]!;
            var w = node.Inputs[1]!;
            var weightTensor = w.ConstValue!;
            if (!replaced.TryGetValue(w, out var packed))
            {
                var scaleType = x.ElementType is { } t && t != DataType.Undefined ? t : weightTensor.DataType;
                AwqWeightScaling? awq = null;
                Options.AwqScaling?.TryGetValue(w.Name, out awq);
                var deferred = new DeferredQuantization(w.Name, weightTensor, format, scaleType, awq);
                var tensors = new Ir.Tensors.Tensor?[]
                {
                    deferred.CodesTensor(names.Unique($"{w.Name}.q{format.Bits}")),
                    deferred.ScalesTensor(names.Unique($"{w.Name}.scales")),
                    deferred.ZeroPointsTensor(format.Symmetric ? "" : names.Unique($"{w.Name}.zero_points")),
                };
                packed = tensors.Select(t => t == null ? null : new Value(t.Name!, null, t)).ToArray();
                int at = graph.Initializers.IndexOf(w) + 1;
                foreach (var v in packed)
                    if (v != null)
                    {
                        graph.Initializers.Insert(at++, v);
                        bytesAfter += v.ConstValue!.ByteLength;
                    }
                bytesBefore += weightTensor.ByteLength;
                replaced[w] = packed;
                weightOrder.Add(w);
            }

            var old = node.Outputs[0];
            var output = new Value(old.Name, old.Type) { DocString = old.DocString, MetadataProps = old.MetadataProps };
            var inputs = new List<Value?> { x, packed[0], packed[1] };
            if (packed[2] != null) inputs.Add(packed[2]);
            var nbits = new Node(MicrosoftDomain, OpType, inputs, [output], names.Unique(RenameNode(node.Name)))
            {
                DocString = node.DocString,
                MetadataProps = node.MetadataProps,
            };
            nbits.SetAttribute(Attribute.Int("K", w.ConstValue!.Shape[0]))
                .SetAttribute(Attribute.Int("N", w.ConstValue!.Shape[1]))
                .SetAttribute(Attribute.Int("bits", format.Bits))
                .SetAttribute(Attribute.Int("block_size", format.BlockSize))
                .SetAttribute(Attribute.Int("accuracy_level", Options.AccuracyLevel));
            graph.InsertBefore(node, nbits);
            old.ReplaceAllUsesWith(output);
            int info = graph.ValueInfos.IndexOf(old);
            if (info >= 0) graph.ValueInfos[info] = output;
            graph.Remove(node);
        }

        foreach (var w in weightOrder)
            if (w.Uses.Count == 0 && !w.IsGraphOutput) graph.Initializers.Remove(w);
        if (model.GetOpset(MicrosoftDomain) == null) model.SetOpset(MicrosoftDomain, 1);

        return new QuantizeInt4Result(true, targets.Count, weightOrder.Count, bytesBefore, bytesAfter, skipped);
    }

    private static bool IsMatMul(Node node) => node.OpType == "MatMul" && node.Domain is "" or "ai.onnx";

    /// <summary><c>.../w1/MatMul</c> becomes <c>.../w1/MatMulNBits</c>; other names get the suffix.</summary>
    internal static string RenameNode(string name)
    {
        if (name.Length == 0) return OpType;
        return name.EndsWith("MatMul", StringComparison.Ordinal) ? name + "NBits" : name + "/" + OpType;
    }

    /// <summary>Null when the MatMul can become MatMulNBits, else why not.</summary>
    private static string? CheckEligible(Node node, HashSet<Value> initializers, HashSet<Value> graphInputs)
    {
        if (node.Inputs.Count != 2 || node.Inputs[0] == null || node.Inputs[1] == null || node.Outputs.Count != 1)
            return "not a two-input MatMul";
        var x = node.Inputs[0]!;
        var w = node.Inputs[1]!;
        if (w.ConstValue == null || !initializers.Contains(w)) return $"weight {w.Name} is not an initializer";
        if (graphInputs.Contains(w)) return $"weight {w.Name} is also a graph input (it can be overridden at run time)";
        var t = w.ConstValue;
        if (t.Shape.Length != 2) return $"weight {w.Name} has rank {t.Shape.Length}, not 2";
        if (t.DataType is not (DataType.Float or DataType.Float16 or DataType.BFloat16))
            return $"weight {w.Name} is {t.DataType.Name()}, not f32, f16 or bf16";
        long k = t.Shape[0], n = t.Shape[1];
        if (k == 0 || n == 0) return $"weight {w.Name} is empty";
        if (k * n > Array.MaxLength || k > int.MaxValue || n > int.MaxValue) return $"weight {w.Name} has {k * n} elements: too many to quantize as one matrix";
        if (x.ElementType is { } xt && xt != DataType.Undefined && xt != t.DataType)
            return $"activation {x.Name} is {xt.Name()} but weight {w.Name} is {t.DataType.Name()}";
        if (x.Shape is { } shape)
        {
            if (shape.Count < 2) return $"activation {x.Name} has rank {shape.Count}; MatMulNBits needs rank 2 or more";
            if (shape[^1].Value is { } last && last != k) return $"activation {x.Name} has last dimension {last}, weight {w.Name} has K={k}";
        }
        return null;
    }

    private void CheckAwqScaling(List<Node> targets, BlockQuantFormat format)
    {
        if (Options.AwqScaling is not { Count: > 0 } awq) return;
        var weights = targets.Select(n => n.Inputs[1]!).GroupBy(w => w.Name).ToDictionary(g => g.Key, g => g.First().ConstValue!);
        foreach (var (name, scaling) in awq.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (!weights.TryGetValue(name, out var w))
                throw new UserErrorException($"AWQ scales were given for weight '{name}', which is not a quantization target of this model");
            long k = w.Shape[0], n = w.Shape[1];
            if (scaling.InputScales is { } s)
            {
                if (s.Length != k) throw new UserErrorException($"AWQ input scales for weight '{name}' hold {s.Length} values, K is {k}");
                foreach (var v in s)
                    if (!(v > 0) || !float.IsFinite(v)) throw new UserErrorException($"AWQ input scales for weight '{name}' contain {v}; they must be positive and finite");
            }
            if (scaling.ClipMax is { } c)
            {
                long need = n * format.BlockCount((int)k);
                if (c.Length != need) throw new UserErrorException($"AWQ clip values for weight '{name}' hold {c.Length} values, [N={n}, k_blocks={format.BlockCount((int)k)}] needs {need}");
                foreach (var v in c)
                    if (!(v > 0)) throw new UserErrorException($"AWQ clip values for weight '{name}' contain {v}; they must be positive");
            }
        }
    }
}
