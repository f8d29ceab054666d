using System.Text.Json.Nodes;
using OnnxMoe.Inference.Tokenization;

namespace OnnxMoe.Tests.Inference;

public class TokenizerTests
{
    private static Tokenizer ByteLevel() => Tokenizer.Load(TestFiles.FixturePath("bytelevel-tokenizer.json"));
    private static Tokenizer SentencePiece() => Tokenizer.Load(TestFiles.FixturePath("sentencepiece-tokenizer.json"));

    private static Tokenizer Variant(string fixture, Action<JsonObject> edit)
    {
        var json = JsonNode.Parse(File.ReadAllText(TestFiles.FixturePath(fixture)))!.AsObject();
        edit(json);
        return Tokenizer.FromJson(json.ToJsonString(), fixture + " (variant)");
    }

    // Byte-level BPE (GPT-2 / Qwen style). Merge ranks: 0 "h e", 1 "l l", 2 "ll o", 3 "Ġ w", 4 "o r",
    // 5 "he llo", 6 "Ġw or", 7 "Ã ©".
    [Theory]
    // "hello" -> he llo -> hello; "Ġworld" -> Ġw or l d -> Ġwor l d; "!" alone.
    [InlineData("hello world!", new[] { 15, 16, 3, 8, 9 })]
    // Two "l l" pairs of equal rank: the leftmost merges first, leaving "ll l o" (not "l llo").
    [InlineData("lllo", new[] { 11, 3, 4 })]
    // é is UTF-8 C3 A9 -> byte chars "Ã©", one GPT-2 word with its leading space.
    [InlineData("hello é", new[] { 15, 5, 19 })]
    // The special token is matched before the model and never split.
    [InlineData("hello<|endoftext|>hello", new[] { 15, 0, 15 })]
    public void ByteLevelEncodesByMergeRank(string text, int[] expected)
    {
        var tokenizer = ByteLevel();
        Assert.Equal(expected, tokenizer.Encode(text));
        Assert.Equal(text, tokenizer.Decode(expected));
    }

    [Fact]
    public void ByteLevelDecodeCanSkipSpecialTokens()
    {
        var tokenizer = ByteLevel();
        Assert.Equal("hellohello", tokenizer.Decode([15, 0, 15], skipSpecialTokens: true));
        Assert.True(tokenizer.IsSpecial(0));
        Assert.False(tokenizer.IsSpecial(15));
        Assert.Equal(20, tokenizer.VocabSize);
        Assert.Equal(16, tokenizer.TokenToId("Ġwor"));
        Assert.Equal("Ġwor", tokenizer.IdToToken(16));
    }

    [Fact]
    public void ByteLevelAddPrefixSpacePrependsASpace()
    {
        var tokenizer = Variant("bytelevel-tokenizer.json", j => j["pre_tokenizer"]!["add_prefix_space"] = true);
        Assert.Equal([5, 15], tokenizer.Encode("hello"));
    }

    [Fact]
    public void QwenStyleSplitThenByteLevelMatchesGpt2Style()
    {
        const string qwenPattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        var tokenizer = Variant("bytelevel-tokenizer.json", j => j["pre_tokenizer"] = JsonNode.Parse($$"""
            {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": {{System.Text.Json.JsonSerializer.Serialize(qwenPattern)}}}, "behavior": "Isolated", "invert": false},
              {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}
            """));
        Assert.Equal([15, 16, 3, 8, 9], tokenizer.Encode("hello world!"));
    }

    [Fact]
    public void ByteLevelStreamingHoldsBackAnIncompleteCharacter()
    {
        var tokenizer = ByteLevel();
        var stream = tokenizer.CreateStreamingDecoder([15]);
        Assert.Equal(" ", stream.Push(5));
        Assert.Equal("", stream.Push(17)); // first byte of é: held until the character completes
        Assert.Equal("é", stream.Push(18));
        Assert.Equal("!", stream.Push(9));
        Assert.Equal("", stream.Flush());
    }

    // SentencePiece-style BPE (Llama / Mixtral): Prepend "▁" + Replace " " -> "▁", no pre-tokenizer (the whole
    // piece is one word), byte fallback, fused unk, BOS template. Merge ranks: 0 "▁ h", 1 "l l", 2 "▁h e",
    // 3 "▁he ll", 4 "▁hell o", 5 "▁ w", 6 "o r".
    [Theory]
    // "▁hello▁world": ▁h, ll, ▁he, ▁hell, ▁hello; then ▁w, or; "l d" stay.
    [InlineData("hello world", new[] { 1, 18, 19, 20, 9, 13 })]
    // é has no piece: byte fallback to <0xC3> <0xA9>.
    [InlineData("é", new[] { 1, 6, 4, 5 })]
    // ü needs <0xBC>, absent: unk; two consecutive unks fuse into one.
    [InlineData("üü", new[] { 1, 6, 0 })]
    [InlineData("hello</s>", new[] { 1, 18, 2 })]
    // Prepend applies to every piece between added tokens (HF's Llama behaviour).
    [InlineData("</s>hello", new[] { 1, 2, 18 })]
    public void SentencePieceEncodesWithByteFallbackAndBos(string text, int[] expected)
    {
        Assert.Equal(expected, SentencePiece().Encode(text));
    }

