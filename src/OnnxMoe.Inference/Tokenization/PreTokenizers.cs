using System.Text.RegularExpressions;

namespace OnnxMoe.Inference.Tokenization;

/// <summary>One pre-token: its text and whether it begins at the very start of the input.</summary>
internal readonly record struct Split(string Text, bool AtInputStart);

/// <summary>Splits pieces of normalized text into words for the model (HF "pre_tokenizer").</summary>
internal interface IPreTokenizer
{
    List<Split> PreTokenize(List<Split> splits);
}

internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

internal static class PreTokenizers
{
    /// <summary>The GPT-2 pre-tokenization regex used by ByteLevel with use_regex.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    public static IPreTokenizer? Parse(JsonConfig config)
    {
        if (config.IsNull) return null;
        return config.Type switch
        {
            "Sequence" => new SequencePreTokenizer(config.Items("pretokenizers").Select(c => Parse(c)!).Where(p => p is not null).ToArray()),
            "ByteLevel" => new ByteLevelPreTokenizer(config.GetBool("add_prefix_space", true), config.GetBool("use_regex", true)),
            "Split" => new SplitPreTokenizer(Patterns.Parse(config.Child("pattern")), ParseBehavior(config), config.GetBool("invert", false)),
            "Metaspace" => new MetaspacePreTokenizer(Metaspace.Parse(config)),
            "Whitespace" => new SplitPreTokenizer(new Regex(@"\w+|[^\w\s]+", RegexOptions.CultureInvariant), SplitBehavior.Removed, invert: true),
            "WhitespaceSplit" => new SplitPreTokenizer(new Regex(@"\s+", RegexOptions.CultureInvariant), SplitBehavior.Removed, invert: false),
            "Digits" => new SplitPreTokenizer(new Regex(config.GetBool("individual_digits", false) ? @"\p{N}" : @"\p{N}+", RegexOptions.CultureInvariant),
                config.GetBool("individual_digits", false) ? SplitBehavior.Isolated : SplitBehavior.Contiguous, invert: false),
            var other => throw config.Error($"pre-tokenizer \"{other}\" is not supported (supported: Sequence, ByteLevel, Split, Metaspace, Whitespace, WhitespaceSplit, Digits)"),
        };
    }

    private static SplitBehavior ParseBehavior(JsonConfig config) => config.RequireString("behavior") switch
    {
        "Removed" => SplitBehavior.Removed,
        "Isolated" => SplitBehavior.Isolated,
        "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
        "MergedWithNext" => SplitBehavior.MergedWithNext,
        "Contiguous" => SplitBehavior.Contiguous,
        var other => throw config.Error($"split behavior \"{other}\" is unknown"),
    };

    /// <summary>Applies HF's SplitDelimiterBehavior to the spans of one split and appends the non-empty results.</summary>
    public static void SplitBy(Split split, List<(int Start, int Length, bool IsMatch)> spans, SplitBehavior behavior, List<Split> output)
    {
        var pieces = new List<(int Start, int End, bool IsMatch)>();
        switch (behavior)
        {
            case SplitBehavior.Isolated:
                foreach (var s in spans) pieces.Add((s.Start, s.Start + s.Length, s.IsMatch));
                break;
            case SplitBehavior.Removed:
                foreach (var s in spans) if (!s.IsMatch) pieces.Add((s.Start, s.Start + s.Length, false));
                break;
            case SplitBehavior.MergedWithPrevious:
            {
                bool previousMatch = false;
                foreach (var s in spans)
                {
                    if (s.IsMatch && !previousMatch && pieces.Count > 0)
                        pieces[^1] = (pieces[^1].Start, s.Start + s.Length, false);
                    else
                        pieces.Add((s.Start, s.Start + s.Length, s.IsMatch));
                    previousMatch = s.IsMatch;
                }
                break;
            }
            case SplitBehavior.MergedWithNext:
            {
                bool previousMatch = false;
                for (int i = spans.Count - 1; i >= 0; i--)
                {
                    var s = spans[i];
                    if (s.IsMatch && !previousMatch && pieces.Count > 0)
                        pieces[^1] = (s.Start, pieces[^1].End, false);
                    else
                        pieces.Add((s.Start, s.Start + s.Length, s.IsMatch));
                    previousMatch = s.IsMatch;
                }
                pieces.Reverse();
                break;
            }
            case SplitBehavior.Contiguous:
            {
                bool previousMatch = false;
                foreach (var s in spans)
                {
                    if (s.IsMatch == previousMatch && pieces.Count > 0)
                        pieces[^1] = (pieces[^1].Start, s.Start + s.Length, false);
                    else
                        pieces.Add((s.Start, s.Start + s.Length, false));
                    previousMatch = s.IsMatch;
                }
                break;
            }
        }
        foreach (var p in pieces)
            if (p.End > p.Start)
                output.Add(new Split(split.Text[p.Start..p.End], split.AtInputStart && p.Start == 0));
    }
}

