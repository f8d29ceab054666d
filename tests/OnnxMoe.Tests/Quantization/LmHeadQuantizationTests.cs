using OnnxMoe.Passes;
using OnnxMoe.Tests.Lowering;
using OnnxMoe.Tests.Trimming;
using static OnnxMoe.Tests.Trimming.TrimmingFixture;

namespace OnnxMoe.Tests.Quantization;

/// <summary>quantize-int4{lm-head-bits=8}: lm_head becomes an 8-bit MatMulNBits besides the 4-bit layers; routers stay float.</summary>
public sealed class LmHeadQuantizationTests
{
    [Fact]
    public void Lm_head_bits_quantizes_lm_head_only_at_its_own_width()
    {
        using var plain = new LoweredCheckpoint(FamilyData.Dir("qwen2_moe"));
        using var head = new LoweredCheckpoint(FamilyData.Dir("qwen2_moe"));
        var report = RunPipeline(plain.Model, "quantize-int4{block-size=16}");
        var withHead = RunPipeline(head.Model, "quantize-int4{block-size=16,lm-head-bits=8}");
        Assert.Equal(1, withHead.Counters["lm-head-quantized"]);
        var lmHead = Assert.Single(head.Model.Graph.Nodes, n => n.Name.StartsWith("/lm_head/", StringComparison.Ordinal) && n.OpType == "MatMulNBits");
        Assert.Equal(8, lmHead.GetInt("bits", 0));
        Assert.Contains(plain.Model.Graph.Nodes, n => n.Name.StartsWith("/lm_head/", StringComparison.Ordinal) && n.OpType == "MatMul");
        Assert.All(head.Model.Graph.Nodes.Where(n => n.Name.Contains("/moe/router/") || n.Name.Contains("/shared_expert_gate/")), n => Assert.NotEqual("MatMulNBits", n.OpType));
        var st = head.Structure;
        Assert.Equal((long)st.VocabSize * st.HiddenSize * 4, withHead.Counters["bytes-before"] - report.Counters["bytes-before"]);   // lm_head's f32 bytes
        Assert.InRange(withHead.Counters["bytes-after"] - report.Counters["bytes-after"], st.VocabSize * st.HiddenSize, st.VocabSize * st.HiddenSize * 2);

        // 8-bit lm_head moves the logits a little (8-bit round to nearest per 16 inputs), not a lot.
        var ids = Prompt(st.VocabSize);
        double diff = MaxAbsDiff(Logits(plain.Model, ids), Logits(head.Model, ids));
        Assert.InRange(diff, 1e-7, 0.05);
    }

    [Fact]
    public void Lm_head_bits_other_than_0_4_8_is_refused()
    {
        var e = Assert.Throws<PassException>(() => PassPipeline.Parse("quantize-int4{lm-head-bits=3}", Registry).CreatePasses().ToList());
        Assert.Contains("lm-head-bits 3 must be 0, 4 or 8", e.Message);
    }
}
