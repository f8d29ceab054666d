using OnnxMoe.Passes.Calibration;
using OnnxMoe.Compiler.Calibration;
using OnnxMoe.Ir;
using OnnxMoe.Passes.Trimming;
using OnnxMoe.Structure;
using OnnxMoe.Tests.Lowering;
using OnnxMoe.Tests.Trimming;

namespace OnnxMoe.Tests.Calibration;

/// <summary>The block-sequential calibration core against the whole-model probes it replaced, and its memory behaviour.</summary>
public sealed class BlockSequentialTests
{
    public static TheoryData<string> Families => new(FamilyData.Names);

    /// <summary>Every score, block by block, equals the whole-model session's in-graph probes to 1e-5 relative (both compute in f32;
    /// the difference is summation order), on all five families, with the states spilled to files or kept in memory.</summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void Block_sequential_scores_equal_whole_model_scores(string family)
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir(family));
        var s = ckpt.Structure;
        var data = TrimmingFixture.Tokens(s.VocabSize, samples: 5, seqLen: 7);
        int[] runs = [1, 2, Math.Min(3, s.NumLayers)];
        var reference = new WholeModelScores(data).Measure(ckpt.Model, runs);
        foreach (long budget in new[] { 64L << 20, 1 })   // 1 byte: every state spills
        {
            using var scorer = new OrtScorer(CalibrationCorpus.FromTokens(data), 5, 7,
                new RegionRunnerOptions { BatchSize = 2, MemoryBudget = budget });
            AssertScoresEqual(reference, scorer.Measure(ckpt.Model, runs), 1e-5);
            Assert.Equal(budget == 1, scorer.Core.Store.SpilledBytes > 0);
            Assert.Equal(budget == 1, scorer.Core.Store.PeakInMemoryBytes == 0);
        }
    }

    internal static void AssertScoresEqual(TrimmingScores expected, TrimmingScores actual, double relative)
    {
        Assert.Equal(expected.Tokens, actual.Tokens);
        void Close(double e, double a, string what) =>
            Assert.True(Math.Abs(e - a) <= relative * Math.Max(Math.Abs(e), 1e-3), $"{what}: whole-model {e:R}, block-sequential {a:R}");
        Assert.Equal(expected.BlockSimilarity.Keys, actual.BlockSimilarity.Keys);
        foreach (var (k, v) in expected.BlockSimilarity) Close(v, actual.BlockSimilarity[k], $"block {k}");
        Assert.Equal(expected.MoeSimilarity.Keys, actual.MoeSimilarity.Keys);
        foreach (var (k, v) in expected.MoeSimilarity) Close(v, actual.MoeSimilarity[k], $"moe {k}");
        foreach (var (k, v) in expected.MoeSimilarityNoNorm) Close(v, actual.MoeSimilarityNoNorm[k], $"moe no-norm {k}");
        Assert.Equal(expected.ExpertRouting.Keys, actual.ExpertRouting.Keys);
        foreach (var (k, v) in expected.ExpertRouting)
            for (int e = 0; e < v.Length; e++) Close(v[e], actual.ExpertRouting[k][e], $"routing layer {k} column {e}");
        Assert.Equal(expected.ConsecutiveSimilarity.Keys, actual.ConsecutiveSimilarity.Keys);
        foreach (var (n, v) in expected.ConsecutiveSimilarity)
            for (int i = 0; i < v.Length; i++) Close(v[i], actual.ConsecutiveSimilarity[n][i], $"run {n} at {i}");
    }

    /// <summary>After a block is removed, measuring again runs only the blocks from the removed one on (their inputs changed), and the scores
    /// still equal a fresh whole-model measurement of the changed model.</summary>
    [Fact]
    public void Measuring_again_after_a_change_restarts_from_the_first_changed_block()
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir("tiny-mixtral"));
        var s = ckpt.Structure;
        Assert.True(s.NumLayers >= 3);
        var data = TrimmingFixture.Tokens(s.VocabSize, samples: 3, seqLen: 6);
        using var scorer = new OrtScorer(CalibrationCorpus.FromTokens(data), 3, 6);
        scorer.Measure(ckpt.Model, [1]);
        Assert.Equal(s.NumLayers, scorer.Core.BlocksRun);
        scorer.Measure(ckpt.Model, [1, 2]);
        Assert.Equal(s.NumLayers, scorer.Core.BlocksRun);   // unchanged: nothing runs again

        var context = new OnnxMoe.Passes.PassContext().Set<ICalibrationScores>(new FixedCalibrationScores(new TrimmingScores
        {
            BlockSimilarity = s.Blocks.ToDictionary(b => b.Index, b => b.Index == s.Blocks[1].Index ? 1.0 : 0.0),
            ConsecutiveSimilarity = new Dictionary<int, double[]> { [1] = s.Blocks.Select(b => b.Index == s.Blocks[1].Index ? 1.0 : 0.0).ToArray() },
        }));
        new OnnxMoe.Passes.PassManager().Run(ckpt.Model, OnnxMoe.Passes.PassPipeline.Parse("drop-blocks{n=1}", TrimmingFixture.Registry), context);
        var after = DecoderStructure.Read(ckpt.Model);
        Assert.Equal(s.NumLayers - 1, after.NumLayers);
        Assert.DoesNotContain(after.Blocks, b => b.Index == s.Blocks[1].Index);
        var scores = scorer.Measure(ckpt.Model, [1]);
        // Block 0 is cached; the blocks after the removed one see new inputs and run again.
        Assert.Equal(s.NumLayers + after.NumLayers - 1, scorer.Core.BlocksRun);
        AssertScoresEqual(new WholeModelScores(data).Measure(ckpt.Model, [1]), scores, 1e-5);
    }

    [Fact]
    public void Spilled_states_leave_no_file_and_round_trip()
    {
        var dir = Directory.CreateTempSubdirectory("onnxmoe-spill-").FullName;
        try
        {
            using var store = new HiddenStateStore(budget: 100, dir);
            using var a = store.Allocate(3, 2, 4, DataType.Float);   // 96 bytes: in memory
            using var b = store.Allocate(3, 2, 4, DataType.Float);   // over the budget: a spill file
            Assert.True(a.InMemory);
            Assert.False(b.InMemory);
            Assert.Empty(Directory.GetFiles(dir));   // unlinked as soon as opened
            var bytes = Enumerable.Range(0, 64).Select(i => (byte)i).ToArray();
            foreach (var x in new[] { a, b })
            {
                x.Write(1, bytes);
                var back = new byte[64];
                x.Read(1, 2, back);
                Assert.Equal(bytes, back);
            }
            Assert.Equal(96, store.SpilledBytes);
            Assert.Equal(96, store.PeakInMemoryBytes);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_budget_too_small_for_one_block_names_the_size_needed()
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir("mixtral"));
        var s = ckpt.Structure;
        using var scorer = new OrtScorer(CalibrationCorpus.FromTokens(TrimmingFixture.Tokens(s.VocabSize, 2, 4)), 2, 4,
            new RegionRunnerOptions { MemoryBudget = 4096, MemoryBudgetExplicit = true });
        long blockBytes = OnnxMoe.Ir.Building.RegionExtractor.Extract(ckpt.Model,
            [BlockStateCache.Value(ckpt.Model, s.Blocks[0].Input)], [BlockStateCache.Value(ckpt.Model, s.Blocks[0].Output)]).Graph.Initializers.Sum(v => v.ConstValue!.ByteLength);
        Assert.True(blockBytes > 4096);
        var e = Assert.Throws<UserErrorException>(() => scorer.Measure(ckpt.Model, [1]));
        Assert.Contains($"block {s.Blocks[0].Index} ({(blockBytes + (1 << 20) - 1) >> 20} MiB of weights", e.Message);
        Assert.Contains("raise --calibration-memory to at least", e.Message);
    }
}
