using OnnxMoe.Ir;
using OnnxMoe.Onnx;
using OnnxMoe.Passes.Fusion;
using OnnxMoe.Passes.Quantization;
using OnnxMoe.Tests.Awq;
using OnnxMoe.Structure;
using OnnxMoe.Tests.Lowering;
using OnnxMoe.Tests.Trimming;
using static OnnxMoe.Tests.Trimming.TrimmingFixture;

namespace OnnxMoe.Tests.Fusion;

/// <summary>
/// fuse's skip norms (each residual Add and the norm reading its sum as one com.microsoft SkipSimplifiedLayerNormalization)
/// against the standard form through ORT on the five random family checkpoints, the structure record that points at them, and
/// the passes that run on them after fuse. fp32 logits within 1e-4 (max abs) with left padding, prefill and token-by-token
/// decoding with the KV cache (<see cref="AttentionFusionTests.Decode"/>).
/// </summary>
public sealed class SkipNormFusionTests
{
    private const double Tolerance = 1e-4;
    private const string Skip = SkipNormFusion.OpType;

    public static TheoryData<string> Families => new(FamilyData.Names);

    /// <summary>Skip norms alone (attention and experts keep standard ops): every post-attention norm and every norm reading a
    /// block output (the next block's input norm, the final norm) takes its residual Add in.</summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void Each_residual_add_folds_into_the_norm_reading_it_and_the_structure_names_the_fused_node(string family)
    {
        using var standard = new LoweredCheckpoint(FamilyData.Dir(family));
        using var fused = new LoweredCheckpoint(FamilyData.Dir(family));
        var report = RunPipeline(fused.Model, "fuse{moe=off,attention=false}");
        var s = fused.Structure;
        var g = fused.Model.Graph;
        int expected = s.Blocks.Count(b => b.Ffn != null) + s.NumLayers;
        Assert.Equal(expected, report.Counters.GetValueOrDefault("skip-norms-fused"));
        Assert.Equal(expected, g.Nodes.Count(n => n.OpType == Skip && n.Domain == "com.microsoft"));
        Assert.DoesNotContain(g.Nodes, n => n.OpType == "Add" && n.Name.Contains("/residual_", StringComparison.Ordinal));
        var nodes = g.Nodes.ToDictionary(n => n.Name);
        foreach (var b in s.Blocks)
        {
            // Inputs 0 and 1 as the residual Add had them; output 3 the sum, output 0 the norm, 1 and 2 left out.
            var attn = nodes[b.Attention.ResidualAdd];
            Assert.Equal(Skip, attn.OpType);
            Assert.Equal(b.Input, attn.Inputs[0]!.Name);
            Assert.Equal(b.Attention.Output, attn.Outputs[3].Name);
            Assert.Equal(b.Ffn!.Input, attn.Outputs[0].Name);
            Assert.StartsWith(b.Ffn.NormPrefix, attn.Name, StringComparison.Ordinal);
            var ffn = nodes[b.Ffn.ResidualAdd];
            Assert.Equal(Skip, ffn.OpType);
            Assert.Equal([b.Attention.Output, b.Ffn.Output], ffn.Inputs.Take(2).Select(v => v!.Name));
            Assert.Equal(["", ""], ffn.Outputs.Skip(1).Take(2).Select(v => v.Name));
            Assert.Equal(b.Output, ffn.Outputs[3].Name);
        }
        Assert.Equal(s.Blocks[^1].Output, nodes[s.FinalNormInputNode].Outputs[3].Name);
        Assert.Equal(s.Blocks[^1].Ffn!.ResidualAdd, s.FinalNormInputNode);

        AssertSameLogits(standard.Model, fused.Model, family);
    }

    /// <summary>Prefill and token-by-token logits of <paramref name="got"/> within <see cref="Tolerance"/> of <paramref name="want"/>'s.</summary>
    private static void AssertSameLogits(Model want, Model got, string what)
    {
        double worst = AttentionFusionTests.Decode(want).Zip(AttentionFusionTests.Decode(got)).Max(p => MaxAbsDiff(p.First, p.Second));
        Assert.True(worst <= Tolerance, $"{what}: max abs logit difference {worst:E3}");
    }

