using OnnxMoe.Inference.Generation;
using OnnxMoe.Inference.Tokenization;

namespace OnnxMoe.Tests.Inference;

public class GeneratorTests
{
    private static Tokenizer ByteLevel() => Tokenizer.Load(TestFiles.FixturePath("bytelevel-tokenizer.json"));

    /// <summary>Greedy continuation computed without any cache: the whole sequence re-run for every token.</summary>
    private static List<int> GreedyWithoutCache(ToyDecoder decoder, IReadOnlyList<int> prompt, int count, ISet<int> eos)
    {
        var sequence = prompt.ToList();
        var output = new List<int>();
        for (int i = 0; i < count; i++)
        {
            using var state = decoder.CreateState(1);
            var n = sequence.Count;
            var logits = state.Forward(sequence.Select(t => (long)t).ToArray(), n, Enumerable.Repeat(1L, n).ToArray(),
                Enumerable.Range(0, n).Select(p => (long)p).ToArray());
            var row = logits.Slice((n - 1) * decoder.VocabSize, decoder.VocabSize).ToArray();
            var next = Array.IndexOf(row, row.Max());
            output.Add(next);
            sequence.Add(next);
            if (eos.Contains(next)) break;
        }
        return output;
    }

    [Fact]
    public void GreedyWithKvCacheEqualsFullRecomputation()
    {
        var decoder = new ToyDecoder(20);
        var generator = new Generator(decoder, ByteLevel(), eosTokenIds: []);
        var prompt = new[] { 15, 16, 3, 8 };
        var result = generator.Generate(prompt, new GenerationOptions { MaxNewTokens = 12 });

        Assert.Equal(GreedyWithoutCache(new ToyDecoder(20), prompt, 12, new HashSet<int>()), result.GeneratedIds);
        Assert.Equal(FinishReason.MaxNewTokens, result.FinishReason);
        // One prefill plus one call per token after the first: the last token is not fed back.
        Assert.Equal(12, decoder.ForwardCalls);
        Assert.Equal(4 + 11, decoder.ForwardTokens);
        Assert.Equal(11, result.DecodeSteps);
    }

    [Fact]
    public void StopsOnEosAndStreamsTheSameTextAsTheResult()
    {
        var tokenizer = ByteLevel();
        var prompt = new[] { 15 };
        var reference = GreedyWithoutCache(new ToyDecoder(20), prompt, 30, new HashSet<int>());
        var eos = reference[3]; // pretend the fourth greedy token ends the sequence
        var generator = new Generator(new ToyDecoder(20), tokenizer, [eos]);
        var streamed = new System.Text.StringBuilder();
        var result = generator.Generate(prompt, new GenerationOptions { MaxNewTokens = 30 }, piece => streamed.Append(piece));

        var firstEos = reference.IndexOf(eos);
        Assert.Equal(reference.Take(firstEos + 1), result.GeneratedIds);
        Assert.Equal(FinishReason.EndOfSequence, result.FinishReason);
        Assert.Equal(result.Text, streamed.ToString());
        // The streamed text is the decode of the generated ids in the context of the prompt.
        var full = tokenizer.Decode(prompt.Concat(result.GeneratedIds).ToArray(), skipSpecialTokens: true);
        Assert.Equal(full, tokenizer.Decode(prompt, skipSpecialTokens: true) + result.Text);
    }

    [Fact]
    public void LeftPaddedBatchEqualsUnpaddedRuns()
    {
        var prompts = new IReadOnlyList<int>[] { [15, 16, 3, 8, 9], [15], [5, 19, 0] };
        var options = new GenerationOptions { MaxNewTokens = 8 };
        var batch = new Generator(new ToyDecoder(20), ByteLevel(), [], padTokenId: 0).GenerateBatch(prompts, options);
        for (int i = 0; i < prompts.Length; i++)
        {
            var single = new Generator(new ToyDecoder(20), ByteLevel(), []).Generate(prompts[i], options);
            Assert.Equal(single.GeneratedIds, batch[i].GeneratedIds);
            Assert.Equal(single.Text, batch[i].Text);
        }
    }

    [Fact]
    public void SamplingIsReproducibleForASeed()
    {
        var options = new GenerationOptions { MaxNewTokens = 20, Temperature = 1.5f, TopK = 8, TopP = 0.95f, Seed = 42 };
        var a = new Generator(new ToyDecoder(20), ByteLevel(), []).Generate([15], options);
        var b = new Generator(new ToyDecoder(20), ByteLevel(), []).Generate([15], options);
        var c = new Generator(new ToyDecoder(20), ByteLevel(), []).Generate([15], options with { Seed = 43 });
        Assert.Equal(a.GeneratedIds, b.GeneratedIds);
        Assert.NotEqual(a.GeneratedIds, c.GeneratedIds);
    }

    [Fact]
    public void ContextLengthStopsGeneration()
    {
        var result = new Generator(new ToyDecoder(20), ByteLevel(), [], contextLength: 6).Generate([15, 16, 3], new GenerationOptions { MaxNewTokens = 50 });
        // 3 prompt tokens + 3 fed generated tokens fill the context; the 4th generated token cannot be fed back.
        Assert.Equal(4, result.GeneratedIds.Count);
        Assert.Equal(FinishReason.ContextLength, result.FinishReason);
    }
}

public class TokenSamplerTests
{
    [Fact]
    public void GreedyPicksTheArgmax()
    {
        Assert.Equal(2, new TokenSampler().Sample([0.1f, 0.5f, 2f, -1f]));
        Assert.Equal(2, new TokenSampler(temperature: 5f, topK: 1).Sample([0.1f, 0.5f, 2f, -1f]));
    }

    [Fact]
    public void TinyTopPKeepsOnlyTheMostLikelyToken()
    {
        var sampler = new TokenSampler(temperature: 1f, topP: 0.01f, seed: 7);
        for (int i = 0; i < 100; i++) Assert.Equal(1, sampler.Sample([0f, 3f, 1f]));
    }

    [Fact]
    public void TopKNeverPicksOutsideTheK()
    {
        var sampler = new TokenSampler(temperature: 100f, topK: 2, seed: 3);
        var seen = new HashSet<int>();
        for (int i = 0; i < 500; i++) seen.Add(sampler.Sample([0f, 5f, 4f, 1f]));
        Assert.Equal(new HashSet<int> { 1, 2 }, seen);
    }

    [Fact]
    public void SamplingFollowsTheSoftmax()
    {
        // softmax([0, ln 3]) = [0.25, 0.75]; 20000 draws: standard error 0.003, tolerance 0.02 (over 6 sigma).
        var sampler = new TokenSampler(temperature: 1f, seed: 11);
        int ones = 0;
        for (int i = 0; i < 20_000; i++) ones += sampler.Sample([0f, MathF.Log(3f)]);
        Assert.InRange(ones / 20_000.0, 0.73, 0.77);
    }

    [Theory]
    [InlineData(0f, -1, 1f)]
    [InlineData(1f, 0, 0f)]
    [InlineData(1f, 0, 1.5f)]
    public void RejectsBadSettings(float temperature, int topK, float topP) =>
        Assert.Throws<ArgumentException>(() => new TokenSampler(temperature, topK, topP));
}
