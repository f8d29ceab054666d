using OnnxMoe.Ir;
using OnnxMoe.Structure;

namespace OnnxMoe.Passes.Quantization.Awq;

/// <summary>Where a group's 1/s is folded: into an RMSNorm's weight, or into the output columns of the previous linear.</summary>
public enum ScaleAnchorKind
{
    NormWeight,
    PreviousLinear,
}

/// <summary>
/// One AWQ scaling group: linears reading the same activations (<see cref="Input"/>), all of whose
/// input rows are multiplied by one s while 1/s goes into the anchor, and the module whose output
/// measures the loss (<see cref="ModuleInput"/> -> <see cref="ModuleOutput"/>).
/// </summary>
public sealed class ScaleGroup
{
    /// <summary>e.g. <c>/model/layers.0/post_attention_layernorm -> moe</c>.</summary>
    public required string Name { get; init; }
    public required ScaleAnchorKind Anchor { get; init; }
    /// <summary>The activations the linears read (the statistics' source); the module's input.</summary>
    public required Value Input { get; init; }
    /// <summary>Norm: the [H] weight initializer. Previous linear: its [K, N] weight.</summary>
    public required Value AnchorWeight { get; init; }
    /// <summary>Previous linear's bias (scaled with its columns), if any.</summary>
    public Value? AnchorBias { get; init; }
    /// <summary>Every MatMul reading <see cref="Input"/> (through reshapes and row gathers): routers and gates included.</summary>
    public required IReadOnlyList<Node> Linears { get; init; }
    /// <summary>The subset of <see cref="Linears"/> that will be quantized (trial weights in the loss).</summary>
    public required IReadOnlyList<Node> Quantized { get; init; }
    public required Value ModuleOutput { get; init; }
    public int Channels => checked((int)AnchorWeightChannels());

    private long AnchorWeightChannels() => Anchor == ScaleAnchorKind.NormWeight ? AnchorWeight.ConstValue!.Shape[0] : AnchorWeight.ConstValue!.Shape[1];

    public override string ToString() => Name;
}

/// <summary>
/// Finds the AWQ groups of a lowered decoder from its <see cref="DecoderStructure"/> and node names
/// (src/OnnxMoe.Structure/GRAPH-CONVENTIONS.md): input norm -> q,k,v; v -> o when heads and widths match;
/// post-attention norm -> every reader (router, experts' w1/w3, shared experts, shared gate, dense w1/w3);
/// each expert's / shared expert's / dense MLP's w3 -> w2. A group whose folding would not be exact
/// (an unexpected reader, a shared weight) is left out and reported in <see cref="Skipped"/>.
/// </summary>
public sealed class ScaleGroupFinder
{
    private readonly DecoderStructure _structure;
    private readonly LinearLayerSelector _selector;
    private readonly Dictionary<string, Node> _nodes = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Value> _values = new(StringComparer.Ordinal);
    private readonly HashSet<Value> _initializers = new(ReferenceEqualityComparer.Instance);

    public ScaleGroupFinder(Model model, LinearLayerSelector selector)
    {
        _structure = DecoderStructure.Read(model);
        _selector = selector;
        foreach (var n in model.Graph.Nodes)
        {
            if (n.Name.Length > 0) _nodes.TryAdd(n.Name, n);
            foreach (var o in n.Outputs) if (o.Name.Length > 0) _values.TryAdd(o.Name, o);
        }
        foreach (var v in model.Graph.Initializers) _initializers.Add(v);
    }

    public List<string> Skipped { get; } = new();

