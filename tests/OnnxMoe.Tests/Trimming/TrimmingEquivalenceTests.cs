using OnnxMoe.Structure;
using OnnxMoe.Tests.Lowering;
using static OnnxMoe.Tests.Trimming.TrimmingFixture;

namespace OnnxMoe.Tests.Trimming;

/// <summary>
/// Each trimming pass against an independently built reference, both run through ORT on the five random
/// family checkpoints (tests/data/families). Tolerance: fp32, max abs logit difference 1e-4.
/// </summary>
public sealed class TrimmingEquivalenceTests
{
    private const double Tolerance = 1e-4;

    public static TheoryData<string> Families => new(FamilyData.Names);

    private static int FirstMoeLayer(DecoderStructure s) => s.Blocks.First(b => b.Ffn is { Kind: FfnKind.Moe }).Index;

    [Theory]
    [MemberData(nameof(Families))]
    public void Dropping_an_moe_layer_equals_zeroing_its_down_projections(string family)
    {
        using var trimmed = new LoweredCheckpoint(FamilyData.Dir(family));
        using var reference = new LoweredCheckpoint(FamilyData.Dir(family));
        int layer = FirstMoeLayer(trimmed.Structure);
        var ids = Prompt(trimmed.Structure.VocabSize);
        var before = Logits(trimmed.Model, ids);

        var report = RunPipeline(trimmed.Model, $"drop-moe-layers{{layers={layer}}}");
        Assert.True(report.Changed);
        Assert.Equal(1, report.Counters["moe-layers-removed"]);
        Assert.Null(trimmed.Structure.Blocks.First(b => b.Index == layer).Ffn);
        Assert.DoesNotContain(trimmed.Model.Graph.Nodes, n => n.Name.StartsWith($"/model/layers.{layer}/moe/", StringComparison.Ordinal)
                                                           || n.Name.StartsWith($"/model/layers.{layer}/post_attention_layernorm/", StringComparison.Ordinal));

        var prefix = $"/model/layers.{layer}/moe/";
        int zeroed = ZeroWeights(reference.Model, prefix, "/w2/MatMul");
        Assert.Equal(reference.Structure.Blocks.First(b => b.Index == layer).Ffn!.Moe!.ExpertIds.Count
                     + (reference.Structure.Blocks.First(b => b.Index == layer).Ffn!.Moe!.SharedExpert != null ? 1 : 0), zeroed);
        var expected = Logits(reference.Model, ids);
        var actual = Logits(trimmed.Model, ids);
        Assert.True(MaxAbsDiff(expected, actual) <= Tolerance, $"{family}: max abs diff {MaxAbsDiff(expected, actual):E3}");
        Assert.True(MaxAbsDiff(before, actual) > 1e-3, $"{family}: dropping layer {layer} did not change the logits");
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Dropping_a_block_equals_zeroing_its_residual_branches(string family)
    {
        using var trimmed = new LoweredCheckpoint(FamilyData.Dir(family));
        using var reference = new LoweredCheckpoint(FamilyData.Dir(family));
        var s = trimmed.Structure;
        int block = s.Blocks[s.NumLayers / 2].Index;
        var ids = Prompt(s.VocabSize);

        var report = RunPipeline(trimmed.Model, $"drop-blocks{{blocks={block}}}");
        Assert.True(report.Changed);
        Assert.Equal(1, report.Counters["blocks-removed"]);
        Assert.Equal(2, report.Counters["kv-inputs-removed"]);
        var after = trimmed.Structure;
        Assert.Equal(s.NumLayers - 1, after.NumLayers);
        Assert.DoesNotContain(after.Blocks, b => b.Index == block);
        // KV I/O renumbered 0..L-2 in block order.
        var g = trimmed.Model.Graph;
        Assert.Equal(Enumerable.Range(0, after.NumLayers).SelectMany(j => new[] { $"past_key_values.{j}.key", $"past_key_values.{j}.value" }),
            g.Inputs.Select(v => v.Name).Where(n => n.StartsWith("past_key_values.", StringComparison.Ordinal)));
        Assert.Equal(Enumerable.Range(0, after.NumLayers).SelectMany(j => new[] { $"present.{j}.key", $"present.{j}.value" }),
            g.Outputs.Select(v => v.Name).Where(n => n.StartsWith("present.", StringComparison.Ordinal)));
        Assert.DoesNotContain(g.Nodes, n => n.Name.StartsWith($"/model/layers.{block}/", StringComparison.Ordinal));

        // Reference: the block's attention output projection and every FFN down projection at zero, so it adds nothing to the residual.
        var p = $"/model/layers.{block}/";
        int zeroed = ZeroWeights(reference.Model, p + "attn/o_proj/", "MatMul") + ZeroWeights(reference.Model, p, "/w2/MatMul");
        Assert.True(zeroed >= 2);
        foreach (var bias in reference.Model.Graph.Nodes.Where(n => n.Name.StartsWith(p + "attn/o_proj/", StringComparison.Ordinal) && n.OpType == "Add").ToList())
            ZeroWeights(reference.Model, bias.Name, "");
        var expected = Logits(reference.Model, ids);
        var actual = Logits(trimmed.Model, ids);
        Assert.True(MaxAbsDiff(expected, actual) <= Tolerance, $"{family}: max abs diff {MaxAbsDiff(expected, actual):E3}");
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Pruning_experts_equals_masking_their_router_logits(string family)
    {
        using var trimmed = new LoweredCheckpoint(FamilyData.Dir(family));
        using var reference = new LoweredCheckpoint(FamilyData.Dir(family));
        var s = trimmed.Structure;
        var moeBlocks = s.Blocks.Where(b => b.Ffn is { Kind: FfnKind.Moe }).ToList();
        // First MoE layer: all experts but one (top-k drops to 1); last MoE layer (if another): two experts.
        var first = moeBlocks[0];
        var drop = new Dictionary<int, int[]> { [first.Index] = first.Ffn!.Moe!.ExpertIds.Skip(1).ToArray() };
        if (moeBlocks.Count > 1) drop[moeBlocks[^1].Index] = [moeBlocks[^1].Ffn!.Moe!.ExpertIds[0], moeBlocks[^1].Ffn!.Moe!.ExpertIds[2]];
        var pairs = string.Join(",", drop.SelectMany(kv => kv.Value.Select(e => $"{kv.Key}:{e}")));
        var ids = Prompt(s.VocabSize);

        var report = RunPipeline(trimmed.Model, $"prune-experts{{experts={pairs}}}");
        Assert.True(report.Changed);
        Assert.Equal(drop.Values.Sum(v => v.Length), report.Counters["experts-removed"]);
        var after = trimmed.Structure;
        foreach (var (layer, removed) in drop)
        {
            var before = s.Blocks.First(b => b.Index == layer).Ffn!.Moe!;
            var moe = after.Blocks.First(b => b.Index == layer).Ffn!.Moe!;
            Assert.Equal(before.ExpertIds.Except(removed), moe.ExpertIds);
            Assert.Equal(Math.Min(before.TopK, moe.ExpertIds.Count), moe.TopK);
            Assert.Equal((moe.SharedExpert != null), (before.SharedExpert != null));
            foreach (var e in removed)
                Assert.DoesNotContain(trimmed.Model.Graph.Nodes, n => n.Name.StartsWith($"/model/layers.{layer}/moe/experts.{e}/", StringComparison.Ordinal));
        }

        foreach (var (layer, removed) in drop) MaskRouterLogits(reference.Model, layer, removed);
        var expected = Logits(reference.Model, ids);
        var actual = Logits(trimmed.Model, ids);
        Assert.True(MaxAbsDiff(expected, actual) <= Tolerance, $"{family}: max abs diff {MaxAbsDiff(expected, actual):E3}");
    }
}
