using OnnxMoe.Structure;
using OnnxMoe.Tests.Lowering;
using OnnxMoe.Tests.Trimming;
using static OnnxMoe.Tests.Trimming.TrimmingFixture;

namespace OnnxMoe.Tests.Fusion;

/// <summary>
/// Pass fuse against the standard form it replaces, both run through ORT on the five random family checkpoints
/// (tests/data/families). Float experts (MoE): max abs logit difference 1e-4. Quantized experts (QMoE over the same
/// MatMulNBits codes): 1e-4 as well, since both dequantize the same codes and accumulate in f32.
/// </summary>
public sealed class MoeFusionTests
{
    private const double Tolerance = 1e-4;

    public static TheoryData<string> Families => new(FamilyData.Names);

    [Theory]
    [MemberData(nameof(Families))]
    public void Fused_float_experts_equal_the_standard_form(string family) => Check(family, "", "MoE", "fuse{moe=all}");

    [Theory]
    [MemberData(nameof(Families))]
    public void Fused_int4_experts_equal_the_standard_form(string family) => Check(family, "quantize-int4{block-size=16},", "QMoE");

    [Theory]
    [MemberData(nameof(Families))]
    public void Fused_symmetric_int4_experts_equal_the_standard_form(string family) => Check(family, "quantize-int4{block-size=16,symmetric=true},", "QMoE");

    private static void Check(string family, string before, string op, string fuse = "fuse")
    {
        using var standard = new LoweredCheckpoint(FamilyData.Dir(family));
        using var fused = new LoweredCheckpoint(FamilyData.Dir(family));
        var ids = Prompt(standard.Structure.VocabSize, length: 9);
        if (before.Length > 0) RunPipeline(standard.Model, before.TrimEnd(','));
        var report = RunPipeline(fused.Model, before + fuse);
        var s = fused.Structure;
        var moeBlocks = s.Blocks.Where(b => b.Ffn is { Kind: FfnKind.Moe }).ToList();
        // QMoE needs every expert's K (hidden for gate/up, intermediate for down) to be a multiple of the block (16 here);
        // a layer that is not keeps its standard ops (the random Mixtral has intermediate 24).
        int fusable = op == "MoE" ? moeBlocks.Count : moeBlocks.Count(b => s.HiddenSize % 16 == 0 && b.Ffn!.IntermediateSize % 16 == 0);
        Assert.Equal(fusable, s.Blocks.Count(b => b.Ffn?.Moe?.FusedNode != null));
        Assert.Equal(fusable, fused.Model.Graph.Nodes.Count(n => n.Domain == "com.microsoft" && n.OpType == op));
        Assert.Equal(moeBlocks.Count - fusable, report.Counters.GetValueOrDefault("moe-layers-not-fused"));
        if (fusable == moeBlocks.Count) Assert.DoesNotContain(fused.Model.Graph.Nodes, n => n.OpType == "ScatterND");
        if (op == "QMoE")
        {
            // q, k and v become one MatMulNBits where the three read the same input with nothing between them and the heads
            // (no q/k/v bias: Qwen2; no q/k norm: Qwen3, OLMoE).
            int packable = family is "mixtral" or "deepseek" ? s.NumLayers : 0;
            Assert.Equal(packable, report.Counters.GetValueOrDefault("qkv-packed"));
            Assert.Equal(packable, fused.Model.Graph.Nodes.Count(n => n.OpType == "MatMulNBits" && n.Name.EndsWith("/qkv_proj/MatMulNBits", StringComparison.Ordinal)));
            // GroupQueryAttention reads the packed output as its query, key and value absent (no Split).
            Assert.Equal(packable, fused.Model.Graph.Nodes.Count(n => n.OpType == "GroupQueryAttention" && n.Inputs[0]?.Producer?.OpType == "MatMulNBits"
                && n.Inputs[1] == null && n.Inputs[2] == null));
            Assert.DoesNotContain(fused.Model.Graph.Nodes, n => n.OpType == "Split" && n.Name.Contains("/attn/", StringComparison.Ordinal));
        }
        var expected = Logits(standard.Model, ids);
        var actual = Logits(fused.Model, ids);
        double diff = MaxAbsDiff(expected, actual);
        Assert.True(diff <= Tolerance, $"{family} {op}: max abs logit difference {diff:E3}");
    }
}
