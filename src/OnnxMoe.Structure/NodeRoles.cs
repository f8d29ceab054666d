namespace OnnxMoe.Structure;

/// <summary>What part of a lowered decoder a node belongs to, read from its name's scope (GRAPH-CONVENTIONS.md, "Node names").</summary>
public enum NodeRole
{
    /// <summary>Anything else: rotary tables, the attention mask, builder constants, custom scopes.</summary>
    Other,
    /// <summary><c>/model/embed_tokens/</c>.</summary>
    Embedding,
    /// <summary>An RMSNorm: <c>input_layernorm</c>, <c>post_attention_layernorm</c>, attention's <c>q_norm</c> / <c>k_norm</c>, <c>/model/norm/</c>.</summary>
    Norm,
    /// <summary><c>/model/layers.{i}/attn/</c> outside its norms: the q/k/v/o projections, RoPE, the KV cache, SDPA (fused or not).</summary>
    Attention,
    /// <summary><c>{moe}/router/</c>.</summary>
    Router,
    /// <summary><c>{moe}/experts.{e}/</c>, or the routed experts fused into one node (<c>{moe}/experts/QMoE</c>).</summary>
    RoutedExpert,
    /// <summary><c>{moe}/shared_experts/</c> (DeepSeek, Qwen2-MoE).</summary>
    SharedExpert,
    /// <summary><c>{moe}/shared_expert_gate/</c> (Qwen2-MoE: sigmoid(x W_g) scales the shared expert).</summary>
    SharedExpertGate,
    /// <summary><c>/model/layers.{i}/mlp/</c>: a dense FFN layer.</summary>
    DenseMlp,
    /// <summary><c>/lm_head/</c>.</summary>
    LmHead,
}

/// <summary>
/// The one place that reads a node's role from its name. Passes and tools ask here instead of matching substrings of names
/// themselves, so a change of the naming scheme changes this file and GRAPH-CONVENTIONS.md only.
/// </summary>
public static class NodeRoles
{
    public static NodeRole Of(string nodeName)
    {
        if (nodeName.Contains("layernorm/", StringComparison.Ordinal) || nodeName.Contains("_norm/", StringComparison.Ordinal)
            || nodeName.StartsWith("/model/norm/", StringComparison.Ordinal))
            return NodeRole.Norm;
        if (nodeName.StartsWith("/model/embed_tokens/", StringComparison.Ordinal)) return NodeRole.Embedding;
        if (nodeName.StartsWith("/lm_head/", StringComparison.Ordinal)) return NodeRole.LmHead;
        if (nodeName.Contains("/attn/", StringComparison.Ordinal)) return NodeRole.Attention;
        if (nodeName.Contains("/moe/router/", StringComparison.Ordinal)) return NodeRole.Router;
        if (nodeName.Contains("/moe/experts.", StringComparison.Ordinal) || nodeName.Contains("/moe/experts/", StringComparison.Ordinal))
            return NodeRole.RoutedExpert;
        if (nodeName.Contains("/moe/shared_experts/", StringComparison.Ordinal)) return NodeRole.SharedExpert;
        if (nodeName.Contains("/moe/shared_expert_gate/", StringComparison.Ordinal)) return NodeRole.SharedExpertGate;
        if (nodeName.Contains("/mlp/", StringComparison.Ordinal)) return NodeRole.DenseMlp;
        return NodeRole.Other;
    }

    /// <summary>Whether the node is (part of) attention's query or key projection (<c>attn/q_proj/</c>, <c>attn/k_proj/</c>), whose
    /// outputs meet only in the attention scores.</summary>
    public static bool IsQueryOrKeyProjection(string nodeName) =>
        nodeName.Contains("/attn/q_proj/", StringComparison.Ordinal) || nodeName.Contains("/attn/k_proj/", StringComparison.Ordinal);
}