    /// <summary>The passes that cut the residual stream see plain Adds, named as the standard form names them, and get their skip
    /// norms back byte for byte when they change nothing.</summary>
    [Fact]
    public void Splitting_for_a_pass_and_folding_again_gives_the_same_bytes()
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir("deepseek"));
        RunPipeline(ckpt.Model, "fuse");
        var fused = OnnxWriter.ToBytes(ckpt.Model);
        var inside = SkipNormFusion.WithResidualAdds(ckpt.Model, "test", () => (DecoderStructure.Read(ckpt.Model), ckpt.Model.Graph.Nodes.Count(n => n.OpType == Skip)));
        Assert.Equal(0, inside.Item2);
        Assert.All(inside.Item1.Blocks, b =>
        {
            Assert.Equal($"/model/layers.{b.Index}/residual_attn/Add", b.Attention.ResidualAdd);
            Assert.Equal($"/model/layers.{b.Index}/residual_ffn/Add", b.Ffn!.ResidualAdd);
        });
        Assert.Equal("/model/norm/SimplifiedLayerNormalization", inside.Item1.FinalNormInputNode);
        Assert.Equal(fused, OnnxWriter.ToBytes(ckpt.Model));

        // A trimming pass that removes nothing leaves the bytes as they were too, but for the pipeline it records.
        var pipeline = ckpt.Model.GetMetadata(OnnxMoe.Passes.PassManager.PipelineMetadataKey)!;
        RunPipeline(ckpt.Model, "drop-blocks{n=0}");
        Assert.NotEqual(pipeline, ckpt.Model.GetMetadata(OnnxMoe.Passes.PassManager.PipelineMetadataKey));
        ckpt.Model.SetMetadata(OnnxMoe.Passes.PassManager.PipelineMetadataKey, pipeline);
        Assert.Equal(fused, OnnxWriter.ToBytes(ckpt.Model));
    }

    /// <summary>Block Drop and Layer Drop chosen by calibration after fuse: the scores run block regions cut at block inputs, which
    /// the skip norms straddle, so the passes score the split form and choose as they do before fuse.</summary>
    [Fact]
    public void Scored_drops_after_fuse_choose_and_compute_as_before_it()
    {
        using var before = new LoweredCheckpoint(FamilyData.Dir("deepseek"));
        using var after = new LoweredCheckpoint(FamilyData.Dir("deepseek"));
        const string drops = "drop-blocks{n=1},drop-moe-layers{n=1}";
        using (var scorer = Scorer(before.Structure)) RunPipeline(before.Model, drops + ",fuse", scorer);
        using (var scorer = Scorer(after.Structure)) RunPipeline(after.Model, "fuse," + drops, scorer);
        Assert.Equal(before.Structure.ToJson(), after.Structure.ToJson());
        Assert.Contains(after.Model.Graph.Nodes, n => n.OpType == Skip);
        AssertSameLogits(before.Model, after.Model, "drops after fuse");
    }

    /// <summary>AWQ's calibration after fuse runs block regions as the scores do: on the split form, so the skip-fused model gets the
    /// scales the skip-less fused model gets, and its skip norms back.</summary>
    [Fact]
    public void Awq_after_fuse_calibrates_the_split_form()
    {
        var dir = Directory.CreateTempSubdirectory("onnxmoe-skip-awq-").FullName;
        try
        {
            var ckpt = AwqTestModels.CreateRandom("mixtral", dir, kvHeads: 2);
            using var withSkip = new LoweredCheckpoint(ckpt);
            using var without = new LoweredCheckpoint(ckpt);
            const string awq = ",quantize-int4{method=awq,block-size=16}";
            int skips = 0;
            foreach (var (model, fuse) in new[] { (withSkip.Model, "fuse{moe=off}"), (without.Model, "fuse{moe=off,skip-norm=false}") })
            {
                var context = new OnnxMoe.Passes.PassContext().Set<IAwqCalibration>(AwqTestModels.Service(AwqTestModels.SmallOptions(), AwqTestModels.MixtralTokenizer));
                new OnnxMoe.Passes.PassManager { ExternalCheck = (m, _) => LoadsInOrt(m) }.Run(model, OnnxMoe.Passes.PassPipeline.Parse(fuse + awq, Registry), context);
                skips += model.Graph.Nodes.Count(n => n.OpType == Skip);
            }
            Assert.Equal(2 * withSkip.Structure.NumLayers, skips);
            var ids = Prompt(withSkip.Structure.VocabSize, length: 9);
            double diff = MaxAbsDiff(Logits(without.Model, ids), Logits(withSkip.Model, ids));
            Assert.True(diff <= Tolerance, $"max abs logit difference {diff:E3}");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>An f16 graph keeps its residual Adds (the fused f16 logits drifted further from fp32 and flipped a near-tied routing
    /// choice of qwen2_moe); its norms still become SimplifiedLayerNormalization.</summary>
    [Fact]
    public void An_fp16_graph_keeps_its_residual_adds()
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir("mixtral"), new OnnxMoe.Lowering.LoweringOptions { WeightType = DataType.Float16 });
        var report = RunPipeline(ckpt.Model, "fuse");
        Assert.Equal(0, report.Counters.GetValueOrDefault("skip-norms-fused"));
        Assert.True(report.Counters.GetValueOrDefault("norms-fused") > 0);
        var nodes = ckpt.Model.Graph.Nodes.ToDictionary(n => n.Name);
        Assert.All(ckpt.Structure.Blocks, b => Assert.Equal("Add", nodes[b.Attention.ResidualAdd].OpType));
    }
}
