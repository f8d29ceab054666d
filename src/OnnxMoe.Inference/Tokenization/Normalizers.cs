using System.Text;
using System.Text.RegularExpressions;

namespace OnnxMoe.Inference.Tokenization;

/// <summary>Rewrites one piece of input text before pre-tokenization (HF "normalizer").</summary>
internal interface INormalizer
{
    string Normalize(string text);
}

internal static class Normalizers
{
    public static INormalizer? Parse(JsonConfig config)
    {
        if (config.IsNull) return null;
        return config.Type switch
        {
            "Sequence" => new SequenceNormalizer(config.Items("normalizers").Select(c => Parse(c)!).Where(n => n is not null).ToArray()),
            "Prepend" => new PrependNormalizer(config.RequireString("prepend")),
            "Replace" => new ReplaceNormalizer(Patterns.Parse(config.Child("pattern")), config.RequireString("content")),
            "NFC" => new UnicodeNormalizer(NormalizationForm.FormC),
            "NFD" => new UnicodeNormalizer(NormalizationForm.FormD),
            "NFKC" => new UnicodeNormalizer(NormalizationForm.FormKC),
            "NFKD" => new UnicodeNormalizer(NormalizationForm.FormKD),
            "Lowercase" => new LowercaseNormalizer(),
            "Strip" => new StripNormalizer(config.GetBool("strip_left", true), config.GetBool("strip_right", true)),
            var other => throw config.Error($"normalizer \"{other}\" is not supported (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip)"),
        };
    }
}

internal sealed class SequenceNormalizer(INormalizer[] normalizers) : INormalizer
{
    public string Normalize(string text)
    {
        foreach (var n in normalizers) text = n.Normalize(text);
        return text;
    }
}

/// <summary>Prepends a string to every non-empty piece (Llama's "▁" prefix).</summary>
internal sealed class PrependNormalizer(string prefix) : INormalizer
{
    public string Normalize(string text) => text.Length == 0 ? text : prefix + text;
}

internal sealed class ReplaceNormalizer(Regex pattern, string content) : INormalizer
{
    public string Normalize(string text) => pattern.Replace(text, content.Replace("$", "$$"));
}

internal sealed class UnicodeNormalizer(NormalizationForm form) : INormalizer
{
    public string Normalize(string text) => text.Normalize(form);
}

internal sealed class LowercaseNormalizer : INormalizer
{
    public string Normalize(string text) => text.ToLowerInvariant();
}

internal sealed class StripNormalizer(bool left, bool right) : INormalizer
{
    public string Normalize(string text) => (left, right) switch
    {
        (true, true) => text.Trim(),
        (true, false) => text.TrimStart(),
        (false, true) => text.TrimEnd(),
        _ => text,
    };
}
