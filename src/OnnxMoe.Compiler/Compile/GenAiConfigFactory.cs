using OnnxMoe.Inference.Models;
using OnnxMoe.Lowering.Families;

namespace OnnxMoe.Compiler.Compile;

/// <summary>The genai_config.json of a compiled decoder, from the lowering's <see cref="DecoderSpec"/>.</summary>
public static class GenAiConfigFactory
{
    /// <param name="structure">The graph's structure after the passes: its KV-cache layers (after block drop, fewer than the
    /// spec's) and whether attention is fused.</param>
    public static GenAiConfig From(DecoderSpec spec, string modelFileName, Structure.DecoderStructure structure) =>
        From(spec, modelFileName, structure.NumLayers, structure.Blocks.Count > 0 && structure.Blocks.All(b => b.Attention.FusedNode != null));

    /// <param name="numLayers">KV-cache layers in the graph.</param>
    /// <param name="sharedKvBuffer">Attention is fused (GroupQueryAttention), which writes the new keys and values into a buffer of
    /// the maximum length that GenAI binds as both past and present; the standard form grows the KV cache by Concat, so its past
    /// and present are separate buffers.</param>
    public static GenAiConfig From(DecoderSpec spec, string modelFileName, int numLayers, bool sharedKvBuffer = false) => new()
    {
        // GenAI runs our graphs as its generic decoder; the family names are not model types it accepts.
        ModelType = GenAiConfig.DecoderModelType,
        BosTokenId = spec.BosTokenId,
        EosTokenIds = spec.EosTokenIds,
        PadTokenId = spec.PadTokenId,
        ContextLength = spec.ContextLength,
        VocabSize = spec.VocabSize,
        DecoderFileName = modelFileName,
        HeadSize = spec.HeadDim,
        HiddenSize = spec.HiddenSize,
        NumAttentionHeads = spec.NumAttentionHeads,
        NumHiddenLayers = numLayers,
        NumKeyValueHeads = spec.NumKeyValueHeads,
        SearchMaxLength = spec.ContextLength,
        // 0 = ORT's default, one intra-op thread per physical core of the machine the model runs on (measured: 0 gives
        // ORT's pool, as 2 does on a 2-core box); GenAI's own default, half the hardware threads, leaves cores idle.
        IntraOpNumThreads = 0,
        PastPresentShareBuffer = sharedKvBuffer,
    };
}
