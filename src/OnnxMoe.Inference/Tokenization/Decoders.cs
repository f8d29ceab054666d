using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace OnnxMoe.Inference.Tokenization;

/// <summary>Turns token strings back into text pieces (HF "decoder" decode_chain); the final text is their concatenation.</summary>
internal interface ITokenDecoder
{
    List<string> DecodeChain(List<string> tokens);
}

internal static class Decoders
{
    public static ITokenDecoder? Parse(JsonConfig config)
    {
        if (config.IsNull) return null;
        return config.Type switch
        {
            "Sequence" => new SequenceDecoder(config.Items("decoders").Select(c => Parse(c)!).Where(d => d is not null).ToArray()),
            "ByteLevel" => new ByteLevelDecoder(),
            "Metaspace" => new MetaspaceDecoder(Metaspace.Parse(config)),
            "Replace" => new ReplaceDecoder(Patterns.Parse(config.Child("pattern")), config.RequireString("content")),
            "ByteFallback" => new ByteFallbackDecoder(),
            "Fuse" => new FuseDecoder(),
            "Strip" => new StripDecoder(ParseChar(config, "content"), config.GetInt("start", 0), config.GetInt("stop", 0)),
            var other => throw config.Error($"decoder \"{other}\" is not supported (supported: Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip)"),
        };
    }

    private static string ParseChar(JsonConfig config, string name)
    {
        var s = config.RequireString(name);
        if (new StringInfo(s).LengthInTextElements != 1 && s.Length != 1) throw config.Error($"\"{name}\" must be one character");
        return s;
    }
}

internal sealed class SequenceDecoder(ITokenDecoder[] steps) : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        foreach (var step in steps) tokens = step.DecodeChain(tokens);
        return tokens;
    }
}

/// <summary>Maps byte-level characters back to bytes across all tokens and decodes UTF-8 (invalid bytes become U+FFFD).</summary>
internal sealed class ByteLevelDecoder : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var t in tokens) ByteLevelAlphabet.AppendBytes(t, bytes);
        return [Patterns.Utf8.GetString(bytes.ToArray())];
    }
}

internal sealed class MetaspaceDecoder(Metaspace settings) : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            var sb = new StringBuilder(tokens[i].Length);
            foreach (var c in tokens[i])
            {
                if (c != settings.Replacement) sb.Append(c);
                else if (!(i == 0 && settings.Scheme != PrependScheme.Never)) sb.Append(' ');
            }
            result.Add(sb.ToString());
        }
        return result;
    }
}

internal sealed class ReplaceDecoder(Regex pattern, string content) : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens) =>
        tokens.Select(t => pattern.Replace(t, content.Replace("$", "$$"))).ToList();
}

/// <summary>Runs of &lt;0xXX&gt; tokens become their UTF-8 text, or one U+FFFD per byte token when invalid.</summary>
internal sealed class ByteFallbackDecoder : ITokenDecoder
{
    public static bool TryParseByteToken(string token, out byte value)
    {
        value = 0;
        return token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
               && byte.TryParse(token.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out value);
    }

    private static readonly UTF8Encoding StrictUtf8 = new(false, throwOnInvalidBytes: true);

    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var bytes = new List<byte>();
        void Flush()
        {
            if (bytes.Count == 0) return;
            try
            {
                result.Add(StrictUtf8.GetString(bytes.ToArray()));
            }
            catch (DecoderFallbackException)
            {
                for (int i = 0; i < bytes.Count; i++) result.Add("\uFFFD");
            }
            bytes.Clear();
        }
        foreach (var t in tokens)
        {
            if (TryParseByteToken(t, out var b)) bytes.Add(b);
            else
            {
                Flush();
                result.Add(t);
            }
        }
        Flush();
        return result;
    }
}

internal sealed class FuseDecoder : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
}

/// <summary>Removes up to <c>start</c> leading and <c>stop</c> trailing occurrences of one character from each token.</summary>
internal sealed class StripDecoder(string content, int start, int stop) : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        foreach (var t in tokens)
        {
            int begin = 0, end = t.Length;
            for (int i = 0; i < start && t.AsSpan(begin).StartsWith(content, StringComparison.Ordinal); i++) begin += content.Length;
            for (int i = 0; i < stop && end - content.Length >= begin && t.AsSpan(begin, end - begin).EndsWith(content, StringComparison.Ordinal); i++) end -= content.Length;
            result.Add(t[begin..end]);
        }
        return result;
    }
}
