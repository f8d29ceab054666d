using OnnxMoe.Checkpoints;

namespace OnnxMoe.Lowering.Families;

/// <summary>
/// A Hugging Face MoE model family as a small descriptor: which config fields it reads, which
/// layers are MoE, its routing rule and shared experts, and its weight names. Everything else is
/// the shared decoder lowering. Attention/norm/embedding names are common to all families.
/// </summary>
public abstract class ModelFamily
{
    /// <summary>Short name used in metadata, reports and the CLI (mixtral, deepseek-moe, ...).</summary>
    public abstract string Name { get; }
    /// <summary>config.json architectures[0].</summary>
    public abstract string Architecture { get; }
    /// <summary>config.json model_type (also used as genai_config model.type).</summary>
    public abstract string ModelType { get; }

    protected virtual bool DefaultQkvBias(HfConfig c) => c.GetBool("attention_bias", false);
    protected virtual bool DefaultOutputBias(HfConfig c) => c.GetBool("attention_bias", false);
    protected virtual QkNormKind QkNorm => QkNormKind.None;

    /// <summary>MoE parameters of layer <paramref name="layer"/>, or null when it is a dense MLP layer.</summary>
    protected abstract MoeSpec? ReadMoe(HfConfig c, int layer);

    /// <summary>Intermediate width of dense MLP layers.</summary>
    protected virtual int DenseIntermediateSize(HfConfig c) => c.GetInt("intermediate_size");

    public DecoderSpec ReadSpec(HfConfig c)
    {
        int hidden = c.GetInt("hidden_size");
        int heads = c.GetInt("num_attention_heads");
        int kvHeads = c.GetInt("num_key_value_heads", heads);
        if (heads <= 0 || hidden <= 0) throw new CheckpointException($"{c.Path}: hidden_size and num_attention_heads must be positive");
        if (kvHeads <= 0 || heads % kvHeads != 0)
            throw new CheckpointException($"{c.Path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        int headDim = c.GetIntOrNull("head_dim") ?? (hidden % heads == 0 ? hidden / heads
            : throw new CheckpointException($"{c.Path}: hidden_size {hidden} is not divisible by num_attention_heads {heads} and head_dim is not given"));
        if (headDim % 2 != 0) throw new CheckpointException($"{c.Path}: head_dim {headDim} must be even for rotary embeddings");
        if (c.GetRaw("rope_scaling") is { } rs && !(rs.ValueKind == System.Text.Json.JsonValueKind.Object &&
            rs.TryGetProperty("rope_type", out var rt) && rt.GetString() == "default"))
            throw new CheckpointException($"{c.Path}: rope_scaling {rs.GetRawText()} is not supported (only plain RoPE)");
        int layers = c.GetInt("num_hidden_layers");
        var layerSpecs = new List<LayerSpec>(layers);
        for (int i = 0; i < layers; i++)
        {
            var moe = ReadMoe(c, i);
            if (moe != null && (moe.NumExperts < 1 || moe.TopK < 1 || moe.TopK > moe.NumExperts))
                throw new CheckpointException($"{c.Path}: layer {i}: num_experts_per_tok {moe.TopK} must lie in 1..{moe.NumExperts}");
            layerSpecs.Add(new LayerSpec(i, moe, moe == null ? DenseIntermediateSize(c) : 0));
        }
        return new DecoderSpec
        {
            Family = this,
            Architecture = Architecture,
            VocabSize = c.GetInt("vocab_size"),
            HiddenSize = hidden,
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim,
            RmsNormEps = c.GetDouble("rms_norm_eps", 1e-6),
            RopeTheta = c.GetDouble("rope_theta", 10000.0),
            TieWordEmbeddings = c.GetBool("tie_word_embeddings", false),
            QkvBias = DefaultQkvBias(c),
            OutputBias = DefaultOutputBias(c),
            QkNorm = QkNorm,
            ClipQkv = c.GetDoubleOrNull("clip_qkv"),
            ContextLength = c.GetInt("max_position_embeddings", 4096),
            BosTokenId = c.GetIntOrNull("bos_token_id"),
            EosTokenIds = c.GetIntList("eos_token_id"),
            PadTokenId = c.GetIntOrNull("pad_token_id"),
            Layers = layerSpecs,
        };
    }

    // ---- weight names (HF [out, in] layout) ----

    public virtual string EmbedTokens => "model.embed_tokens.weight";
    public virtual string FinalNorm => "model.norm.weight";
    public virtual string LmHead => "lm_head.weight";
    public virtual string InputNorm(int layer) => $"model.layers.{layer}.input_layernorm.weight";
    public virtual string PostAttentionNorm(int layer) => $"model.layers.{layer}.post_attention_layernorm.weight";
    /// <summary>Attention weight or bias: <paramref name="proj"/> is q, k, v or o; <paramref name="kind"/> weight or bias.</summary>
    public virtual string Attention(int layer, char proj, string kind = "weight") => $"model.layers.{layer}.self_attn.{proj}_proj.{kind}";
    public virtual string QNorm(int layer) => $"model.layers.{layer}.self_attn.q_norm.weight";
    public virtual string KNorm(int layer) => $"model.layers.{layer}.self_attn.k_norm.weight";

    public abstract string RouterWeight(int layer);
    public abstract string ExpertWeight(int layer, int expert, FfnProjection projection);
    public virtual string SharedExpertWeight(int layer, FfnProjection projection) =>
        throw new InvalidOperationException($"{Name} has no shared experts");
    public virtual string SharedExpertGateWeight(int layer) =>
        throw new InvalidOperationException($"{Name} has no shared expert gate");
    public virtual string DenseMlpWeight(int layer, FfnProjection projection) => $"model.layers.{layer}.mlp.{ProjName(projection)}.weight";

    /// <summary>gate_proj / up_proj / down_proj.</summary>
    protected static string ProjName(FfnProjection p) => p switch
    {
        FfnProjection.Gate => "gate_proj",
        FfnProjection.Up => "up_proj",
        _ => "down_proj",
    };

    public override string ToString() => $"{Name} ({Architecture})";
}
