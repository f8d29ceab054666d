using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxMoe.Ir;

namespace OnnxMoe.Structure;

/// <summary>
/// What a lowered decoder looks like, stored as JSON in model metadata key <see cref="MetadataKey"/>
/// so passes can find blocks, MoE layers and experts without pattern matching. Names refer to
/// values, nodes and initializers of the main graph; a pass that rewrites the structure updates
/// this record and writes it back. Schema: src/OnnxMoe.Structure/GRAPH-CONVENTIONS.md.
/// </summary>
public sealed class DecoderStructure
{
    public const string MetadataKey = "onnxmoe.structure";
    public const int CurrentSchemaVersion = 1;

    public int SchemaVersion { get; set; } = CurrentSchemaVersion;
    /// <summary>Family name as the lowering knows it: mixtral, deepseek-moe, qwen2-moe, qwen3-moe, olmoe.</summary>
    public string Family { get; set; } = "";
    /// <summary>config.json architectures[0] of the source checkpoint.</summary>
    public string Architecture { get; set; } = "";
    public int VocabSize { get; set; }
    public int HiddenSize { get; set; }
    public int NumAttentionHeads { get; set; }
    public int NumKeyValueHeads { get; set; }
    public int HeadDim { get; set; }
    /// <summary>RoPE base (config rope_theta); 0 in structures written before it was recorded.</summary>
    public double RopeTheta { get; set; }
    /// <summary>Longest position the model was configured for (config max_position_embeddings): the rows of fused RoPE caches.</summary>
    public int MaxPositionEmbeddings { get; set; }
    /// <summary>Activation and KV-cache element type of the graph: "f32" or "f16".</summary>
    public string ComputeType { get; set; } = "f32";
    /// <summary>Value: residual stream entering the first block (embedding output).</summary>
    public string EmbeddingOutput { get; set; } = "";
    /// <summary>Node name of the final RMSNorm's first node; its input 0 is the last block's output. Fused with the last residual
    /// Add (pass fuse), the SkipSimplifiedLayerNormalization whose output 3 is the last block's output.</summary>
    public string FinalNormInputNode { get; set; } = "";
    /// <summary>Value: the additive f32 attention bias [B,1,1,S,T] (causal and attention_mask) every block's attention adds.</summary>
    public string? AttentionBias { get; set; }
    /// <summary>Decoder blocks in execution order.</summary>
    public List<BlockStructure> Blocks { get; set; } = new();

    public int NumLayers => Blocks.Count;

