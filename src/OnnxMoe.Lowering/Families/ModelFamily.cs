using System.Text.Json;
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

    // Bounds well beyond any published MoE model, low enough that nothing sized by them exhausts memory.
    public const int MaxLayers = 4096;
    public const int MaxExperts = 16384;
    public const int MaxHiddenSize = 1 << 20;
    public const int MaxIntermediateSize = 1 << 24;
    public const int MaxVocabSize = 1 << 24;
    public const int MaxHeads = 1 << 14;
    public const int MaxContextLength = 1 << 30;

    /// <summary>The fields every family reads, and the rules between them.</summary>
    public static ConfigSchema CommonSchema { get; } = new(
        [
            ConfigField.Int("hidden_size", 1, MaxHiddenSize, required: true),
            ConfigField.Int("num_hidden_layers", 1, MaxLayers, required: true),
            ConfigField.Int("num_attention_heads", 1, MaxHeads, required: true),
            ConfigField.Int("num_key_value_heads", 1, MaxHeads) with { AtMostField = "num_attention_heads" },
            ConfigField.Int("head_dim", 2, MaxHiddenSize),
            ConfigField.Int("vocab_size", 1, MaxVocabSize, required: true),
            ConfigField.PositiveNumber("rms_norm_eps", max: 1),
            ConfigField.PositiveNumber("rope_theta"),
            ConfigField.Int("max_position_embeddings", 1, MaxContextLength),
            ConfigField.Bool("tie_word_embeddings"),
            ConfigField.Bool("attention_bias"),
            ConfigField.Int("bos_token_id", 0, MaxVocabSize) with { BelowField = "vocab_size" },
            ConfigField.IntOrList("eos_token_id", 0, MaxVocabSize) with { BelowField = "vocab_size" },
            ConfigField.Int("pad_token_id", 0, MaxVocabSize) with { BelowField = "vocab_size" },
            ConfigField.String("hidden_act", "silu"),
            ConfigField.Int("num_experts_per_tok", 1, MaxExperts, required: true),
            ConfigField.Unsupported("rope_scaling", "only plain RoPE is lowered; rope_scaling must be null or {\"rope_type\": \"default\"}",
                v => v.ValueKind == JsonValueKind.Object && v.TryGetProperty("rope_type", out var t) && t.ValueKind == JsonValueKind.String && t.GetString() == "default"),
            ConfigField.Unsupported("quantization_config", "pre-quantized checkpoints are not read; give the full-precision weights"),
        ],
        [
            new("heads divisible by kv heads", c => c.GetInt("num_attention_heads") % c.GetInt("num_key_value_heads", c.GetInt("num_attention_heads")) is 0 ? null
                : $"field 'num_key_value_heads' is {c.GetInt("num_key_value_heads")}; it must divide num_attention_heads ({c.GetInt("num_attention_heads")})"),
            new("head_dim given or derivable", c => c.Has("head_dim") || c.GetInt("hidden_size") % c.GetInt("num_attention_heads") == 0 ? null
                : $"field 'hidden_size' is {c.GetInt("hidden_size")}, not divisible by num_attention_heads ({c.GetInt("num_attention_heads")}), and head_dim is not given"),
            new("head_dim even", c => HeadDim(c) % 2 == 0 ? null
                : $"field '{(c.Has("head_dim") ? "head_dim" : "hidden_size")}' gives head_dim {HeadDim(c)}; rotary embeddings need an even head_dim"),
        ]);

    /// <summary>The fields this family reads beyond <see cref="CommonSchema"/>.</summary>
    protected abstract IEnumerable<ConfigField> Fields { get; }
    protected virtual IEnumerable<ConfigRule> Rules => [];

    private ConfigSchema? _schema;
    /// <summary>This family's config.json schema: the common fields plus its own.</summary>
    public ConfigSchema Schema => _schema ??= CommonSchema.With(Fields, Rules);

    /// <summary>config.json field holding the routed-expert count (num_local_experts, n_routed_experts, num_experts).</summary>
    public abstract string ExpertCountField { get; }
    /// <summary>config.json field that turns shared experts on, or null when the family has none.</summary>
    public virtual string? SharedExpertField => null;

    private static int HeadDim(HfConfig c) => c.GetIntOrNull("head_dim") ?? c.GetInt("hidden_size") / c.GetInt("num_attention_heads");

    /// <summary>Validates <paramref name="c"/> against <see cref="Schema"/>, then resolves the decoder it describes.</summary>
    public DecoderSpec ReadSpec(HfConfig c)
    {
        Schema.Validate(c);
        int hidden = c.GetInt("hidden_size");
        int heads = c.GetInt("num_attention_heads");
        int kvHeads = c.GetInt("num_key_value_heads", heads);
        int headDim = HeadDim(c);
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
