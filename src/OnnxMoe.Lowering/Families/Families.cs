using OnnxMoe.Checkpoints;

namespace OnnxMoe.Lowering.Families;

/// <summary>MixtralForCausalLM: every layer MoE, top-k weights always renormalised, experts w1/w3/w2.</summary>
public sealed class MixtralFamily : ModelFamily
{
    public override string Name => "mixtral";
    public override string Architecture => "MixtralForCausalLM";
    public override string ModelType => "mixtral";
    public override string ExpertCountField => "num_local_experts";

    protected override IEnumerable<ConfigField> Fields =>
    [
        ConfigField.Int("num_local_experts", 1, MaxExperts, required: true),
        ConfigField.Int("num_experts_per_tok", 1, MaxExperts, required: true) with { AtMostField = "num_local_experts" },
        ConfigField.Int("intermediate_size", 1, MaxIntermediateSize, required: true),
        ConfigField.Int("sliding_window", 1, MaxContextLength),
    ];

    protected override IEnumerable<ConfigRule> Rules =>
    [
        // Attention is lowered over the whole context; a window shorter than it would change the results.
        new("no sliding window", c => c.GetIntOrNull("sliding_window") is { } w && w < c.GetInt("max_position_embeddings", 4096)
            ? $"field 'sliding_window' is {w}: sliding-window attention is not supported (only windows covering max_position_embeddings, {c.GetInt("max_position_embeddings", 4096)})"
            : null),
    ];
    protected override bool DefaultQkvBias(HfConfig c) => false;
    protected override bool DefaultOutputBias(HfConfig c) => false;

    protected override MoeSpec? ReadMoe(HfConfig c, int layer) =>
        new(c.GetInt("num_local_experts"), c.GetInt("num_experts_per_tok"), NormTopKProb: true, c.GetInt("intermediate_size"), null);

    public override string RouterWeight(int layer) => $"model.layers.{layer}.block_sparse_moe.gate.weight";
    public override string ExpertWeight(int layer, int expert, FfnProjection p) =>
        $"model.layers.{layer}.block_sparse_moe.experts.{expert}.{p switch { FfnProjection.Gate => "w1", FfnProjection.Up => "w3", _ => "w2" }}.weight";
}

/// <summary>DeepseekForCausalLM (DeepSeek-MoE): dense first layers, always-added shared experts, softmax routing.</summary>
public sealed class DeepSeekMoeFamily : ModelFamily
{
    public override string Name => "deepseek-moe";
    public override string Architecture => "DeepseekForCausalLM";
    public override string ModelType => "deepseek";
    public override string ExpertCountField => "n_routed_experts";
    public override string? SharedExpertField => "n_shared_experts";

    protected override IEnumerable<ConfigField> Fields =>
    [
        ConfigField.Int("n_routed_experts", 1, MaxExperts),
        ConfigField.Int("num_experts_per_tok", 1, MaxExperts, required: true) with { AtMostField = "n_routed_experts" },
        ConfigField.Int("first_k_dense_replace", 0, MaxLayers) with { BelowField = "num_hidden_layers" },
        ConfigField.Int("moe_layer_freq", 1, MaxLayers) with { AtMostField = "num_hidden_layers" },
        ConfigField.Int("moe_intermediate_size", 1, MaxIntermediateSize, required: true),
        ConfigField.Int("intermediate_size", 1, MaxIntermediateSize, required: true),
        ConfigField.Int("n_shared_experts", 0, 1024),
        ConfigField.Bool("norm_topk_prob"),
        ConfigField.String("scoring_func", "softmax"),
        ConfigField.String("topk_method", "greedy"),
    ];

