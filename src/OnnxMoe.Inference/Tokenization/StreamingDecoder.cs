namespace OnnxMoe.Inference.Tokenization;

/// <summary>
/// Incremental detokenization: text is released only when the decoded window no longer ends in an incomplete
/// UTF-8 sequence (U+FFFD), so byte-fallback and byte-level pieces of one character come out together.
/// Decodes a small sliding window (from the last released boundary), never the whole history.
/// </summary>
public sealed class StreamingDecoder
{
    private const int ContextTokens = 4;

    private readonly Tokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    private readonly List<int> _ids = new();
    private int _prefixOffset;
    private int _readOffset;

    internal StreamingDecoder(Tokenizer tokenizer, ReadOnlySpan<int> context, bool skipSpecialTokens)
    {
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
        var start = Math.Max(0, context.Length - ContextTokens);
        foreach (var id in context[start..]) _ids.Add(id);
        _readOffset = _ids.Count;
    }

    /// <summary>Adds one id and returns the text that became final (possibly empty).</summary>
    public string Push(int id)
    {
        _ids.Add(id);
        return Release(force: false);
    }

    /// <summary>Returns any text still held back (an incomplete character becomes U+FFFD).</summary>
    public string Flush() => Release(force: true);

    private string Release(bool force)
    {
        if (_readOffset == _ids.Count) return "";
        var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_ids);
        var prefix = _tokenizer.Decode(span[_prefixOffset.._readOffset], _skipSpecialTokens);
        var full = _tokenizer.Decode(span[_prefixOffset..], _skipSpecialTokens);
        if (!force && (full.Length <= prefix.Length || full.EndsWith('\uFFFD'))) return "";
        var delta = full.Length > prefix.Length ? full[prefix.Length..] : "";
        _prefixOffset = _readOffset;
        _readOffset = _ids.Count;
        return delta;
    }
}
