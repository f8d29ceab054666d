using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Passes.Trimming;
using OnnxMoe.Structure;
using Attribute = OnnxMoe.Ir.Attribute;

namespace OnnxMoe.Passes.Fusion;

/// <summary>
/// Rewrites each block's attention from the standard form (rotate-half RoPE by Mul/Split/Concat, KV cache by Concat,
/// grouped-query attention by broadcasting MatMuls) into one com.microsoft <c>GroupQueryAttention</c> node that applies
/// RoPE itself (do_rotary=1, cos/sin caches of max_position_embeddings rows). The projections, q/k norms and clip stay
/// as they are. The GQA node gets seqlens_k = total length - 1 for every row (padding counts as length) and the
/// standard form's additive bias (causal and attention_mask). It takes each row's positions from seqlens_k (0.. for the
/// prompt, total - 1 for a new token), not from position_ids: a left-padded row's positions are shifted by its padding,
/// which RoPE does not see (q_m . k_n depends on m - n only) and the bias masks the padding, so it computes what the
/// standard form computes for left padding too (to rounding: tested 1e-4); present = past + new when past and present are
/// separate tensors, or one buffer of the maximum length when the caller binds the same buffer to both (ORT GenAI's
/// past_present_share_buffer).
/// </summary>
internal sealed class AttentionFusion
{
    /// <summary>Positions a fused model's RoPE caches hold at most (rows of cos/sin); longer contexts stay unfused.</summary>
    public const int MaxCachePositions = 1 << 18;

    private readonly DecoderSurgery _s;
    private readonly DecoderStructure _st;
    private readonly GraphBuilder _b;
    private readonly DataType _type;
    private Value? _cos, _sin, _seqLens, _total, _bias;

    public AttentionFusion(DecoderSurgery surgery)
    {
        _s = surgery;
        _st = surgery.Structure;
        _b = new GraphBuilder(surgery.Graph);
        _type = _st.ComputeType == "f16" ? DataType.Float16 : DataType.Float;
    }

    /// <summary>Why the model's attention cannot be fused, or null.</summary>
    public string? CannotFuse()
    {
        if (_st.HeadDim % 16 != 0) return $"head_dim {_st.HeadDim} is not a multiple of 16 (ORT's CPU GroupQueryAttention)";
        if (_st.RopeTheta <= 0 || _st.MaxPositionEmbeddings <= 0 || _st.AttentionBias == null)
            return "the model's structure metadata predates attention fusion (compile it again)";
        if (_st.MaxPositionEmbeddings > MaxCachePositions)
            return $"max_position_embeddings {_st.MaxPositionEmbeddings} would make RoPE caches of more than {MaxCachePositions} rows";
        return null;
    }

    /// <summary>Fuses one block's attention; returns null when done, else why it keeps standard ops.</summary>
    public string? Fuse(BlockStructure block)
    {
        var a = block.Attention;
        if (a.QueryHeads == null || a.KeyHeads == null || a.ValueHeads == null || a.Context == null)
            return "the model's structure metadata predates attention fusion (compile it again)";
        int nH = _st.NumAttentionHeads, kvH = _st.NumKeyValueHeads, d = _st.HeadDim;
        var pastK = _s.Graph.Inputs.FirstOrDefault(v => v.Name == a.PastKey);
        var pastV = _s.Graph.Inputs.FirstOrDefault(v => v.Name == a.PastValue);
        int presentK = IndexOfOutput(a.PresentKey), presentV = IndexOfOutput(a.PresentValue);
        if (pastK == null || pastV == null || presentK < 0 || presentV < 0) return "its KV-cache inputs or outputs are missing";
        var context = _s.ValueNamed(a.Context);
        var oldPresentK = _s.Graph.Outputs[presentK];
        var oldPresentV = _s.Graph.Outputs[presentV];

        Shared();
        Value[] outputs;
        using (_b.PushScope($"model/layers.{block.Index}/attn/fused"))
        {
            var (q, k, v) = PackedProjections(Flat(a.QueryHeads, nH, d), Flat(a.KeyHeads, kvH, d), Flat(a.ValueHeads, kvH, d));
            outputs = _b.Op("GroupQueryAttention", [q, k, v, pastK, pastV, _seqLens, _total, _cos, _sin, null, _bias], 3,
                [Attribute.Int("num_heads", nH), Attribute.Int("kv_num_heads", kvH), Attribute.Float("scale", (float)(1.0 / Math.Sqrt(d))),
                 Attribute.Int("do_rotary", 1), Attribute.Int("rotary_interleaved", 0)],
                [_type, _type, _type], MoeFusion.Domain);
        }
        outputs[0].Type = context.Type;
        context.ReplaceAllUsesWith(outputs[0]);
        Present(presentK, outputs[1]);
        Present(presentV, outputs[2]);
        _s.RemoveDead([context.Producer, oldPresentK.Producer, oldPresentV.Producer]);
        a.FusedNode = outputs[0].Producer!.Name;
        a.QueryHeads = a.KeyHeads = a.ValueHeads = null;
        a.Context = outputs[0].Name;
        _s.Counters.Add("attention-fused");
        return null;
    }