internal sealed class SequencePreTokenizer(IPreTokenizer[] steps) : IPreTokenizer
{
    public List<Split> PreTokenize(List<Split> splits)
    {
        foreach (var step in steps) splits = step.PreTokenize(splits);
        return splits;
    }
}

internal sealed class SplitPreTokenizer(Regex pattern, SplitBehavior behavior, bool invert) : IPreTokenizer
{
    public List<Split> PreTokenize(List<Split> splits)
    {
        var output = new List<Split>(splits.Count);
        foreach (var split in splits)
        {
            var spans = Patterns.FindMatches(pattern, split.Text);
            if (invert)
                for (int i = 0; i < spans.Count; i++) spans[i] = spans[i] with { IsMatch = !spans[i].IsMatch };
            PreTokenizers.SplitBy(split, spans, behavior, output);
        }
        return output;
    }
}

/// <summary>GPT-2 byte-level pre-tokenization: optional prefix space, GPT-2 regex split, bytes mapped to printable characters.</summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : IPreTokenizer
{
    private static readonly Regex Gpt2 = new(PreTokenizers.Gpt2Pattern, RegexOptions.CultureInvariant | RegexOptions.Compiled);

    public List<Split> PreTokenize(List<Split> splits)
    {
        var output = new List<Split>(splits.Count);
        foreach (var split in splits)
        {
            var s = split;
            if (addPrefixSpace && !s.Text.StartsWith(' ')) s = s with { Text = " " + s.Text };
            if (useRegex) PreTokenizers.SplitBy(s, Patterns.FindMatches(Gpt2, s.Text), SplitBehavior.Isolated, output);
            else if (s.Text.Length > 0) output.Add(s);
        }
        for (int i = 0; i < output.Count; i++)
            output[i] = output[i] with { Text = ByteLevelAlphabet.Encode(output[i].Text) };
        return output;
    }
}

internal enum PrependScheme { Always, First, Never }

/// <summary>Metaspace settings shared by the pre-tokenizer and the decoder.</summary>
internal sealed record Metaspace(char Replacement, PrependScheme Scheme, bool SplitOnReplacement)
{
    public static Metaspace Parse(JsonConfig config)
    {
        var replacement = config.GetString("replacement") ?? "\u2581";
        if (replacement.Length != 1) throw config.Error("\"replacement\" must be a single character");
        PrependScheme scheme;
        if (config.Has("prepend_scheme"))
        {
            scheme = config.RequireString("prepend_scheme") switch
            {
                "always" => PrependScheme.Always,
                "first" => PrependScheme.First,
                "never" => PrependScheme.Never,
                var other => throw config.Error($"prepend_scheme \"{other}\" is unknown"),
            };
        }
        else
        {
            scheme = config.GetBool("add_prefix_space", true) ? PrependScheme.Always : PrependScheme.Never;
        }
        return new Metaspace(replacement[0], scheme, config.GetBool("split", true));
    }
}

internal sealed class MetaspacePreTokenizer(Metaspace settings) : IPreTokenizer
{
    public List<Split> PreTokenize(List<Split> splits)
    {
        var output = new List<Split>(splits.Count);
        var replacement = settings.Replacement.ToString();
        var separator = new Regex(Regex.Escape(replacement), RegexOptions.CultureInvariant);
        foreach (var split in splits)
        {
            var text = split.Text.Replace(" ", replacement);
            bool prepend = settings.Scheme == PrependScheme.Always || (settings.Scheme == PrependScheme.First && split.AtInputStart);
            if (prepend && !text.StartsWith(settings.Replacement)) text = replacement + text;
            var s = split with { Text = text };
            if (settings.SplitOnReplacement) PreTokenizers.SplitBy(s, Patterns.FindMatches(separator, text), SplitBehavior.MergedWithNext, output);
            else if (text.Length > 0) output.Add(s);
        }
        return output;
    }
}
