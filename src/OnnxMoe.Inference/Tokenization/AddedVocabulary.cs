namespace OnnxMoe.Inference.Tokenization;

/// <summary>One entry of tokenizer.json "added_tokens".</summary>
public sealed record AddedToken(int Id, string Content, bool Special, bool SingleWord, bool LStrip, bool RStrip, bool Normalized);

/// <summary>A piece of input: either plain text for the normalizer and model, or an already recognised added token.</summary>
internal readonly record struct TextPiece(string Text, bool AtInputStart, int? TokenId);

/// <summary>Finds added tokens in text (leftmost-longest, as HF's Aho-Corasick split), so they are never split by the model.</summary>
internal sealed class AddedTokenMatcher
{
    private readonly (string Pattern, AddedToken Token)[] _byLengthDescending;
    private readonly HashSet<char> _firstChars;

    public AddedTokenMatcher(IEnumerable<(string Pattern, AddedToken Token)> patterns)
    {
        _byLengthDescending = patterns.Where(p => p.Pattern.Length > 0)
            .OrderByDescending(p => p.Pattern.Length).ThenBy(p => p.Token.Id).ToArray();
        _firstChars = _byLengthDescending.Select(p => p.Pattern[0]).ToHashSet();
    }

    public bool IsEmpty => _byLengthDescending.Length == 0;

    public void Split(TextPiece piece, List<TextPiece> output)
    {
        var text = piece.Text;
        if (IsEmpty || piece.TokenId is not null)
        {
            output.Add(piece);
            return;
        }
        int emitted = 0, pos = 0;
        while (pos < text.Length)
        {
            var match = LongestAt(text, pos);
            if (match is not var (pattern, token))
            {
                pos++;
                continue;
            }
            int start = pos, stop = pos + pattern.Length;
            if (token.SingleWord && !((start == 0 || !IsWordChar(text[start - 1])) && (stop == text.Length || !IsWordChar(text[stop]))))
            {
                pos++;
                continue;
            }
            if (token.LStrip)
                while (start > emitted && char.IsWhiteSpace(text[start - 1])) start--;
            if (token.RStrip)
                while (stop < text.Length && char.IsWhiteSpace(text[stop])) stop++;
            if (start > emitted) output.Add(new TextPiece(text[emitted..start], piece.AtInputStart && emitted == 0, null));
            output.Add(new TextPiece(text[start..stop], piece.AtInputStart && start == 0, token.Id));
            emitted = pos = stop;
        }
        if (emitted < text.Length) output.Add(new TextPiece(text[emitted..], piece.AtInputStart && emitted == 0, null));
    }

    private (string, AddedToken)? LongestAt(string text, int pos)
    {
        if (!_firstChars.Contains(text[pos])) return null;
        foreach (var (pattern, token) in _byLengthDescending)
            if (pos + pattern.Length <= text.Length && text.AsSpan(pos, pattern.Length).SequenceEqual(pattern))
                return (pattern, token);
        return null;
    }

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';
}
