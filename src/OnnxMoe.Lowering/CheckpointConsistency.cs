using System.Globalization;
using System.Text.RegularExpressions;
using OnnxMoe.Checkpoints;
using OnnxMoe.Lowering.Families;

namespace OnnxMoe.Lowering;

/// <summary>
/// Checks that config.json and the weights describe the same model before anything is lowered: layer count,
/// embedding width and rows, attention widths, expert counts, and no weight the config leaves unused (which
/// the lowering would drop silently). Each problem is one <see cref="CheckpointException"/> naming the config
/// field, its value and the tensor that disagrees.
/// </summary>
public static partial class CheckpointConsistency
{
    public static void Check(CheckpointFolder ckpt, DecoderSpec s)
    {
        var f = s.Family;
        string cfg = ckpt.Config.Path;

        // Layer count first: everything below iterates over the layers the config claims.
        int weightLayers = ckpt.TensorNames.Select(LayerOf).Where(i => i >= 0).DefaultIfEmpty(-1).Max() + 1;
        if (weightLayers != s.NumLayers)
            throw new CheckpointException(weightLayers == 0
                ? $"{cfg}: field 'num_hidden_layers' is {s.NumLayers} but the weights hold no model.layers.* tensors"
                : $"{cfg}: field 'num_hidden_layers' is {s.NumLayers} but the weights hold layers 0..{weightLayers - 1} ({weightLayers} layers)");

        if (ckpt.TryGetTensor(f.EmbedTokens) is { Shape: [long rows, long width] } embed)
        {
            if (width != s.HiddenSize)
                throw new CheckpointException($"{cfg}: field 'hidden_size' is {s.HiddenSize} but {f.EmbedTokens} is [{rows},{width}] (width {width})");
            if (rows != s.VocabSize)
                throw new CheckpointException($"{cfg}: field 'vocab_size' is {s.VocabSize} but {f.EmbedTokens} is [{rows},{width}] ({rows} rows)");
        }
        if (ckpt.TryGetTensor(f.Attention(0, 'q')) is { Shape: [long qRows, _] } && qRows != (long)s.NumAttentionHeads * s.HeadDim)
            throw new CheckpointException($"{cfg}: fields num_attention_heads {s.NumAttentionHeads} x head_dim {s.HeadDim} = {(long)s.NumAttentionHeads * s.HeadDim} but {f.Attention(0, 'q')} has {qRows} rows");
        if (ckpt.TryGetTensor(f.Attention(0, 'k')) is { Shape: [long kRows, _] } && kRows != (long)s.NumKeyValueHeads * s.HeadDim)
            throw new CheckpointException($"{cfg}: fields num_key_value_heads {s.NumKeyValueHeads} x head_dim {s.HeadDim} = {(long)s.NumKeyValueHeads * s.HeadDim} but {f.Attention(0, 'k')} has {kRows} rows");
        foreach (var layer in s.Layers)
        {
            if (layer.Moe is not { } m) continue;
            if (ckpt.TryGetTensor(f.RouterWeight(layer.Index)) is { Shape: [long experts, _] } && experts != m.NumExperts)
                throw new CheckpointException($"{cfg}: field '{f.ExpertCountField}' is {m.NumExperts} but {f.RouterWeight(layer.Index)} routes to {experts} experts");
        }

        // Every weight must be one the lowering reads; leftovers mean the config describes a smaller model.
        var expected = CheckpointLayout.ExpectedTensors(s).Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        if (s.TieWordEmbeddings) expected.Add(f.LmHead);
        foreach (var name in ckpt.TensorNames)
        {
            if (expected.Contains(name) || name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal)) continue;
            int layer = LayerOf(name);
            var spec = layer >= 0 ? s.Layers[layer] : null;
            if (f.SharedExpertField is { } sharedField && name.Contains(".shared_expert", StringComparison.Ordinal) && spec?.Moe is { Shared: null })
                throw new CheckpointException($"{cfg}: field '{sharedField}' is {ckpt.Config.GetRaw(sharedField)?.GetRawText() ?? "absent"} (no shared experts) but the weights hold {name}");
            if (spec?.Moe is { } moe && ExpertOf(name) is int e and >= 0 && e >= moe.NumExperts)
                throw new CheckpointException($"{cfg}: field '{f.ExpertCountField}' is {moe.NumExperts} but the weights hold {name} (expert {e})");
            throw new CheckpointException($"{ckpt.Directory}: tensor '{name}' is not part of the {f.Name} model config.json describes (unexpected weight; does the config match the weights?)");
        }
    }

    private static int LayerOf(string name)
    {
        var m = LayerPattern().Match(name);
        return m.Success && int.TryParse(m.Groups[1].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out int i) && i < ModelFamily.MaxLayers * 16 ? i : -1;
    }

    private static int ExpertOf(string name)
    {
        var m = ExpertPattern().Match(name);
        return m.Success && int.TryParse(m.Groups[1].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out int i) ? i : -1;
    }

    [GeneratedRegex(@"^model\.layers\.(\d+)\.")]
    private static partial Regex LayerPattern();

    [GeneratedRegex(@"\.experts\.(\d+)\.")]
    private static partial Regex ExpertPattern();
}
