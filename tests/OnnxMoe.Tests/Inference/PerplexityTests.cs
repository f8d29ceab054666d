using OnnxMoe.Inference.Evaluation;

namespace OnnxMoe.Tests.Inference;

public class PerplexityTests
{
    [Theory]
    // 10 tokens, windows of 4: stride 2 overlaps and scores every token but the first;
    // stride 4 (no overlap) leaves each window's first token unscored, as Hugging Face's recipe does.
    [InlineData(10, 4, 2, new[] { 0, 4, 1, 2, 6, 4, 4, 8, 6, 6, 10, 8 }, 9)]
    [InlineData(10, 4, 4, new[] { 0, 4, 1, 4, 8, 5, 8, 10, 9 }, 7)]
    [InlineData(3, 8, 8, new[] { 0, 3, 1 }, 2)]
    public void WindowsScoreEachTokenOnce(int count, int seqLen, int stride, int[] expected, int scored)
    {
        var windows = PerplexityEvaluator.Windows(count, seqLen, stride);
        Assert.Equal(expected, windows.SelectMany(w => new[] { w.Begin, w.End, w.FirstScored }));
        Assert.Equal(scored, windows.Sum(w => w.End - w.FirstScored));
        var positions = windows.SelectMany(w => Enumerable.Range(w.FirstScored, w.End - w.FirstScored)).ToList();
        Assert.Equal(positions.Distinct().Count(), positions.Count);
    }

    [Fact]
    public void UniformModelHasPerplexityEqualToVocabularySize()
    {
        var decoder = new ToyDecoder(37, (_, vocab) => new float[vocab]);
        var tokens = Enumerable.Range(0, 100).Select(i => i * 7 % 37).ToArray();
        var result = new PerplexityEvaluator(decoder).Evaluate(tokens, new PerplexityOptions { SequenceLength = 16, Stride = 8 });
        Assert.Equal(37, result.Perplexity, 1e-4);
        Assert.Equal(99, result.TokenCount);
    }

    [Fact]
    public void BigramModelMatchesADirectComputation()
    {
        // Logits depend on the previous token only, so every sliding window must give the exact full-context NLL.
        const int vocab = 13;
        var table = new float[vocab, vocab];
        var rng = new Random(5);
        for (int a = 0; a < vocab; a++)
            for (int b = 0; b < vocab; b++) table[a, b] = (float)(rng.NextDouble() * 6 - 3);
        float[] Bigram(IReadOnlyList<(long Token, long Position)> history, int v) =>
            Enumerable.Range(0, v).Select(b => table[history[^1].Token, b]).ToArray();

        var tokens = Enumerable.Range(0, 200).Select(_ => rng.Next(vocab)).ToArray();
        double expected = 0;
        for (int t = 1; t < tokens.Length; t++)
        {
            double logSum = Math.Log(Enumerable.Range(0, vocab).Sum(b => Math.Exp(table[tokens[t - 1], b])));
            expected += logSum - table[tokens[t - 1], tokens[t]];
        }
        expected /= tokens.Length - 1;

        var progress = new List<PerplexityProgress>();
        var result = new PerplexityEvaluator(new ToyDecoder(vocab, Bigram))
            .Evaluate(tokens, new PerplexityOptions { SequenceLength = 32, Stride = 10 }, progress.Add);
        Assert.Equal(expected, result.NegativeLogLikelihood, 1e-5); // float logits, double reference
        Assert.Equal(Math.Exp(expected), result.Perplexity, 1e-4);
        Assert.Equal(199, result.TokenCount);
        Assert.Equal(result.Windows, progress.Count);
        Assert.Equal(199, progress[^1].ScoredTokens);
        Assert.Equal(199, progress[^1].TokensToScore);
        Assert.True(result.ForwardTokens > result.TokenCount);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(8, 0)]
    [InlineData(8, 9)]
    public void RejectsBadWindows(int seqLen, int stride) =>
        Assert.Throws<ArgumentException>(() => new PerplexityEvaluator(new ToyDecoder(5))
            .Evaluate([1, 2, 3], new PerplexityOptions { SequenceLength = seqLen, Stride = stride }));
}