    /// <summary>RoPE inverse frequencies 1 / theta^(2j / D), j &lt; D/2, in f32 as the lowering and the fused caches compute them.</summary>
    public static float[] RotaryInverseFrequencies(double theta, int headDim)
    {
        var invFreq = new float[headDim / 2];
        for (int j = 0; j < invFreq.Length; j++) invFreq[j] = 1f / MathF.Pow((float)theta, (float)(2 * j) / headDim);
        return invFreq;
    }

    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        WriteIndented = false,
    };

    private static readonly JsonSerializerOptions IndentedOptions = new(Options) { WriteIndented = true };

    public string ToJson(bool indented = false) => JsonSerializer.Serialize(this, indented ? IndentedOptions : Options);

    /// <summary>Parses and validates; throws <see cref="InvalidDataException"/> naming what is wrong.</summary>
    public static DecoderStructure FromJson(string json)
    {
        DecoderStructure? s;
        try { s = JsonSerializer.Deserialize<DecoderStructure>(json, Options); }
        catch (JsonException e) { throw new InvalidDataException($"metadata '{MetadataKey}' is not valid: {e.Message}", e); }
        if (s == null) throw new InvalidDataException($"metadata '{MetadataKey}' is null");
        s.Validate();
        return s;
    }

    /// <summary>The structure stored in <paramref name="model"/>'s metadata, or null when it has none.</summary>
    public static DecoderStructure? TryRead(Model model) =>
        model.GetMetadata(MetadataKey) is { } json ? FromJson(json) : null;

    public static DecoderStructure Read(Model model) =>
        TryRead(model) ?? throw new InvalidDataException($"model has no '{MetadataKey}' metadata: it was not produced by onnxmoe compile");

    /// <summary>Every value, node and initializer name the structure refers to. Passes that merge or rename
    /// things (e.g. dedupe-constants) leave these alone so later structural passes still find them.</summary>
    public IReadOnlySet<string> ReferencedNames()
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        void Walk(System.Text.Json.Nodes.JsonNode? node)
        {
            switch (node)
            {
                case System.Text.Json.Nodes.JsonObject o: foreach (var kv in o) Walk(kv.Value); break;
                case System.Text.Json.Nodes.JsonArray a: foreach (var item in a) Walk(item); break;
                case System.Text.Json.Nodes.JsonValue v when v.TryGetValue<string>(out var text) && text.Length > 0: names.Add(text); break;
            }
        }
        Walk(System.Text.Json.Nodes.JsonNode.Parse(ToJson()));
        return names;
    }

    public void WriteTo(Model model)
    {
        Validate();
        model.SetMetadata(MetadataKey, ToJson());
    }

    public void Validate()
    {
        if (SchemaVersion != CurrentSchemaVersion)
            throw new InvalidDataException($"metadata '{MetadataKey}' has schema_version {SchemaVersion}; this onnxmoe reads {CurrentSchemaVersion}");
        for (int i = 0; i < Blocks.Count; i++)
        {
            var b = Blocks[i] ?? throw new InvalidDataException($"metadata '{MetadataKey}': block {i} is null");
            if (b.Ffn is { Kind: FfnKind.Moe, Moe: null })
                throw new InvalidDataException($"metadata '{MetadataKey}': block {i} is an MoE block without 'moe'");
            if (b.Ffn?.Moe is { } m && (m.ExpertIds.Count == 0 || m.TopK < 1 || m.TopK > m.ExpertIds.Count))
                throw new InvalidDataException($"metadata '{MetadataKey}': block {i} has top_k {m.TopK} with {m.ExpertIds.Count} experts");
        }
    }
}

/// <summary>One decoder block (attention sub-layer + FFN sub-layer). Value and node names refer to the graph.</summary>
public sealed class BlockStructure
{
    /// <summary>Layer index as used in node names (/model/layers.{index}/) and KV-cache names; stays the original one after blocks are dropped.</summary>
    public int Index { get; set; }
    /// <summary>Value: residual stream entering the block.</summary>
    public string Input { get; set; } = "";
    /// <summary>Value: residual stream leaving the block.</summary>
    public string Output { get; set; } = "";
    public AttentionStructure Attention { get; set; } = new();
    /// <summary>The FFN sub-layer (MoE or dense MLP with its post-attention norm); null once removed.</summary>
    public FfnStructure? Ffn { get; set; }
}

public sealed class AttentionStructure
{
    /// <summary>Graph input/output names of this block's KV cache.</summary>
    public string PastKey { get; set; } = "";
    public string PastValue { get; set; } = "";
    public string PresentKey { get; set; } = "";
    public string PresentValue { get; set; } = "";
    /// <summary>Node: residual Add after attention (input 0 = block input, input 1 = attention output); after pass fuse it may be
    /// the SkipSimplifiedLayerNormalization of the norm that reads the sum (same inputs 0 and 1, the sum is its output 3).</summary>
    public string ResidualAdd { get; set; } = "";
    /// <summary>Value: residual stream after attention (the h that enters the post-attention norm).</summary>
    public string Output { get; set; } = "";
    /// <summary>Values [B,S,heads,D]: queries, keys and values after projection (and q/k norm, clip) before RoPE, in the standard form.</summary>
    public string? QueryHeads { get; set; }
    public string? KeyHeads { get; set; }
    public string? ValueHeads { get; set; }
    /// <summary>Value [B,S,heads*D]: the attention context entering o_proj.</summary>
    public string? Context { get; set; }
    /// <summary>Node: the com.microsoft GroupQueryAttention node this block's attention was fused into (pass fuse); null in the
    /// standard form. Fused, the node applies RoPE itself (do_rotary) and holds the KV cache (present = past + new, or one
    /// shared buffer of the maximum length when the caller binds the same buffer to past and present).</summary>
    public string? FusedNode { get; set; }
}

