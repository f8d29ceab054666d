using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace OnnxMoe.Ir;

/// <summary>
/// Strict parsing of JSON files users supply: invalid UTF-8, syntax errors and strings that are no valid
/// Unicode (a lone surrogate escape such as \ud800, which System.Text.Json accepts until the string is read)
/// become one line for the caller's own exception type, so readers never fail later on a string.
/// </summary>
public static class JsonText
{
    /// <summary>Parses <paramref name="utf8"/>; a problem becomes <paramref name="error"/>(one-line description).</summary>
    public static JsonDocument Parse(byte[] utf8, JsonDocumentOptions options, Func<string, Exception> error)
    {
        if (!Utf8.IsValid(utf8)) throw error("not valid UTF-8");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(utf8, options); }
        catch (JsonException e) { throw error($"not valid JSON: {Describe(e)}"); }
        try
        {
            CheckStrings(doc.RootElement);
            return doc;
        }
        catch (InvalidOperationException)
        {
            doc.Dispose();
            throw error("not valid JSON: a string holds an escape that is no Unicode text (a lone surrogate such as \\ud800)");
        }
    }

    public static JsonDocument Parse(string text, JsonDocumentOptions options, Func<string, Exception> error) =>
        Parse(Encoding.UTF8.GetBytes(text), options, error);

    /// <summary>A JsonException's message on one line, without the quoted (possibly binary) snippet.</summary>
    public static string Describe(JsonException e)
    {
        string message = e.Message;
        int cut = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        if (cut >= 0) message = message[..cut];
        var sb = new StringBuilder();
        foreach (char ch in message) sb.Append(char.IsControl(ch) || char.IsSurrogate(ch) || ch == '\uFFFD' ? '?' : ch);
        string text = sb.Length > 120 ? sb.ToString(0, 117) + "..." : sb.ToString();
        return e.LineNumber is { } line ? $"{text.TrimEnd('.')} (line {line + 1}, byte {e.BytePositionInLine + 1})" : text;
    }

    private static void CheckStrings(JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject())
                {
                    _ = p.Name;
                    CheckStrings(p.Value);
                }
                break;
            case JsonValueKind.Array:
                foreach (var item in e.EnumerateArray()) CheckStrings(item);
                break;
            case JsonValueKind.String:
                _ = e.GetString();
                break;
        }
    }
}
