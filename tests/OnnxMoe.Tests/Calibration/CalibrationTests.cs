using OnnxMoe.Compiler.Calibration;
using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Inference.Tokenization;
using OnnxMoe.Ir;
using OnnxMoe.Structure;
using OnnxMoe.Tests.Lowering;
using OnnxMoe.Tests.Trimming;
using Arr = OnnxMoe.Tests.Lowering.ReferenceEvaluator.Arr;

namespace OnnxMoe.Tests.Calibration;

/// <summary>Calibration scores measured through ORT against sums that must hold and an independent evaluation in double.</summary>
public sealed class CalibrationTests
{
    [Theory]
    [InlineData("mixtral")]
    [InlineData("deepseek")]
    [InlineData("qwen2_moe")]
    public void Scores_match_cosines_computed_from_reference_hidden_states(string family)
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir(family));
        var s = ckpt.Structure;
        var data = TrimmingFixture.Tokens(s.VocabSize, samples: 3, seqLen: 6);
        var progress = new List<CalibrationProgress>();
        using var scorer = new OrtScorer(CalibrationCorpus.FromTokens(data), 3, 6, new RegionRunnerOptions { BatchSize = 2, Progress = progress.Add });
        int nodes = ckpt.Model.Graph.NodeCount, inits = ckpt.Model.Graph.Initializers.Count, outs = ckpt.Model.Graph.Outputs.Count;
        var scores = scorer.Measure(ckpt.Model, [1, 2]);
        // The model is left as it was.
        Assert.Equal((nodes, inits, outs), (ckpt.Model.Graph.NodeCount, ckpt.Model.Graph.Initializers.Count, ckpt.Model.Graph.Outputs.Count));
        // Block by block: the embedding, then every block once, each over the samples in batches of 2.
        Assert.Equal(["embedding", .. s.Blocks.Select(b => $"block {b.Index}")], progress.Select(p => p.Stage).Distinct());
        Assert.All(progress.GroupBy(p => p.Stage), g => Assert.Equal([0, 2, 3], g.Select(p => p.SamplesDone)));
        Assert.Equal(18, scores.Tokens);

        // Softmax rows sum to one, so each layer's routing weights sum to the token count.
        foreach (var b in s.Blocks.Where(b => b.Ffn is { Kind: FfnKind.Moe }))
            Assert.Equal(18.0, scores.ExpertRouting[b.Index].Sum(), 3);
        foreach (var b in s.Blocks) Assert.Equal(scores.BlockSimilarity[b.Index], scores.ConsecutiveSimilarity[1][s.Blocks.IndexOf(b)], 6);

        // Independent: the hidden states from the double-precision reference evaluator, cosines in C#.
        var g = ckpt.Model.Graph;
        var byName = g.Nodes.SelectMany(n => n.Outputs).Concat(g.Inputs).GroupBy(v => v.Name).ToDictionary(x => x.Key, x => x.First());
        var exposed = s.Blocks.SelectMany(b => new[] { b.Input, b.Output, b.Attention.Output }.Concat(b.Ffn is { Kind: FfnKind.Moe } f ? [f.Input, f.Output] : []))
            .Distinct().Where(n => !byName[n].IsGraphOutput).ToList();
        foreach (var n in exposed) g.Outputs.Add(byName[n]);
        var block = new Dictionary<int, double>();
        var moe = new Dictionary<int, double>();
        var moeNoNorm = new Dictionary<int, double>();
        var run2 = new double[s.NumLayers - 1];
        try
        {
            foreach (var sample in data)
            {
                var ids = sample.Select(t => (long)t).ToArray();
                var outs2 = ReferenceEvaluator.Run(g, ReferenceNumericsTests.Feed(s, [ids], [ids.Select(_ => 1L).ToArray()], [Enumerable.Range(0, ids.Length).Select(i => (long)i).ToArray()], null));
                foreach (var b in s.Blocks)
                {
                    block[b.Index] = block.GetValueOrDefault(b.Index) + CosSum(outs2[b.Input], outs2[b.Output], s.HiddenSize);
                    if (b.Ffn is { Kind: FfnKind.Moe } f)
                    {
                        var h = outs2[b.Attention.Output];
                        var m = outs2[f.Output];
                        var sum = new Arr(h.Shape, h.Data.Zip(m.Data, (x, y) => x + y).ToArray(), DataType.Float);
                        moe[b.Index] = moe.GetValueOrDefault(b.Index) + CosSum(h, sum, s.HiddenSize);
                        moeNoNorm[b.Index] = moeNoNorm.GetValueOrDefault(b.Index) + CosSum(outs2[f.Input], m, s.HiddenSize);
                    }
                }
                for (int k = 0; k + 1 < s.NumLayers; k++) run2[k] += CosSum(outs2[s.Blocks[k].Input], outs2[s.Blocks[k + 1].Output], s.HiddenSize);
            }
        }
        finally
        {
            foreach (var n in exposed) g.Outputs.Remove(byName[n]);
        }
        const double tol = 1e-4;
        foreach (var (k, v) in block) Assert.True(Math.Abs(v / 18 - scores.BlockSimilarity[k]) <= tol, $"block {k}: {v / 18} vs {scores.BlockSimilarity[k]}");
        foreach (var (k, v) in moe) Assert.True(Math.Abs(v / 18 - scores.MoeSimilarity[k]) <= tol, $"moe {k}: {v / 18} vs {scores.MoeSimilarity[k]}");
        foreach (var (k, v) in moeNoNorm) Assert.True(Math.Abs(v / 18 - scores.MoeSimilarityNoNorm[k]) <= tol, $"moe no-norm {k}");
        for (int k = 0; k < run2.Length; k++) Assert.True(Math.Abs(run2[k] / 18 - scores.ConsecutiveSimilarity[2][k]) <= tol, $"run at {k}");
    }

    private static double CosSum(Arr a, Arr b, int hidden)
    {
        double total = 0;
        for (long t = 0; t < a.Data.LongLength / hidden; t++)
        {
            double dot = 0, na = 0, nb = 0;
            for (int j = 0; j < hidden; j++)
            {
                double x = a.Data[t * hidden + j], y = b.Data[t * hidden + j];
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
            total += dot / Math.Sqrt(na * nb);
        }
        return total;
    }

    [Fact]
    public void Reconstruction_error_is_zero_for_all_experts_and_grows_as_experts_go()
    {
        using var ckpt = new LoweredCheckpoint(FamilyData.Dir("mixtral"));
        var s = ckpt.Structure;
        var ids = s.Blocks[0].Ffn!.Moe!.ExpertIds;
        var scorer = TrimmingFixture.Scorer(s);
        var errors = scorer.ReconstructionErrors(ckpt.Model, s.Blocks[0].Index, [ids, ids.Skip(1).ToList(), ids.Skip(4).ToList()]);
        Assert.Equal(0.0, errors[0]);
        Assert.True(errors[1] > 0);
        Assert.True(errors[2] > errors[1], $"removing 4 experts ({errors[2]}) should cost more than removing expert 0 ({errors[1]})");
    }

    [Fact]
    public void Text_is_cut_into_whole_windows_and_a_short_text_gives_fewer_samples()
    {
        var repo = CalibrationCorpus.FindDefaultText();
        Assert.NotNull(repo);
        var root = Cli.CliRunner.RepoRoot;
        var tokenizer = Tokenizer.Load(Path.Combine(root, "models", "tiny-mixtral", "tokenizer.json"));
        var d = CalibrationCorpus.FromText(tokenizer, repo!, 3 * 16).Windows(3, 16);
        Assert.Equal((3, 16), (d.Count, d.Length));
        var all = tokenizer.Encode(File.ReadAllText(repo!), addSpecialTokens: false);
        Assert.Equal(all.Take(16), d.Sample(0).ToArray());
        Assert.Equal(all.Skip(32).Take(16), d.Sample(2).ToArray());
        // Read as a prefix of whole lines, the stream still equals the whole text tokenized at once.
        var whole = CalibrationCorpus.FromText(tokenizer, repo!, long.MaxValue);
        Assert.Equal(all.Length, whole.TokenCount);
        Assert.Equal(all, whole.Windows(1, all.Length).Sample(0).ToArray());
        var shortfall = new List<string>();
        var many = whole.Windows(1_000_000, 2048, shortfall.Add);
        Assert.Equal(all.Length / 2048, many.Count);
        Assert.Contains($"using {many.Count} instead of 1000000", Assert.Single(shortfall));
        var fromSettings = CalibrationCorpus.FromSettings(Path.Combine(root, "models", "tiny-mixtral"), new CalibrationSettings(2, 8));
        Assert.Equal(16, fromSettings.TokenCount);
        Assert.Contains("fewer than one sample of 32", Assert.Throws<OnnxMoe.Ir.UserErrorException>(() => fromSettings.Windows(1, 32)).Message);
        Assert.Throws<OnnxMoe.Ir.UserErrorException>(() => CalibrationCorpus.FromText(tokenizer, "/nonexistent.txt", 4));
    }
}
