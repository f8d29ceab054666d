using System.Runtime.CompilerServices;
using System.Text.Json;
using OnnxMoe.Compiler.Analysis;
using OnnxMoe.Compiler.Diff;
using OnnxMoe.Passes.Trimming;
using OnnxMoe.Tests.Lowering;
using OnnxMoe.Tests.Snapshots;
using static OnnxMoe.Tests.Trimming.TrimmingFixture;

namespace OnnxMoe.Tests.Trimming;

/// <summary>
/// Golden text in tests/OnnxMoe.Tests/Trimming/__snapshots__: the structural diff (ModelDiff) each pass makes on a
/// tiny random Mixtral (2 layers, 4 experts, seed 7), and the analyzer's outputs for fixed scores.
/// A mismatch writes a .received.txt beside the snapshot; ONNXMOE_UPDATE_SNAPSHOTS=1 accepts it.
/// </summary>
public sealed class TrimmingSnapshotTests : IDisposable
{
    private static readonly SnapshotStore Store = new(Path.Combine(SourceDirectory(), "__snapshots__"), Environment.GetEnvironmentVariable(Snapshot.UpdateVariable) == "1");
    private readonly string _checkpoint = TinyCheckpoints.Create("mixtral");

    private static string SourceDirectory([CallerFilePath] string file = "") => Path.GetDirectoryName(file)!;

    public void Dispose() => Directory.Delete(_checkpoint, true);

    [Theory]
    [InlineData("drop-blocks{blocks=0}", "diff-drop-blocks")]
    [InlineData("drop-moe-layers{layers=1}", "diff-drop-moe-layers")]
    [InlineData("prune-experts{experts=0:1,1:0,1:3}", "diff-prune-experts")]
    public void Pass_diff_matches_snapshot(string pipeline, string snapshot)
    {
        using var original = new LoweredCheckpoint(_checkpoint);
        using var trimmed = new LoweredCheckpoint(_checkpoint);
        RunPipeline(trimmed.Model, pipeline);
        Store.Match(ModelDiff.Compute(original.Model, trimmed.Model).ToText(), snapshot);
    }

    [Fact]
    public void Analysis_outputs_match_snapshots()
    {
        using var ckpt = new LoweredCheckpoint(_checkpoint);
        var s = ckpt.Structure;
        // Hand-made scores: block 1 and MoE layer 0 most similar; routing weights distinct per expert.
        var scores = new TrimmingScores
        {
            Tokens = 100,
            BlockSimilarity = new Dictionary<int, double> { [0] = 0.61, [1] = 0.93 },
            MoeSimilarity = new Dictionary<int, double> { [0] = 0.97, [1] = 0.88 },
            MoeSimilarityNoNorm = new Dictionary<int, double> { [0] = 0.12, [1] = 0.31 },
            ExpertRouting = new Dictionary<int, double[]> { [0] = [40, 10, 30, 20], [1] = [5, 45, 35, 15] },
            ConsecutiveSimilarity = new Dictionary<int, double[]> { [1] = [0.61, 0.93] },
        };
        var report = Analyzer.Run(ckpt.Model, new FixedCalibrationScores(scores), Registry);
        Store.Match(report.ToJson(), "analysis-json");
        Store.Match(string.Join("\n", AnalysisReport.ChartKinds.Select(k => report.BarChart(k, 20))), "analysis-bars");
        Store.Match(report.ToSvg("blocks") + report.ToSvg("layers") + report.ToSvg("experts"), "analysis-svg");
        using (JsonDocument.Parse(report.ToJson())) { }
        var byRecipe = report.Recipes.ToDictionary(r => r.Recipe, r => r.Summary());
        Assert.Equal("blocks 1", byRecipe["block-drop-4"]);
        Assert.Equal("moe layers 0", byRecipe["layer-drop-8"]);
        Assert.Equal("2 experts 0:1, 1:0", byRecipe["expert-drop"]); // round((4 - 3) x 2) lowest: 0:1 (10), 1:0 (5)
        Assert.Equal("blocks 1", byRecipe["block-drop-awq"]); // its quantize step removes nothing
    }
}
