using OnnxMoe.Ir;

namespace OnnxMoe.Passes.Quantization;

/// <summary>How weights are quantized: plain round-to-nearest, or RTN after AWQ's per-channel scaling and clipping.</summary>
public enum QuantizationMethod
{
    Rtn,
    Awq,
}

/// <summary>Which linear layers of the decoder to quantize, selected by node name (docs/graph-conventions).</summary>
[Flags]
public enum QuantizeTargets
{
    None = 0,
    /// <summary>Routed experts <c>/moe/experts.{e}/</c> and shared experts <c>/moe/shared_experts/</c>.</summary>
    Experts = 1,
    /// <summary>Dense feed-forward layers <c>/mlp/</c>.</summary>
    DenseMlp = 2,
    /// <summary>Attention projections <c>/attn/</c>.</summary>
    Attention = 4,
    /// <summary>Every other MatMul with a constant weight (router, shared-expert gate, lm_head ...), still subject to exclusion.</summary>
    Other = 8,
    /// <summary>Every feed-forward weight: experts and dense MLP.</summary>
    Mlp = Experts | DenseMlp,
    All = Experts | DenseMlp | Attention | Other,
}

/// <summary>
/// What the AWQ stage supplies for one weight W [K, N] (keyed by the weight initializer's name).
/// The quantizer codes Q(clip(W * diag(s))) where s = <see cref="InputScales"/> multiplies input
/// channel (row) k. Contract: the AWQ stage has already folded 1/s into whatever produces the
/// MatMul's input (norm weight, previous linear's output columns), so the float function is unchanged.
/// </summary>
/// <param name="InputScales">s, length K; positive and finite. Null: no scaling (clip only).</param>
/// <param name="ClipMax">Optional per (output channel, block) clip [N, k_blocks] row-major, applied after scaling: w is clamped to [-c, c].</param>
public sealed record AwqWeightScaling(float[]? InputScales, float[]? ClipMax = null);

/// <summary>Options of the quantize-int4 rewrite. Text forms (for the pass pipeline) are in <see cref="Parse"/> helpers.</summary>
public sealed record QuantizeInt4Options
{
    /// <summary>Node-name patterns left in full precision unless the user says otherwise: routers, the shared-expert gate (a scalar gate per token) and lm_head.</summary>
    public static readonly IReadOnlyList<string> DefaultExclude = ["/moe/router/", "/moe/shared_expert_gate/", "/lm_head/"];

    public QuantizationMethod Method { get; init; } = QuantizationMethod.Rtn;
    /// <summary>Input channels per block: power of two in 16..256.</summary>
    public int BlockSize { get; init; } = 128;
    /// <summary>True: no zero points (kernel default 2^(bits-1)).</summary>
    public bool Symmetric { get; init; }
    /// <summary>
    /// The default MatMulNBits accuracy_level, 4 (int8 activations on CPU), chosen from the measurements in
    /// <see cref="AccuracyLevelDescription"/>.
    /// </summary>
    public const int DefaultAccuracyLevel = 4;

    /// <summary>What <c>onnxmoe passes quantize-int4</c> says about accuracy-level, with the measurements behind the default.</summary>
    public const string AccuracyLevelDescription =
        "MatMulNBits accuracy_level: 0 unset (ORT's CPU kernels then compute in fp32, as 1), 1 fp32, 2 fp16, 3 bf16, 4 int8 activations (CPU). " +
        "Default 4, measured with RTN on 2 CPU threads (onnxmoe bench, prompt 128, 32 tokens, 7 interleaved rounds on a shared machine, medians of " +
        "per-round ratios): on a 0.79 B Mixtral-shaped model level 4 decoded 2.6x (block 128) and 1.9x (block 32) faster than level 0, prefill 1.8x " +
        "and 1.5x; on tiny-mixtral and tiny-deepseek it moved kjv-heldout perplexity by at most 0.01% and changed 2-3 of 800 answers of " +
        "--tasks onnxmoe --limit 200 (int4 itself changed 4-7 against fp32; accuracy within 0.002). Use 1 to keep fp32 activations.";

