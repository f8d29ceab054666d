using OnnxMoe.Ir;
using OnnxMoe.Passes.Trimming;
using OnnxMoe.Structure;

namespace OnnxMoe.Passes.Fusion;

/// <summary>
/// Converts the decoder from the standard form (plain ONNX ops, what every other pass reads and rewrites) into
/// ONNX Runtime's fused contrib ops, as the last step of a pipeline: each MoE layer's routed experts become one
/// com.microsoft <c>MoE</c> node (float experts) or <c>QMoE</c> node (experts quantized by quantize-int4); each block's
/// RoPE, KV cache and attention become one GroupQueryAttention (do_rotary, q/k/v packed where quantized); each RMSNorm becomes
/// SimplifiedLayerNormalization, or SkipSimplifiedLayerNormalization with the residual Add before it (f32 graphs). A layer
/// that a fused node cannot express keeps its standard ops, and the pass says why. Passes that need the standard form
/// (prune-experts, quantize-int4, AWQ) refuse a fused model: run them before fuse. Passes that cut or rewire the residual
/// stream split the skip nodes for their run (<see cref="SkipNormFusion.WithResidualAdds"/>).
/// </summary>
public sealed class FusePass : Pass
{
    public const string Quantized = "quantized";
    public const string All = "all";
    public const string Off = "off";

    public static readonly PassOption<string> Moe = PassOption.String("moe", Quantized, "quantized: MatMulNBits experts into one QMoE node per layer " +
        "(measured faster on CPU); all: float experts into MoE too (ORT's CPU MoE kernel measured 0.9x decode, 0.6x prefill of the standard form in fp32); off",
        Quantized, All, Off);
    public static readonly PassOption<bool> Attention = PassOption.Bool("attention", true,
        "fuse RoPE, the KV cache and attention into one GroupQueryAttention that applies RoPE itself (KV cache shareable as one buffer)");
    public static readonly PassOption<bool> Norm = PassOption.Bool("norm", true, "fuse each RMSNorm chain into one SimplifiedLayerNormalization");
    public static readonly PassOption<bool> SkipNorm = PassOption.Bool("skip-norm", true, "fold each residual Add and the norm reading its sum " +
        "(block norms, final norm) into one com.microsoft SkipSimplifiedLayerNormalization (output 3 = the residual sum); f32 graphs only, needs norm");

    public static readonly PassInfo Info = new("fuse",
        "Rewrites MoE layers into com.microsoft MoE / QMoE, attention into GroupQueryAttention (RoPE inside), RMSNorms into SimplifiedLayerNormalization " +
        "or, with the residual Add before them, SkipSimplifiedLayerNormalization (run it last).",
        Moe, Attention, Norm, SkipNorm);

    public FusePass(PassOptions options) : base(Info, options)
    {
    }

    public override PassResult Run(Model model, PassContext context)
    {
        var counters = new CounterSet();
        var surgery = new DecoderSurgery(model, Name, counters);
        if (Options.Get(Moe) is var moe and not Off)
        {
            foreach (var block in surgery.MoeBlocks.Where(b => b.Ffn!.Moe!.FusedNode == null).ToList())
            {
                var why = MoeFusion.Fuse(surgery, block, floatExperts: moe == All);
                if (string.IsNullOrEmpty(why)) continue;
                counters.Add("moe-layers-not-fused");
                context.Info($"{Name}: layer {block.Index} keeps standard ops: {why}");
            }
        }
        if (Options.Get(Attention))
        {
            var fusion = new AttentionFusion(surgery);
            var blocks = surgery.Structure.Blocks.Where(b => b.Attention.FusedNode == null).ToList();
            var cannot = blocks.Count == 0 ? null : fusion.CannotFuse();
            if (cannot != null)
            {
                counters.Add("attention-not-fused", blocks.Count);
                context.Info($"{Name}: attention keeps standard ops: {cannot}");
            }
            else if (blocks.Count > 0)
            {
                foreach (var block in blocks)
                {
                    var why = fusion.Fuse(block);
                    if (why == null) continue;
                    counters.Add("attention-not-fused");
                    context.Info($"{Name}: layer {block.Index}'s attention keeps standard ops: {why}");
                }
                fusion.Finish();
            }
        }
        if (Options.Get(Norm)) NormFusion.Run(surgery);
        if (Options.Get(SkipNorm) && SkipNormFusion.Fuse(surgery) == 0 && surgery.Structure.ComputeType != "f32")
            context.Info($"{Name}: the {surgery.Structure.ComputeType} graph keeps its residual Adds (skip-norm fuses f32 graphs only)");
        if (!counters.Any) return PassResult.Unchanged;
        if (model.GetOpset(MoeFusion.Domain) == null) model.SetOpset(MoeFusion.Domain, 1);
        surgery.Commit();
        return PassResult.From(counters["moe-nodes"] + counters["qmoe-nodes"] + counters["attention-fused"] + counters["norms-fused"] + counters["skip-norms-fused"] > 0, counters);
    }

    /// <summary>Throws when <paramref name="structure"/> has a fused MoE layer: <paramref name="passName"/> needs the standard form.</summary>
    public static void RequireStandardForm(DecoderStructure? structure, string passName)
    {
        var fused = structure?.Blocks.FirstOrDefault(b => b.Ffn?.Moe?.FusedNode != null);
        if (fused != null)
            throw new PassException(passName, $"layer {fused.Index}'s experts are fused into {fused.Ffn!.Moe!.FusedNode} (pass fuse); run {passName} before fuse");
    }
}