    protected override MoeSpec? ReadMoe(HfConfig c, int layer)
    {
        if (c.GetIntOrNull("n_routed_experts") is not { } experts) return null;
        int firstDense = c.GetInt("first_k_dense_replace", 0);
        int freq = c.GetInt("moe_layer_freq", 1);
        if (freq < 1) throw new CheckpointException($"{c.Path}: moe_layer_freq must be positive");
        if (layer < firstDense || layer % freq != 0) return null;
        string scoring = c.GetStringOrNull("scoring_func") ?? "softmax";
        if (scoring != "softmax") throw new CheckpointException($"{c.Path}: scoring_func '{scoring}' is not supported (only softmax)");
        int width = c.GetInt("moe_intermediate_size");
        int shared = c.GetInt("n_shared_experts", 0);
        return new MoeSpec(experts, c.GetInt("num_experts_per_tok"), c.GetBool("norm_topk_prob", false), width,
            shared > 0 ? new SharedExpertSpec(width * shared, shared, Gated: false) : null);
    }

    public override string RouterWeight(int layer) => $"model.layers.{layer}.mlp.gate.weight";
    public override string ExpertWeight(int layer, int expert, FfnProjection p) => $"model.layers.{layer}.mlp.experts.{expert}.{ProjName(p)}.weight";
    public override string SharedExpertWeight(int layer, FfnProjection p) => $"model.layers.{layer}.mlp.shared_experts.{ProjName(p)}.weight";
}

/// <summary>Shared by the Qwen MoE families: sparse layers by decoder_sparse_step and mlp_only_layers.</summary>
public abstract class QwenMoeFamilyBase : ModelFamily
{
    public override string ExpertCountField => "num_experts";

    /// <summary>The fields both Qwen MoE families read.</summary>
    protected static IEnumerable<ConfigField> QwenFields =>
    [
        ConfigField.Int("num_experts", 1, MaxExperts, required: true),
        ConfigField.Int("num_experts_per_tok", 1, MaxExperts, required: true) with { AtMostField = "num_experts" },
        ConfigField.Int("moe_intermediate_size", 1, MaxIntermediateSize, required: true),
        ConfigField.Int("intermediate_size", 1, MaxIntermediateSize),
        ConfigField.Int("decoder_sparse_step", 1, MaxLayers) with { AtMostField = "num_hidden_layers" },
        ConfigField.IntList("mlp_only_layers", 0, MaxLayers) with { BelowField = "num_hidden_layers" },
        ConfigField.Bool("norm_topk_prob"),
        ConfigField.Unsupported("use_sliding_window", "sliding-window attention is not lowered", v => v.ValueKind == System.Text.Json.JsonValueKind.False),
    ];

    protected bool IsSparse(HfConfig c, int layer)
    {
        int experts = c.GetInt("num_experts");
        int step = c.GetInt("decoder_sparse_step", 1);
        if (step < 1) throw new CheckpointException($"{c.Path}: decoder_sparse_step must be positive");
        return !c.GetIntList("mlp_only_layers").Contains(layer) && experts > 0 && (layer + 1) % step == 0;
    }

    public override string RouterWeight(int layer) => $"model.layers.{layer}.mlp.gate.weight";
    public override string ExpertWeight(int layer, int expert, FfnProjection p) => $"model.layers.{layer}.mlp.experts.{expert}.{ProjName(p)}.weight";
}

/// <summary>Qwen2MoeForCausalLM: q/k/v biases, one shared expert gated by sigmoid(shared_expert_gate(x)).</summary>
public sealed class Qwen2MoeFamily : QwenMoeFamilyBase
{
    public override string Name => "qwen2-moe";
    public override string Architecture => "Qwen2MoeForCausalLM";
    public override string ModelType => "qwen2_moe";
    public override string? SharedExpertField => "shared_expert_intermediate_size";

    protected override IEnumerable<ConfigField> Fields =>
        [.. QwenFields, ConfigField.Int("shared_expert_intermediate_size", 0, MaxIntermediateSize)];
    protected override bool DefaultQkvBias(HfConfig c) => true;
    protected override bool DefaultOutputBias(HfConfig c) => false;