    [Fact]
    public void SentencePieceDecodes()
    {
        var tokenizer = SentencePiece();
        Assert.Equal([18, 19, 20, 9, 13], tokenizer.Encode("hello world", addSpecialTokens: false));
        Assert.Equal("<s> hello world", tokenizer.Decode([1, 18, 19, 20, 9, 13]));
        Assert.Equal("hello world", tokenizer.Decode([1, 18, 19, 20, 9, 13], skipSpecialTokens: true));
        Assert.Equal("é", tokenizer.Decode([1, 6, 4, 5], skipSpecialTokens: true));
        // A lone continuation byte is invalid UTF-8: one U+FFFD per byte token.
        Assert.Equal("hello\uFFFD", tokenizer.Decode([18, 5]));
    }

    [Fact]
    public void SentencePieceStreamingKeepsSpacesAndWaitsForWholeCharacters()
    {
        var tokenizer = SentencePiece();
        var stream = tokenizer.CreateStreamingDecoder([1, 18]);
        Assert.Equal(" w", stream.Push(19));
        Assert.Equal("or", stream.Push(20));
        Assert.Equal(" ", stream.Push(6));
        Assert.Equal("", stream.Push(4)); // <0xC3>: an incomplete character is held back
        Assert.Equal("é", stream.Push(5));
        Assert.Equal("", stream.Push(2)); // </s> is special: skipped
        Assert.Equal("", stream.Flush());
    }

    [Fact]
    public void MetaspaceFirstPrependsOnlyAtTheStartOfTheInput()
    {
        var tokenizer = Variant("sentencepiece-tokenizer.json", j =>
        {
            j["normalizer"] = null;
            j["pre_tokenizer"] = JsonNode.Parse("""{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}""");
        });
        Assert.Equal([1, 18, 19, 20, 9, 13], tokenizer.Encode("hello world"));
        // After an added token the piece does not start the input: no "▁", so "h e ll o".
        Assert.Equal([1, 2, 7, 8, 15, 10], tokenizer.Encode("</s>hello"));
    }

    [Fact]
    public void MetaspaceDecoderDropsTheFirstTokensReplacement()
    {
        var tokenizer = Variant("sentencepiece-tokenizer.json", j =>
            j["decoder"] = JsonNode.Parse("""{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}"""));
        Assert.Equal("hello world", tokenizer.Decode([18, 19, 20, 9, 13]));
    }

    [Fact]
    public void LongInputWithoutPreTokenizerIsFast()
    {
        // One 200k-character word: the priority-queue merge must not be quadratic.
        var text = string.Concat(Enumerable.Repeat("hello world ", 20_000));
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var ids = SentencePiece().Encode(text, addSpecialTokens: false);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), $"took {sw.Elapsed}");
        Assert.Equal(20_000 * 5 + 1, ids.Length); // ▁hello ▁w or l d per repeat, one trailing ▁
        Assert.Equal(text, SentencePiece().Decode(ids));
    }

    [Theory]
    [InlineData("model", """{"type": "WordPiece", "vocab": {}}""", "model \"WordPiece\" is not supported")]
    [InlineData("normalizer", """{"type": "BertNormalizer"}""", "normalizer \"BertNormalizer\" is not supported")]
    [InlineData("pre_tokenizer", """{"type": "BertPreTokenizer"}""", "pre-tokenizer \"BertPreTokenizer\" is not supported")]
    [InlineData("decoder", """{"type": "WordPiece"}""", "decoder \"WordPiece\" is not supported")]
    [InlineData("post_processor", """{"type": "BertProcessing"}""", "post-processor \"BertProcessing\" is not supported")]
    public void UnsupportedComponentsAreNamed(string field, string component, string message)
    {
        var e = Assert.Throws<InvalidDataException>(() =>
            Variant("sentencepiece-tokenizer.json", j => j[field] = JsonNode.Parse(component)));
        Assert.Contains(message, e.Message);
        Assert.Contains("sentencepiece-tokenizer.json", e.Message);
    }

    [Fact]
    public void MergeWithUnknownTokenIsAClearError()
    {
        var e = Assert.Throws<InvalidDataException>(() =>
            Variant("bytelevel-tokenizer.json", j => j["model"]!["merges"]!.AsArray().Add("x y")));
        Assert.Contains("merge token \"x\" is not in the vocabulary", e.Message);
    }
}