    /// <summary>Puts the appended nodes in topological order and forgets the renamed values (the standard form's RoPE went with
    /// the last block's dead-code removal in <see cref="Fuse"/>).</summary>
    public void Finish()
    {
        _s.Graph.SortTopologically();
        _s.InvalidateNames();
    }

    private int IndexOfOutput(string name)
    {
        for (int i = 0; i < _s.Graph.Outputs.Count; i++) if (_s.Graph.Outputs[i].Name == name) return i;
        return -1;
    }

    /// <summary>Graph output <paramref name="index"/> becomes <paramref name="value"/>, under the old output's name and type.</summary>
    private void Present(int index, Value value)
    {
        var old = _s.Graph.Outputs[index];
        var name = old.Name;
        old.Name = _b.Names.Unique(name + "/standard");
        value.Name = name;
        value.Type = old.Type;
        _s.Graph.Outputs[index] = value;
    }

    /// <summary>
    /// q, k and v from one MatMulNBits when all three are MatMulNBits of the same input with the same K, bits, block size,
    /// accuracy level and zero-point presence (no bias, no g_idx): its B, scales and zero points are the three nodes' rows
    /// stacked (row-major [N, ...], so the bytes are the three tensors one after the other), and GroupQueryAttention reads
    /// the packed [B, S, (H + 2 kvH) D] output as its query, key and value absent. One GEMV of N = q + k + v columns replaces
    /// three (two fewer kernels per block and token, and no Split); each output element is computed from the same row and
    /// input as before. Otherwise the three as they are.
    /// </summary>
    private (Value Q, Value? K, Value? V) PackedProjections(Value q, Value k, Value v)
    {
        if (q.Producer is not { } pq || k.Producer is not { } pk || v.Producer is not { } pv) return (q, k, v);
        Node[] nodes = [pq, pk, pv];
        if (nodes.Any(n => n.OpType != "MatMulNBits" || n.Domain != MoeFusion.Domain || n.Inputs.Count is < 3 or > 4))
            return (q, k, v);
        var first = nodes[0];
        string[] same = ["K", "bits", "block_size", "accuracy_level"];
        if (nodes.Any(n => !ReferenceEquals(n.Inputs[0], first.Inputs[0]) || n.Inputs.Count != first.Inputs.Count
                || same.Any(attr => n.GetInt(attr, -1) != first.GetInt(attr, -1))
                || n.Inputs.Skip(1).Any(x => x?.ConstValue is null)))
            return (q, k, v);
        // Each projection may feed only the standard form's heads reshape, which dies with the standard attention.
        if (nodes.Any(n => n.Outputs[0].IsGraphOutput || !n.Outputs[0].Uses.All(u => u.Node.OpType == "Reshape")))
            return (q, k, v);
        var widths = nodes.Select(n => n.GetInt("N", -1)).ToArray();
        if (widths.Any(w => w <= 0)) return (q, k, v);
        var inputs = new List<Value?> { first.Inputs[0] };
        for (int input = 1; input < first.Inputs.Count; input++)
        {
            var parts = nodes.Select(n => n.Inputs[input]!.ConstValue!).ToArray();
            inputs.Add(_b.AddInitializer(PackedName(nodes.Select(n => n.Inputs[input]!.Name).ToArray()), LazyTensor.ConcatRows(parts)));
        }
        var packed = _b.Op("MatMulNBits", inputs, 1,
            [Attribute.Int("K", first.GetInt("K", 0)), Attribute.Int("N", widths.Sum()), Attribute.Int("bits", first.GetInt("bits", 0)),
             Attribute.Int("block_size", first.GetInt("block_size", 0)), Attribute.Int("accuracy_level", first.GetInt("accuracy_level", 0))],
            [_type], MoeFusion.Domain, name: "qkv_proj/MatMulNBits")[0];
        _s.Counters.Add("qkv-packed");
        return (packed, null, null);
    }