    /// <summary>MatMulNBits accuracy_level: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations (see <see cref="AccuracyLevelDescription"/>).</summary>
    public int AccuracyLevel { get; init; } = DefaultAccuracyLevel;
    /// <summary>4 or 8.</summary>
    public int Bits { get; init; } = 4;
    public QuantizeTargets Targets { get; init; } = QuantizeTargets.All;
    /// <summary>Node-name patterns to leave alone. A pattern without '*' or '?' matches as a substring; with them, the whole name must match ('*' any run of characters, '?' one). Replaces <see cref="DefaultExclude"/> when set.</summary>
    public IReadOnlyList<string> Exclude { get; init; } = DefaultExclude;
    /// <summary>AWQ stage output by weight initializer name; required for method=awq, rejected for rtn.</summary>
    public IReadOnlyDictionary<string, AwqWeightScaling>? AwqScaling { get; init; }

    public BlockQuantFormat Format => new(Bits, BlockSize, Symmetric);

    /// <summary>Throws <see cref="UserErrorException"/> naming the first bad option.</summary>
    public void Validate()
    {
        _ = Format;
        if (AccuracyLevel is < 0 or > 4)
            throw new UserErrorException($"accuracy level {AccuracyLevel} is out of range 0..4");
        if (Targets == QuantizeTargets.None || (Targets & ~QuantizeTargets.All) != 0)
            throw new UserErrorException($"targets {Targets} select nothing: use experts, mlp, attention or all");
        foreach (var p in Exclude)
            if (string.IsNullOrEmpty(p)) throw new UserErrorException("an exclude pattern is empty");
        if (Method == QuantizationMethod.Awq && (AwqScaling == null || AwqScaling.Count == 0))
            throw new UserErrorException("method=awq needs per-channel scales from the AWQ calibration stage; none were given");
        if (Method == QuantizationMethod.Rtn && AwqScaling is { Count: > 0 })
            throw new UserErrorException("AWQ scales were given but method=rtn; use method=awq");
    }

    /// <summary>Parses rtn|awq.</summary>
    public static QuantizationMethod ParseMethod(string text) => text.Trim().ToLowerInvariant() switch
    {
        "rtn" => QuantizationMethod.Rtn,
        "awq" => QuantizationMethod.Awq,
        _ => throw new UserErrorException($"method '{text}' is unknown: use rtn or awq"),
    };

    /// <summary>Parses a comma list of experts|mlp|dense-mlp|attention|all.</summary>
    public static QuantizeTargets ParseTargets(string text)
    {
        var result = QuantizeTargets.None;
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            result |= part.ToLowerInvariant() switch
            {
                "experts" => QuantizeTargets.Experts,
                "mlp" => QuantizeTargets.Mlp,
                "dense-mlp" => QuantizeTargets.DenseMlp,
                "attention" => QuantizeTargets.Attention,
                "all" => QuantizeTargets.All,
                _ => throw new UserErrorException($"target '{part}' is unknown: use experts, mlp, attention or all"),
            };
        if (result == QuantizeTargets.None) throw new UserErrorException("targets is empty: use experts, mlp, attention or all");
        return result;
    }

    /// <summary>Text form of the targets for printing a pipeline back.</summary>
    public static string FormatTargets(QuantizeTargets targets)
    {
        if (targets == QuantizeTargets.All) return "all";
        var parts = new List<string>();
        if ((targets & QuantizeTargets.Mlp) == QuantizeTargets.Mlp) parts.Add("mlp");
        else if ((targets & QuantizeTargets.Experts) != 0) parts.Add("experts");
        if ((targets & QuantizeTargets.Attention) != 0) parts.Add("attention");
        if ((targets & QuantizeTargets.DenseMlp) != 0 && (targets & QuantizeTargets.Experts) == 0) parts.Add("dense-mlp");
        return string.Join(",", parts);
    }
}