[JsonConverter(typeof(JsonStringEnumConverter<FfnKind>))]
public enum FfnKind
{
    [JsonStringEnumMemberName("moe")] Moe,
    [JsonStringEnumMemberName("dense")] Dense,
}

public sealed class FfnStructure
{
    public FfnKind Kind { get; set; }
    /// <summary>Node-name prefix of the post-attention norm (e.g. /model/layers.3/post_attention_layernorm/).</summary>
    public string NormPrefix { get; set; } = "";
    /// <summary>Node-name prefix of the FFN (/model/layers.3/moe/ or /model/layers.3/mlp/).</summary>
    public string Prefix { get; set; } = "";
    /// <summary>Value: normed hidden state entering the FFN ([batch, seq, hidden]).</summary>
    public string Input { get; set; } = "";
    /// <summary>Value: FFN output before the residual add ([batch, seq, hidden]).</summary>
    public string Output { get; set; } = "";
    /// <summary>Node: residual Add after the FFN (input 0 = attention output, input 1 = FFN output); its output is the block output.
    /// After pass fuse it may be the next norm's SkipSimplifiedLayerNormalization (same inputs 0 and 1, the block output is its output 3).</summary>
    public string ResidualAdd { get; set; } = "";
    public int IntermediateSize { get; set; }
    public MoeStructure? Moe { get; set; }

    /// <summary>Node-name scope of routed expert <paramref name="expertId"/> (original id) in the standard form: {Prefix}experts.{id}/.</summary>
    public string ExpertScope(int expertId) => $"{RoutedExpertsScope}{expertId.ToString(System.Globalization.CultureInfo.InvariantCulture)}/";

    /// <summary>What every routed expert's scope starts with in the standard form: {Prefix}experts.</summary>
    [JsonIgnore]
    public string RoutedExpertsScope => $"{Prefix}experts.";
}

public sealed class MoeStructure
{
    /// <summary>Routed experts present, in router-column order, by their original index in the checkpoint.</summary>
    public List<int> ExpertIds { get; set; } = new();
    public int TopK { get; set; }
    /// <summary>Whether the top-k routing weights are renormalised to sum to 1.</summary>
    public bool NormTopKProb { get; set; }
    /// <summary>Router scoring function; "softmax" for every supported family.</summary>
    public string Scoring { get; set; } = "softmax";
    /// <summary>Node: router MatMul; its weight input is [hidden, experts], column c scoring expert_ids[c].</summary>
    public string RouterMatMul { get; set; } = "";
    /// <summary>Initializer: i64 [experts] mapping router column to original expert id (gathered by top-k indices).</summary>
    public string ExpertIdTable { get; set; } = "";
    /// <summary>Node: the router TopK (attribute-free, k is its input 1 initializer).</summary>
    public string TopKNode { get; set; } = "";
    /// <summary>Node: the zero accumulator the expert chain starts from.</summary>
    public string AccumulatorInit { get; set; } = "";
    /// <summary>Node: the com.microsoft MoE or QMoE node the routed experts were fused into by pass <c>fuse</c>; null in the
    /// standard form. A fused layer has no TopK, expert-id table or accumulator (those names are empty): the node reads the
    /// router's logits, routes and scatters itself. Its stacked expert weights follow <see cref="ExpertIds"/> in order.</summary>
    public string? FusedNode { get; set; }
    public SharedExpertStructure? SharedExpert { get; set; }
}

public sealed class SharedExpertStructure
{
    /// <summary>Total intermediate width (DeepSeek: moe_intermediate_size x n_shared_experts).</summary>
    public int IntermediateSize { get; set; }
    /// <summary>Number of shared experts fused into this one FFN (DeepSeek n_shared_experts; 1 for Qwen2-MoE).</summary>
    public int Count { get; set; } = 1;
    /// <summary>Output scaled by sigmoid(shared_expert_gate(x)) (Qwen2-MoE).</summary>
    public bool Gated { get; set; }
}
