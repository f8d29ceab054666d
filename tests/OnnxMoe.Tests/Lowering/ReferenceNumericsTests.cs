using OnnxMoe.Checkpoints;
using OnnxMoe.Ir;
using OnnxMoe.Lowering;
using OnnxMoe.Structure;
using Arr = OnnxMoe.Tests.Lowering.ReferenceEvaluator.Arr;

namespace OnnxMoe.Tests.Lowering;

/// <summary>
/// The lowered graph evaluated by <see cref="ReferenceEvaluator"/> (not ORT) against the golden
/// logits of the torch reference: checks the lowering's math independently of the runtime.
/// fp32 tolerance: max abs diff 1e-4 (the evaluator runs in double, torch in fp32).
/// </summary>
public sealed class ReferenceNumericsTests
{
    public static TheoryData<string> Families => new(FamilyData.Names);

    internal static Dictionary<string, Arr> Feed(DecoderStructure s, long[][] ids, long[][] mask, long[][] positions, Dictionary<string, Arr>? past)
    {
        int batch = ids.Length;
        var feeds = new Dictionary<string, Arr>
        {
            ["input_ids"] = new Arr([batch, ids[0].Length], ids.SelectMany(r => r).Select(v => (double)v).ToArray(), DataType.Int64),
            ["attention_mask"] = new Arr([batch, mask[0].Length], mask.SelectMany(r => r).Select(v => (double)v).ToArray(), DataType.Int64),
            ["position_ids"] = new Arr([batch, positions[0].Length], positions.SelectMany(r => r).Select(v => (double)v).ToArray(), DataType.Int64),
        };
        foreach (var b in s.Blocks)
        {
            feeds[b.Attention.PastKey] = past?[b.Attention.PresentKey] ?? new Arr([batch, s.NumKeyValueHeads, 0, s.HeadDim], [], DataType.Float);
            feeds[b.Attention.PastValue] = past?[b.Attention.PresentValue] ?? new Arr([batch, s.NumKeyValueHeads, 0, s.HeadDim], [], DataType.Float);
        }
        return feeds;
    }

    private static double MaxDiff(double[] a, int aFrom, float[] b, int bFrom, int count)
    {
        double m = 0;
        for (int k = 0; k < count; k++) m = Math.Max(m, Math.Abs(a[aFrom + k] - b[bFrom + k]));
        return m;
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void LoweredGraphMatchesGoldenLogits(string family)
    {
        using var ckpt = CheckpointFolder.Open(FamilyData.Dir(family));
        var lowered = DecoderLowering.Lower(ckpt);
        var prompts = FamilyData.Prompts(family);
        foreach (var (ids, golden, vocab) in prompts.Take(2))
        {
            long[] pos = Enumerable.Range(0, ids.Length).Select(i => (long)i).ToArray();
            var outs = ReferenceEvaluator.Run(lowered.Model.Graph, Feed(lowered.Structure, [ids], [ids.Select(_ => 1L).ToArray()], [pos], null));
            var logits = outs["logits"];
            Assert.Equal([1L, ids.Length, vocab], logits.Shape);
            double diff = MaxDiff(logits.Data, 0, golden, 0, golden.Length);
            Assert.True(diff <= 1e-4, $"{family}: max abs diff {diff:E3} > 1e-4 on a {ids.Length}-token prompt");
        }
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void IncrementalDecodingAndLeftPaddingMatchFullSequence(string family)
    {
        using var ckpt = CheckpointFolder.Open(FamilyData.Dir(family));
        var lowered = DecoderLowering.Lower(ckpt);
        var g = lowered.Model.Graph;
        var (ids, golden, vocab) = FamilyData.Prompts(family)[0];
        int n = ids.Length, split = n - 2;

        // Prefill the first tokens, then feed the last two one at a time through the KV cache.
        var first = ReferenceEvaluator.Run(g, Feed(lowered.Structure, [ids[..split]], [Ones(split)], [Range(0, split)], null));
        var outs = first;
        for (int t = split; t < n; t++)
        {
            outs = ReferenceEvaluator.Run(g, Feed(lowered.Structure, [[ids[t]]], [Ones(t + 1)], [[t]], outs));
            double diff = MaxDiff(outs["logits"].Data, 0, golden, t * (int)vocab, (int)vocab);
            Assert.True(diff <= 1e-4, $"{family}: token {t} with KV cache differs by {diff:E3}");
        }

        // Batch of two: the full prompt and a shorter one left-padded with 3 pad tokens.
        int pad = 3, shortLen = n - pad;
        var shortIds = ids[..shortLen];
        var paddedIds = new long[n];
        Array.Fill(paddedIds, 0);
        shortIds.CopyTo(paddedIds, pad);
        var paddedMask = Enumerable.Range(0, n).Select(i => i < pad ? 0L : 1L).ToArray();
        var paddedPos = Enumerable.Range(0, n).Select(i => Math.Max(0L, i - pad)).ToArray();
        var batch = ReferenceEvaluator.Run(g, Feed(lowered.Structure, [ids, paddedIds], [Ones(n), paddedMask], [Range(0, n), paddedPos], null));
        var alone = ReferenceEvaluator.Run(g, Feed(lowered.Structure, [shortIds], [Ones(shortLen)], [Range(0, shortLen)], null));
        var bl = batch["logits"].Data;
        Assert.True(MaxDiff(bl, 0, golden, 0, golden.Length) <= 1e-4, $"{family}: row 0 of the padded batch differs from golden");
        var aloneF = alone["logits"].Data.Select(v => (float)v).ToArray();
        double padDiff = MaxDiff(bl, (int)(n * vocab + pad * vocab), aloneF, 0, (int)(shortLen * vocab));
        Assert.True(padDiff <= 1e-4, $"{family}: left-padded row differs from the unpadded run by {padDiff:E3}");
    }

    private static long[] Ones(int n) => Enumerable.Repeat(1L, n).ToArray();
    private static long[] Range(int from, int to) => Enumerable.Range(from, to - from).Select(i => (long)i).ToArray();
}
