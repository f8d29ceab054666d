namespace OnnxMoe.Lowering.Families;

/// <summary>How q and k are RMS-normalised before RoPE.</summary>
public enum QkNormKind
{
    None,
    /// <summary>Per head over head_dim, weight [head_dim] (Qwen3-MoE).</summary>
    PerHead,
    /// <summary>Over the whole projection, weights [heads*head_dim] and [kv_heads*head_dim] (OLMoE).</summary>
    Full,
}

/// <summary>The three projections of a SwiGLU FFN: Gate (w1), Up (w3), Down (w2).</summary>
public enum FfnProjection { Gate, Up, Down }

/// <param name="IntermediateSize">Total width of the shared FFN.</param>
/// <param name="Count">Shared experts fused into it (DeepSeek n_shared_experts).</param>
/// <param name="Gated">Output scaled by sigmoid(shared_expert_gate(x)) (Qwen2-MoE).</param>
public sealed record SharedExpertSpec(int IntermediateSize, int Count, bool Gated);

/// <param name="IntermediateSize">Width of one routed expert.</param>
/// <param name="NormTopKProb">Renormalise the top-k softmax weights to sum 1.</param>
public sealed record MoeSpec(int NumExperts, int TopK, bool NormTopKProb, int IntermediateSize, SharedExpertSpec? Shared);

/// <summary>One decoder layer: MoE (<see cref="Moe"/> set) or dense MLP of <see cref="DenseIntermediateSize"/>.</summary>
public sealed record LayerSpec(int Index, MoeSpec? Moe, int DenseIntermediateSize)
{
    public bool IsMoe => Moe != null;
}

/// <summary>Everything the shared lowering needs, resolved from config.json by a <see cref="ModelFamily"/>.</summary>
public sealed record DecoderSpec
{
    public required ModelFamily Family { get; init; }
    public required string Architecture { get; init; }
    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public required int HeadDim { get; init; }
    public required double RmsNormEps { get; init; }
    public required double RopeTheta { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    public required bool QkvBias { get; init; }
    public required bool OutputBias { get; init; }
    public required QkNormKind QkNorm { get; init; }
    /// <summary>OLMoE clip_qkv: q, k, v clamped to [-c, c] after projection (and q/k norm).</summary>
    public double? ClipQkv { get; init; }
    public required int ContextLength { get; init; }
    public int? BosTokenId { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    public int? PadTokenId { get; init; }
    public required IReadOnlyList<LayerSpec> Layers { get; init; }

    public int NumLayers => Layers.Count;
}
