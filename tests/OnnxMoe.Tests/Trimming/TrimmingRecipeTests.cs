using OnnxMoe.Compiler.Compile;
using OnnxMoe.Compiler.Analysis;
using OnnxMoe.Compiler.Calibration;
using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Structure;
using static OnnxMoe.Tests.Trimming.TrimmingFixture;

namespace OnnxMoe.Tests.Trimming;

/// <summary>The built-in trimming recipes on the trained tiny models (models/tiny-*), calibrated on the shipped KJV text
/// with tiny sizes (2 samples x 32 tokens instead of 128 x 2048).</summary>
public sealed class TrimmingRecipeTests
{
    private static string ModelDir(string name) => Lowering.FamilyData.Dir(name);

    private static readonly CalibrationSettings Tiny = new(Samples: 2, SeqLen: 32);

    public static TheoryData<string, string> Cases()
    {
        var d = new TheoryData<string, string>();
        foreach (var model in new[] { "tiny-mixtral", "tiny-deepseek" })
            foreach (var recipe in new[] { "expert-drop", "layer-drop-4", "layer-drop-8", "block-drop-4", "block-drop-8" })
                d.Add(model, recipe);
        return d;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Built_in_trimming_recipe_compiles_a_tiny_model(string model, string recipeName)
    {
        using var ckpt = new LoweredCheckpoint(ModelDir(model));
        var before = ckpt.Structure;
        var recipe = BuiltinRecipes.Load(recipeName, Registry);
        using var scorer = new OrtScorer(CalibrationCorpus.FromSettings(ModelDir(model), Tiny), Tiny.Samples, Tiny.SeqLen);
        var report = RunPipeline(ckpt.Model, recipe.Pipeline.ToString(), scorer);
        Assert.True(report.Changed, $"{recipeName} changed nothing on {model}");
        var after = ckpt.Structure;
        int moeBefore = before.Blocks.Count(b => b.Ffn is { Kind: FfnKind.Moe });
        switch (recipeName)
        {
            case "block-drop-4" or "block-drop-8":
                Assert.Equal(before.NumLayers - Math.Max(1, (int)Math.Round(before.NumLayers * (recipeName.EndsWith('4') ? 0.125 : 0.25), MidpointRounding.AwayFromZero)), after.NumLayers);
                break;
            case "layer-drop-4" or "layer-drop-8":
                Assert.True(after.Blocks.Count(b => b.Ffn is { Kind: FfnKind.Moe }) < moeBefore);
                break;
            case "expert-drop":
                int experts = before.Blocks.Sum(b => b.Ffn?.Moe?.ExpertIds.Count ?? 0);
                Assert.Equal(experts - (int)Math.Round(experts * 0.25, MidpointRounding.AwayFromZero), after.Blocks.Sum(b => b.Ffn?.Moe?.ExpertIds.Count ?? 0));
                break;
        }
        // Still a decoder that produces logits for every position.
        Assert.Equal(7 * before.VocabSize, Logits(ckpt.Model, Prompt(before.VocabSize)).Length);
    }

    [Theory]
    [InlineData("tiny-mixtral")]
    [InlineData("tiny-deepseek")]
    public void The_combined_recipe_compiles_a_tiny_model_end_to_end(string model)
    {
        string output = Path.Combine(Directory.CreateTempSubdirectory("onnxmoe-combined-").FullName, "out");
        try
        {
            var report = CompileJob.Run(new CompileRequest
            {
                Checkpoint = ModelDir(model), Output = output, Recipe = "block-drop-awq", Samples = Tiny.Samples, SeqLen = Tiny.SeqLen, Registry = Registry,
            });
            Assert.Equal(3, report.NumLayers);                                   // 25% of 4 blocks
            var compiled = OnnxMoe.Onnx.OnnxReader.Read(Path.Combine(output, "model.onnx"));
            Assert.DoesNotContain(compiled.Graph.Nodes, n => n.OpType == "MatMul" && n.Name.EndsWith("/w2/MatMul"));
            // Quantized experts, fused by the fuse the compile ends with into one QMoE node per MoE layer where the expert widths are
            // multiples of the block (tiny-mixtral), else left as MatMulNBits (tiny-deepseek's experts are 64 wide, the blocks 128).
            var structure = DecoderStructure.Read(compiled);
            foreach (var b in structure.Blocks.Where(b => b.Ffn?.Moe != null))
                if (b.Ffn!.Moe!.FusedNode is { } fused) Assert.Contains(compiled.Graph.Nodes, n => n.OpType == "QMoE" && n.Name == fused);
                else Assert.Contains(compiled.Graph.Nodes, n => n.OpType == "MatMulNBits" && n.Name.StartsWith(b.Ffn.ExpertScope(b.Ffn.Moe.ExpertIds[0]), StringComparison.Ordinal));
            Assert.Equal(model == "tiny-mixtral", structure.Blocks.Any(b => b.Ffn?.Moe?.FusedNode != null));
            var genai = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(output, "genai_config.json")))!;
            Assert.Equal(3, (int)genai["model"]!["decoder"]!["num_hidden_layers"]!);
            var s = DecoderStructure.Read(compiled);
            Assert.Equal(7 * s.VocabSize, Logits(compiled, Prompt(s.VocabSize)).Length);
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(output)!, recursive: true);
        }
    }

    [Fact]
    public void Analyzer_reports_what_the_recipes_remove_on_a_tiny_model()
    {
        using var ckpt = new LoweredCheckpoint(ModelDir("tiny-deepseek"));
        using var scorer = new OrtScorer(CalibrationCorpus.FromSettings(ModelDir("tiny-deepseek"), Tiny), Tiny.Samples, Tiny.SeqLen);
        var report = Analyzer.Run(ckpt.Model, scorer, Registry);
        Assert.Equal(4, report.Blocks.Count);
        Assert.Equal(3, report.MoeLayers.Count);                 // first_k_dense_replace = 1
        Assert.Equal(3 * 16, report.Experts.Count);
        Assert.All(report.Blocks, b => Assert.InRange(b.Similarity, -1, 1));
        var best = report.Blocks.OrderByDescending(b => b.Similarity).First().Layer;
        Assert.Equal($"blocks {best}", report.Recipes.First(r => r.Recipe == "block-drop-4").Summary());
        Assert.Equal(12, report.Recipes.First(r => r.Recipe == "expert-drop").Removes.Count); // 25% of 48
        Assert.Contains("<svg", report.ToSvg("experts"));
        Assert.Equal(4, report.BarChart("blocks").Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }
}
