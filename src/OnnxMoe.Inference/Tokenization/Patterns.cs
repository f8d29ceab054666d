using System.Text;
using System.Text.RegularExpressions;

namespace OnnxMoe.Inference.Tokenization;

/// <summary>A tokenizer.json pattern: <c>{"String": "..."}</c> (literal) or <c>{"Regex": "..."}</c>.</summary>
internal static class Patterns
{
    public static Regex Parse(JsonConfig pattern)
    {
        if (pattern.Has("String"))
            return new Regex(Regex.Escape(pattern.RequireString("String")), RegexOptions.CultureInvariant);
        if (pattern.Has("Regex"))
        {
            var source = pattern.RequireString("Regex");
            try
            {
                return new Regex(source, RegexOptions.CultureInvariant);
            }
            catch (ArgumentException e)
            {
                throw pattern.Error($"regex \"{source}\" is not supported: {e.Message}");
            }
        }
        throw pattern.Error("pattern must be {\"String\": ...} or {\"Regex\": ...}");
    }

    /// <summary>Splits <paramref name="text"/> into (start, length, isMatch) spans covering it entirely.</summary>
    public static List<(int Start, int Length, bool IsMatch)> FindMatches(Regex regex, string text)
    {
        var spans = new List<(int, int, bool)>();
        int previous = 0;
        foreach (Match m in regex.Matches(text))
        {
            if (m.Length == 0) continue;
            if (m.Index > previous) spans.Add((previous, m.Index - previous, false));
            spans.Add((m.Index, m.Length, true));
            previous = m.Index + m.Length;
        }
        if (previous < text.Length) spans.Add((previous, text.Length - previous, false));
        return spans;
    }

    /// <summary>Enumerates the Unicode scalar values of a string as substrings (surrogate pairs kept together).</summary>
    public static IEnumerable<string> Chars(string text)
    {
        for (int i = 0; i < text.Length;)
        {
            int n = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            yield return text.Substring(i, n);
            i += n;
        }
    }

    public static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false);
}