    public List<ScaleGroup> Find()
    {
        var groups = new List<ScaleGroup>();
        foreach (var block in _structure.Blocks)
        {
            string layer = $"/model/layers.{block.Index}";
            if (_nodes.TryGetValue($"{layer}/attn/q_proj/MatMul", out var q))
            {
                var attnOut = _nodes.TryGetValue(block.Attention.ResidualAdd, out var residual) ? residual.Inputs[1] : null;
                if (attnOut != null) Add(groups, NormGroup($"{layer}/input_layernorm -> attn", q.Inputs[0]!, attnOut));
                if (attnOut != null) Add(groups, ValueOutputGroup(layer));
            }
            if (block.Ffn is { } ffn && _values.TryGetValue(ffn.Input, out var ffnIn) && _values.TryGetValue(ffn.Output, out var ffnOut))
            {
                Add(groups, NormGroup($"{ffn.NormPrefix.TrimEnd('/')} -> {ffn.Prefix.TrimEnd('/').Split('/')[^1]}", ffnIn, ffnOut));
                var prefixes = new List<string>();
                if (ffn.Moe is { } moe)
                {
                    prefixes.AddRange(moe.ExpertIds.Select(e => $"{ffn.Prefix}experts.{e}/"));
                    if (moe.SharedExpert != null) prefixes.Add($"{ffn.Prefix}shared_experts/");
                }
                else prefixes.Add(ffn.Prefix);
                foreach (var p in prefixes) Add(groups, UpDownGroup(p));
            }
        }
        return groups;
    }

    private void Add(List<ScaleGroup> groups, ScaleGroup? group)
    {
        if (group != null && group.Quantized.Count > 0) groups.Add(group);
    }

    private ScaleGroup? NormGroup(string name, Value input, Value moduleOutput)
    {
        var norm = input.Producer;
        if (norm is not { OpType: "Mul", Domain: "" } || norm.Inputs.Count != 2)
            return Skip(name, $"{input.Name} is not produced by a norm's weight Mul");
        int wi = norm.Inputs[1] is { } w1 && IsVector(w1) ? 1 : norm.Inputs[0] is { } w0 && IsVector(w0) ? 0 : -1;
        if (wi < 0) return Skip(name, $"norm {norm} has no 1-D weight initializer");
        var weight = norm.Inputs[wi]!;
        if (weight.Uses.Count != 1) return Skip(name, $"norm weight {weight.Name} is shared by {weight.Uses.Count} nodes");
        int channels = (int)weight.ConstValue!.Shape[0];
        var linears = Readers(input, channels, out var why);
        if (linears == null) return Skip(name, why!);
        return new ScaleGroup
        {
            Name = name, Anchor = ScaleAnchorKind.NormWeight, Input = input, AnchorWeight = weight, Linears = linears,
            Quantized = linears.Where(l => _selector.IsTarget(l.Name)).ToList(), ModuleOutput = moduleOutput,
        };
    }

    private ScaleGroup? ValueOutputGroup(string layer)
    {
        string name = $"{layer}/attn/v_proj -> o_proj";
        if (!_nodes.TryGetValue($"{layer}/attn/v_proj/MatMul", out var v) || !_nodes.TryGetValue($"{layer}/attn/o_proj/MatMul", out var o)) return null;
        if (_structure.NumAttentionHeads != _structure.NumKeyValueHeads)
            return Skip(name, $"grouped-query attention ({_structure.NumAttentionHeads} query heads, {_structure.NumKeyValueHeads} key/value heads): v and o widths differ");
        var (weight, bias, why) = PreviousLinear(v);
        if (why != null) return Skip(name, why);
        var vOut = bias?.Uses.Count > 0 ? bias.Uses[0].Node.Outputs[0] : v.Outputs[0];
        if (vOut.Uses.Count != 1 || vOut.Uses[0].Node.OpType != "Reshape")
            return Skip(name, $"v_proj output {vOut.Name} is not only reshaped into heads (a clip or norm would not commute with the scale)");
        if (!IsConstWeight(o, out var ow) || ow.ConstValue!.Shape[0] != weight!.ConstValue!.Shape[1])
            return Skip(name, "o_proj's input width differs from v_proj's output width");
        return new ScaleGroup
        {
            Name = name, Anchor = ScaleAnchorKind.PreviousLinear, Input = o.Inputs[0]!, AnchorWeight = weight, AnchorBias = bias,
            Linears = [o], Quantized = _selector.IsTarget(o.Name) ? [o] : [], ModuleOutput = o.Outputs[0],
        };
    }

