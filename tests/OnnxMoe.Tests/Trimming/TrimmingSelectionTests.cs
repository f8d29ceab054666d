using OnnxMoe.Compiler.Compile;
using OnnxMoe.Ir;
using OnnxMoe.Passes;
using OnnxMoe.Passes.Trimming;
using OnnxMoe.Structure;
using OnnxMoe.Tests.Lowering;
using static OnnxMoe.Tests.Trimming.TrimmingFixture;

namespace OnnxMoe.Tests.Trimming;

/// <summary>Passes choosing by ORT-measured calibration scores (one-shot, iterative, consecutive, reconstruction) and their errors.</summary>
public sealed class TrimmingSelectionTests
{
    private static int ArgMax(IReadOnlyDictionary<int, double> d) => d.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key).First().Key;

    [Fact]
    public void Drop_blocks_by_calibration_removes_the_most_similar_block()
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir("deepseek"));
        var scorer = Scorer(ckpt.Structure);
        var scores = scorer.Measure(ckpt.Model, [2]);
        int expected = ArgMax(scores.BlockSimilarity);
        var report = RunPipeline(ckpt.Model, "drop-blocks{n=1}", scorer);
        Assert.True(report.Changed);
        Assert.Equal(ckpt.Structure.Blocks.Select(b => b.Index), new[] { 0, 1, 2 }.Where(i => i != expected));
    }

    [Fact]
    public void Consecutive_block_drop_removes_the_most_similar_adjacent_run()
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir("deepseek"));
        var scorer = Scorer(ckpt.Structure);
        var runs = scorer.Measure(ckpt.Model, [2]).ConsecutiveSimilarity[2];
        int start = runs[0] >= runs[1] ? 0 : 1;
        RunPipeline(ckpt.Model, "drop-blocks{n=2,mode=consecutive}", scorer);
        Assert.Equal([start == 0 ? 2 : 0], ckpt.Structure.Blocks.Select(b => b.Index));
        Assert.Equal(["past_key_values.0.key", "past_key_values.0.value"], ckpt.Model.Graph.Inputs.Select(v => v.Name).Where(n => n.StartsWith("past", StringComparison.Ordinal)));
    }

    [Fact]
    public void Iterative_block_drop_rescores_after_each_removal()
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir("deepseek"));
        var scorer = new CountingScores(Scorer(ckpt.Structure));
        int first = ArgMax(scorer.Inner.Measure(ckpt.Model, []).BlockSimilarity);
        var logs = new List<string>();
        var context = new PassContext { Log = logs.Add }.Set<ICalibrationScores>(scorer);
        var report = new PassManager { ExternalCheck = (m, _) => LoadsInOrt(m) }.Run(ckpt.Model, PassPipeline.Parse("drop-blocks{n=2,selection=iterative}", Registry), context);
        Assert.Equal(2, scorer.Calls);
        Assert.Equal(2, report.Counters["blocks-removed"]);
        Assert.Contains(logs, l => l.Contains($"iteration 1: dropping block {first} "));
        Assert.Single(ckpt.Structure.Blocks);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Drop_moe_layers_by_calibration_uses_the_chosen_similarity(bool norm)
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir("deepseek"));
        var scorer = Scorer(ckpt.Structure);
        var scores = scorer.Measure(ckpt.Model, []);
        int expected = ArgMax(norm ? scores.MoeSimilarity : scores.MoeSimilarityNoNorm);
        Assert.NotEqual(0, expected); // layer 0 is dense: never a candidate
        var report = RunPipeline(ckpt.Model, $"drop-moe-layers{{n=1,norm={(norm ? "true" : "false")}}}", scorer);
        Assert.Equal(1, report.Counters["moe-layers-removed"]);
        Assert.Null(ckpt.Structure.Blocks.First(b => b.Index == expected).Ffn);
    }

    [Fact]
    public void Global_expert_drop_removes_the_lowest_routing_scores_across_layers()
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir("mixtral"));
        var before = ckpt.Structure;
        var scorer = Scorer(before);
        var scores = scorer.Measure(ckpt.Model, []);
        var lowest = before.Blocks.SelectMany(b => b.Ffn!.Moe!.ExpertIds.Select((e, c) => (b.Index, e, scores.ExpertRouting[b.Index][c])))
            .OrderBy(t => t.Item3).Take(4).Select(t => (t.Index, t.e)).ToHashSet();
        var report = RunPipeline(ckpt.Model, "prune-experts{keep=75%,mode=global}", scorer);
        Assert.Equal(4, report.Counters["experts-removed"]); // round((8 - 6) x 2 layers)
        var after = ckpt.Structure;
        var removed = before.Blocks.SelectMany(b => b.Ffn!.Moe!.ExpertIds.Except(after.Blocks.First(x => x.Index == b.Index).Ffn!.Moe!.ExpertIds).Select(e => (b.Index, e))).ToHashSet();
        Assert.Equal(lowest, removed);
    }

    [Fact]
    public void Iterative_layerwise_expert_drop_reaches_the_target_in_every_layer()
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir("qwen2_moe"));
        var counts = ckpt.Structure.Blocks.Where(b => b.Ffn is { Kind: FfnKind.Moe }).ToDictionary(b => b.Index, b => b.Ffn!.Moe!.ExpertIds.Count);
        var report = RunPipeline(ckpt.Model, "prune-experts{keep=50%,selection=iterative}", Scorer(ckpt.Structure));
        Assert.True(report.Changed);
        foreach (var b in ckpt.Structure.Blocks.Where(b => b.Ffn is { Kind: FfnKind.Moe }))
        {
            Assert.Equal(counts[b.Index] / 2, b.Ffn!.Moe!.ExpertIds.Count);
            Assert.NotNull(b.Ffn.Moe.SharedExpert);
        }
    }

    [Fact]
    public void Reconstruction_criterion_keeps_a_subset_at_least_as_good_as_routing()
    {
        using var byRouting = new LoweredCheckpoint(FamilyData.Dir("mixtral"));
        using var byReconstruction = new LoweredCheckpoint(FamilyData.Dir("mixtral"));
        using var greedy = new LoweredCheckpoint(FamilyData.Dir("mixtral"));
        using var original = new LoweredCheckpoint(FamilyData.Dir("mixtral"));
        var scorer = Scorer(original.Structure);
        RunPipeline(byRouting.Model, "prune-experts{keep=5}", scorer);
        RunPipeline(byReconstruction.Model, "prune-experts{keep=5,criterion=reconstruction}", scorer);
        RunPipeline(greedy.Model, "prune-experts{keep=5,criterion=reconstruction,max-subsets=1}", scorer);
        foreach (var b in original.Structure.Blocks)
        {
            IReadOnlyList<int> Kept(LoweredCheckpoint c) => c.Structure.Blocks.First(x => x.Index == b.Index).Ffn!.Moe!.ExpertIds;
            var errors = scorer.ReconstructionErrors(original.Model, b.Index, [Kept(byRouting), Kept(byReconstruction), Kept(greedy)]);
            Assert.True(errors[1] <= errors[0], $"layer {b.Index}: reconstruction choice error {errors[1]} > routing choice error {errors[0]}");
            Assert.True(errors[1] <= errors[2], $"layer {b.Index}: exhaustive {errors[1]} worse than greedy {errors[2]}");
            Assert.Equal(5, Kept(greedy).Count);
        }
    }

    [Fact]
    public void Nothing_to_remove_reports_unchanged()
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir("mixtral"));
        var scorer = Scorer(ckpt.Structure);
        var report = RunPipeline(ckpt.Model, "prune-experts{keep=8},drop-blocks{n=0},drop-moe-layers{layers=[]}", scorer);
        Assert.False(report.Changed);
        Assert.All(report.Passes, p => Assert.False(p.Changed));
    }

    public static TheoryData<string, string, string> BadPipelines => new()
    {
        { "mixtral", "drop-blocks{blocks=5}", "pass drop-blocks: layer 5 does not exist; valid layers: 0..1" },
        { "mixtral", "drop-blocks{blocks=0,1}", "pass drop-blocks: dropping 2 of the model's 2 blocks would leave no decoder block; drop at most 1" },
        { "mixtral", "drop-blocks{n=100%}", "would leave no decoder block" },
        { "mixtral", "drop-blocks{blocks=1,n=1}", "give blocks=... or n=..., not both" },
        { "mixtral", "drop-blocks{n=1}", "needs calibration scores" },
        { "deepseek", "drop-moe-layers{layers=0}", "pass drop-moe-layers: layer 0 is a dense MLP layer, not an MoE layer; MoE layers: 1..2" },
        { "deepseek", "drop-moe-layers{layers=7}", "layer 7 does not exist; valid layers: 0..2" },
        { "mixtral", "prune-experts{experts=0:9}", "pass prune-experts: layer 0 has no routed expert 9; its experts: 0..7" },
        { "mixtral", "prune-experts{experts=0:0,0:1,0:2,0:3,0:4,0:5,0:6,0:7}", "would remove every routed expert of layer 0" },
        { "mixtral", "prune-experts{keep=0}", "keep at least 1" },
        { "mixtral", "prune-experts{keep=4,mode=global,criterion=reconstruction}", "use it with mode=layerwise" },
    };

    [Theory]
    [MemberData(nameof(BadPipelines))]
    public void Bad_options_give_clear_errors(string family, string pipeline, string message)
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir(family));
        var e = Assert.Throws<PassException>(() => RunPipeline(ckpt.Model, pipeline));
        Assert.Contains(message, e.Message);
        Assert.IsAssignableFrom<UserErrorException>(e);
    }

    [Theory]
    [InlineData("drop-blok{n=1}", "unknown pass 'drop-blok'")]
    [InlineData("drop-blocks{mode=diagonal}", "diagonal")]
    [InlineData("prune-experts{keep=lots}", "lots")]
    [InlineData("drop-moe-layers{depth=2}", "depth")]
    public void Bad_pipeline_text_is_rejected_before_running(string pipeline, string message)
    {
        var e = Assert.Throws<PipelineException>(() => PassPipeline.Parse(pipeline, Registry));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void A_failing_trimming_pass_leaves_no_compile_output()
    {
        var outDir = Path.Combine(Directory.CreateTempSubdirectory("onnxmoe-trim-out-").FullName, "out");
        var job = new CompileJob(new CompileRequest { Checkpoint = FamilyData.Dir("mixtral"), Output = outDir, Pipeline = "drop-blocks{blocks=0,1}", Registry = Registry });
        try
        {
            Assert.Throws<PassException>(() => job.Run());
            Assert.False(Directory.Exists(outDir));
            Assert.Empty(Directory.GetFileSystemEntries(Path.GetDirectoryName(outDir)!));
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(outDir)!, recursive: true);
        }
    }

    private sealed class CountingScores(ICalibrationScores inner) : ICalibrationScores
    {
        public ICalibrationScores Inner { get; } = inner;
        public int Calls { get; private set; }

        public TrimmingScores Measure(Model model, IReadOnlyList<int> consecutiveRuns, CancellationToken cancellationToken = default)
        {
            Calls++;
            return Inner.Measure(model, consecutiveRuns, cancellationToken);
        }

        public IReadOnlyList<double> ReconstructionErrors(Model model, int layer, IReadOnlyList<IReadOnlyList<int>> keptExperts, CancellationToken cancellationToken = default) =>
            Inner.ReconstructionErrors(model, layer, keptExperts, cancellationToken);
    }
}