    protected override MoeSpec? ReadMoe(HfConfig c, int layer)
    {
        if (!IsSparse(c, layer)) return null;
        int shared = c.GetInt("shared_expert_intermediate_size", 0);
        return new MoeSpec(c.GetInt("num_experts"), c.GetInt("num_experts_per_tok"), c.GetBool("norm_topk_prob", false),
            c.GetInt("moe_intermediate_size"), shared > 0 ? new SharedExpertSpec(shared, 1, Gated: true) : null);
    }

    public override string SharedExpertWeight(int layer, FfnProjection p) => $"model.layers.{layer}.mlp.shared_expert.{ProjName(p)}.weight";
    public override string SharedExpertGateWeight(int layer) => $"model.layers.{layer}.mlp.shared_expert_gate.weight";
}

/// <summary>Qwen3MoeForCausalLM: no shared expert, per-head q/k RMSNorm before RoPE.</summary>
public sealed class Qwen3MoeFamily : QwenMoeFamilyBase
{
    public override string Name => "qwen3-moe";
    public override string Architecture => "Qwen3MoeForCausalLM";
    public override string ModelType => "qwen3_moe";
    protected override IEnumerable<ConfigField> Fields => QwenFields;
    protected override QkNormKind QkNorm => QkNormKind.PerHead;

    protected override MoeSpec? ReadMoe(HfConfig c, int layer) => IsSparse(c, layer)
        ? new MoeSpec(c.GetInt("num_experts"), c.GetInt("num_experts_per_tok"), c.GetBool("norm_topk_prob", false), c.GetInt("moe_intermediate_size"), null)
        : null;
}

/// <summary>OlmoeForCausalLM: every layer MoE, q/k RMSNorm over the whole projection, optional clip_qkv.</summary>
public sealed class OlmoeFamily : ModelFamily
{
    public override string Name => "olmoe";
    public override string Architecture => "OlmoeForCausalLM";
    public override string ModelType => "olmoe";
    public override string ExpertCountField => "num_experts";

    protected override IEnumerable<ConfigField> Fields =>
    [
        ConfigField.Int("num_experts", 1, MaxExperts, required: true),
        ConfigField.Int("num_experts_per_tok", 1, MaxExperts, required: true) with { AtMostField = "num_experts" },
        ConfigField.Int("intermediate_size", 1, MaxIntermediateSize, required: true),
        ConfigField.PositiveNumber("clip_qkv"),
        ConfigField.Bool("norm_topk_prob"),
    ];
    protected override QkNormKind QkNorm => QkNormKind.Full;

    protected override MoeSpec? ReadMoe(HfConfig c, int layer) =>
        new(c.GetInt("num_experts"), c.GetInt("num_experts_per_tok"), c.GetBool("norm_topk_prob", false), c.GetInt("intermediate_size"), null);

    public override string RouterWeight(int layer) => $"model.layers.{layer}.mlp.gate.weight";
    public override string ExpertWeight(int layer, int expert, FfnProjection p) => $"model.layers.{layer}.mlp.experts.{expert}.{ProjName(p)}.weight";
}

/// <summary>The supported families, looked up by config.json architectures[0].</summary>
public static class ModelFamilies
{
    public static IReadOnlyList<ModelFamily> All { get; } =
        [new MixtralFamily(), new DeepSeekMoeFamily(), new Qwen2MoeFamily(), new Qwen3MoeFamily(), new OlmoeFamily()];

    public static ModelFamily? FindByArchitecture(string architecture) => All.FirstOrDefault(f => f.Architecture == architecture);
    public static ModelFamily? FindByName(string name) => All.FirstOrDefault(f => f.Name == name);

    /// <summary>The family of <paramref name="config"/>; an unsupported or missing architecture is a <see cref="CheckpointException"/> listing the supported ones.</summary>
    public static ModelFamily ForConfig(HfConfig config)
    {
        string supported = string.Join(", ", All.Select(f => f.Architecture));
        var arch = config.Architecture ?? throw new CheckpointException($"{config.Path}: no 'architectures' entry; supported: {supported}");
        return FindByArchitecture(arch) ?? throw new CheckpointException($"{config.Path}: architecture '{arch}' is not supported; supported: {supported}");
    }
}