    /// <summary>The packed weight's name from its parts' (checkpoint-derived, so parameter counts see a weight):
    /// model.layers.3.self_attn.{q,k,v}_proj.weight.q4 give model.layers.3.self_attn.qkv_proj.weight.q4.</summary>
    private string PackedName(string[] names)
    {
        int prefix = 0, suffix = 0, shortest = names.Min(n => n.Length);
        while (prefix < shortest && names.All(n => n[prefix] == names[0][prefix])) prefix++;
        while (suffix < shortest - prefix && names.All(n => n[^(suffix + 1)] == names[0][^(suffix + 1)])) suffix++;
        string name = prefix == 0 ? names[0] + ".qkv" : names[0][..prefix] + "qkv" + names[0][^suffix..];
        for (int k = 1; _b.Names.IsUsed(name); k++) name = $"{names[0]}.qkv_{k}";
        return name;
    }

    /// <summary>
    /// The heads value [B,S,H,D] as [B,S,H*D], which is what RotaryEmbedding and GroupQueryAttention read: when the standard
    /// form made the heads by reshaping a [B,S,H*D] projection with the constant [0,0,H,D] (the lowering always does, unless a
    /// per-head q/k norm sits between), that projection itself, so neither reshape runs (two kernel launches per value and
    /// token); otherwise a Reshape.
    /// </summary>
    private Value Flat(string heads, int h, int d)
    {
        var value = _s.ValueNamed(heads);
        if (value.Producer is { OpType: "Reshape", Domain: "" } reshape && reshape.Inputs.Count == 2 && reshape.Inputs[0] is { } x
            && reshape.Inputs[1]?.ConstValue is { DataType: DataType.Int64, ElementCount: 4 } shape
            && shape.GetSpan<long>().SequenceEqual([0L, 0L, h, d]))
            return x;
        return _b.Reshape(value, 0, 0, (long)h * d);
    }

    /// <summary>What every fused block reads, built once: RoPE caches [positions, D/2], seqlens_k, total_sequence_length and the bias.</summary>
    private void Shared()
    {
        if (_cos != null) return;
        int positions = _st.MaxPositionEmbeddings, half = _st.HeadDim / 2;
        var invFreq = DecoderStructure.RotaryInverseFrequencies(_st.RopeTheta, _st.HeadDim);
        var cos = new float[(long)positions * half];
        var sin = new float[cos.Length];
        for (int p = 0; p < positions; p++)
            for (int j = 0; j < half; j++)
            {
                float angle = p * invFreq[j];
                cos[p * half + j] = MathF.Cos(angle);
                sin[p * half + j] = MathF.Sin(angle);
            }
        _cos = _b.AddInitializer("/model/rotary_emb/cos_cache", GraphBuilder.FloatTensor(_type, [positions, half], cos));
        _sin = _b.AddInitializer("/model/rotary_emb/sin_cache", GraphBuilder.FloatTensor(_type, [positions, half], sin));

        using var _ = _b.PushScope("model/attn_mask/fused");
        var mask = _s.Graph.Inputs.First(v => v.Name == "attention_mask");
        var ids = _s.Graph.Inputs.First(v => v.Name == "input_ids");
        var total = _b.Cast(_b.Shape(mask, 1, 2), DataType.Int32);                                   // [1]
        _total = _b.Squeeze(total, 0);                                                               // scalar
        var batch = _b.Shape(ids, 0, 1);
        _seqLens = _b.Expand(_b.Sub(total, _b.Constant(InMemoryTensor.FromInt32s([1], [1]))), batch); // [B]: every row counts as full length
        var bias = _b.Squeeze(_s.ValueNamed(_st.AttentionBias!), 1);                                  // [B,1,S,T] f32
        // f16 cannot hold f32's lowest value (it would become -inf, and a fully masked padding row NaN): clamp first.
        _bias = _type == DataType.Float ? bias
            : _b.Cast(_b.Clip(bias, _b.FloatScalar(-65504f), null), _type);
    }
}
