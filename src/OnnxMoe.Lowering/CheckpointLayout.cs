using OnnxMoe.Lowering.Families;

namespace OnnxMoe.Lowering;

/// <summary>The tensors (HF names and [out, in] shapes) a checkpoint of <see cref="DecoderSpec"/> holds.</summary>
public static class CheckpointLayout
{
    public static IEnumerable<(string Name, long[] Shape)> ExpectedTensors(DecoderSpec s)
    {
        var f = s.Family;
        long H = s.HiddenSize, D = s.HeadDim, q = s.NumAttentionHeads * D, kv = s.NumKeyValueHeads * D;
        yield return (f.EmbedTokens, [s.VocabSize, H]);
        foreach (var layer in s.Layers)
        {
            int i = layer.Index;
            yield return (f.InputNorm(i), [H]);
            yield return (f.Attention(i, 'q'), [q, H]);
            yield return (f.Attention(i, 'k'), [kv, H]);
            yield return (f.Attention(i, 'v'), [kv, H]);
            yield return (f.Attention(i, 'o'), [H, q]);
            if (s.QkvBias)
            {
                yield return (f.Attention(i, 'q', "bias"), [q]);
                yield return (f.Attention(i, 'k', "bias"), [kv]);
                yield return (f.Attention(i, 'v', "bias"), [kv]);
            }
            if (s.OutputBias) yield return (f.Attention(i, 'o', "bias"), [H]);
            if (s.QkNorm == QkNormKind.PerHead) { yield return (f.QNorm(i), [D]); yield return (f.KNorm(i), [D]); }
            if (s.QkNorm == QkNormKind.Full) { yield return (f.QNorm(i), [q]); yield return (f.KNorm(i), [kv]); }
            yield return (f.PostAttentionNorm(i), [H]);
            if (layer.Moe is { } m)
            {
                yield return (f.RouterWeight(i), [m.NumExperts, H]);
                for (int e = 0; e < m.NumExperts; e++)
                    foreach (var t in Ffn(p => f.ExpertWeight(i, e, p), H, m.IntermediateSize)) yield return t;
                if (m.Shared is { } sh)
                {
                    foreach (var t in Ffn(p => f.SharedExpertWeight(i, p), H, sh.IntermediateSize)) yield return t;
                    if (sh.Gated) yield return (f.SharedExpertGateWeight(i), [1, H]);
                }
            }
            else
                foreach (var t in Ffn(p => f.DenseMlpWeight(i, p), H, layer.DenseIntermediateSize)) yield return t;
        }
        yield return (f.FinalNorm, [H]);
        if (!s.TieWordEmbeddings) yield return (f.LmHead, [s.VocabSize, H]);
    }

    private static IEnumerable<(string, long[])> Ffn(Func<FfnProjection, string> name, long h, long inter)
    {
        yield return (name(FfnProjection.Gate), [inter, h]);
        yield return (name(FfnProjection.Up), [inter, h]);
        yield return (name(FfnProjection.Down), [h, inter]);
    }

    /// <summary>Parameter count of the checkpoint (tied embeddings counted once).</summary>
    public static long ParameterCount(DecoderSpec s) => ExpectedTensors(s).Sum(t => t.Shape.Aggregate(1L, (a, d) => a * d));
}