    private ScaleGroup? UpDownGroup(string prefix)
    {
        string name = $"{prefix}w3 -> w2";
        if (!_nodes.TryGetValue($"{prefix}w3/MatMul", out var up) || !_nodes.TryGetValue($"{prefix}w2/MatMul", out var down)) return null;
        var (weight, bias, why) = PreviousLinear(up);
        if (why != null) return Skip(name, why);
        var upOut = bias != null ? bias.Uses[0].Node.Outputs[0] : up.Outputs[0];
        var act = down.Inputs[0]!;
        // act = silu(gate) * up: linear in up, so up's columns may carry 1/s.
        if (upOut.Uses.Count != 1 || !ReferenceEquals(upOut.Uses[0].Node, act.Producer) || act.Producer!.OpType != "Mul")
            return Skip(name, $"w2's input {act.Name} is not silu(gate) * up with up read only there");
        if (act.Uses.Count != 1 || !IsConstWeight(down, out _)) return Skip(name, $"{act.Name} has readers besides w2, or w2 has no constant weight");
        return new ScaleGroup
        {
            Name = name, Anchor = ScaleAnchorKind.PreviousLinear, Input = act, AnchorWeight = weight!, AnchorBias = bias,
            Linears = [down], Quantized = _selector.IsTarget(down.Name) ? [down] : [], ModuleOutput = down.Outputs[0],
        };
    }

    /// <summary>The linear's weight and optional bias (an Add of a 1-D initializer right after it), both used once.</summary>
    private (Value? Weight, Value? Bias, string? Why) PreviousLinear(Node matmul)
    {
        if (!IsConstWeight(matmul, out var w)) return (null, null, $"{matmul} has no constant weight");
        if (w.Uses.Count != 1) return (null, null, $"weight {w.Name} is shared");
        var outp = matmul.Outputs[0];
        if (outp.Uses.Count == 1 && outp.Uses[0].Node is { OpType: "Add" } add)
        {
            var other = add.Inputs[1 - outp.Uses[0].Index];
            if (other != null && IsVector(other))
                return other.Uses.Count == 1 ? (w, other, null) : (null, null, $"bias {other.Name} is shared");
        }
        return (w, null, null);
    }

    /// <summary>MatMuls reading <paramref name="x"/> directly or through channel-preserving ops; null (with why) when another op reads it.</summary>
    private List<Node>? Readers(Value x, int channels, out string? why)
    {
        var result = new List<Node>();
        var pending = new Stack<Value>();
        pending.Push(x);
        why = null;
        while (pending.Count > 0)
        {
            var v = pending.Pop();
            foreach (var use in v.Uses)
            {
                var n = use.Node;
                switch (n.OpType)
                {
                    case "MatMul" when use.Index == 0 && IsConstWeight(n, out var w):
                        if (w.Uses.Count != 1) { why = $"weight {w.Name} of {n} is shared"; return null; }
                        if (w.ConstValue!.Shape[0] != channels) { why = $"{n} reads {w.ConstValue.Shape[0]} channels, not {channels}"; return null; }
                        if (!result.Contains(n)) result.Add(n);
                        break;
                    case "Shape":
                        break;
                    case "Reshape" when use.Index == 0 && n.Inputs[1]?.ConstValue is { DataType: DataType.Int64 } shape && shape.GetSpan<long>() is { Length: > 0 } s && s[^1] == channels:
                    case "Gather" when use.Index == 0 && n.GetInt("axis", 0) == 0:
                    case "Identity":
                        pending.Push(n.Outputs[0]);
                        break;
                    default:
                        why = $"{v.Name} is read by {n} ({n.OpType}), which a per-channel scale would change";
                        return null;
                }
            }
        }
        return result;
    }

    private bool IsConstWeight(Node matmul, out Value weight)
    {
        weight = matmul.Inputs.Count == 2 ? matmul.Inputs[1]! : null!;
        return weight != null && weight.ConstValue is { Shape.Length: 2 } && _initializers.Contains(weight);
    }

    private bool IsVector(Value v) => v.ConstValue is { Shape.Length: 1 } && _initializers.Contains(v);

    private ScaleGroup? Skip(string name, string why)
    {
        Skipped.Add($"{name}: {why}");
        return null;
    }
}
