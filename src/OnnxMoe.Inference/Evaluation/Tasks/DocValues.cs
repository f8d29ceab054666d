using System.Globalization;
using System.Text;
using System.Text.Json;

namespace OnnxMoe.Inference.Evaluation.Tasks;

/// <summary>
/// A task document's values as Python sees them after `datasets` loads JSON: string, long, double, bool, null,
/// <see cref="List{T}"/> of values and <see cref="Dictionary{TKey,TValue}"/> (keys in file order). Python's str/repr,
/// equality and truthiness are reproduced here because lm-eval renders templates with Jinja over such values.
/// </summary>
public static class DocValues
{
    public static Dictionary<string, object?> FromJsonObject(JsonElement element)
    {
        var doc = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var p in element.EnumerateObject()) doc[p.Name] = FromJson(p.Value);
        return doc;
    }

    public static object? FromJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out var l) ? (object)l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Null or JsonValueKind.Undefined => null,
        JsonValueKind.Array => e.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.Object => FromJsonObject(e),
        _ => throw new InvalidDataException($"unexpected JSON value {e.ValueKind}"),
    };

    /// <summary>Python's str(value).</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        _ => Repr(v),
    };

    /// <summary>Python's repr(value) for the value kinds a document holds.</summary>
    public static string Repr(object? v) => v switch
    {
        null => "None",
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        int i => i.ToString(CultureInfo.InvariantCulture),
        double d => FloatRepr(d),
        string s => StringRepr(s),
        List<object?> list => "[" + string.Join(", ", list.Select(Repr)) + "]",
        Dictionary<string, object?> dict => "{" + string.Join(", ", dict.Select(kv => StringRepr(kv.Key) + ": " + Repr(kv.Value))) + "}",
        _ => v.ToString() ?? "",
    };

    private static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        var s = d.ToString("R", CultureInfo.InvariantCulture);
        if (s.Contains('E')) return s.Replace("E+", "e+").Replace("E-", "e-");
        return s.Contains('.') ? s : s + ".0";
    }

    /// <summary>Python's repr of a str: single quotes unless the text holds ' and no ".</summary>
    public static string StringRepr(string s)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder().Append(quote);
        foreach (var c in s)
        {
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == quote) sb.Append('\\').Append(c);
                    else if (c < 0x20 || c == 0x7f) sb.Append($"\\x{(int)c:x2}");
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append(quote).ToString();
    }

    /// <summary>Python's == (1 == 1.0, True == 1; lists and dicts element-wise).</summary>
    public static bool PyEquals(object? a, object? b)
    {
        if (a is null || b is null) return a is null && b is null;
        if (IsNumber(a) && IsNumber(b)) return ToDouble(a) == ToDouble(b);
        return (a, b) switch
        {
            (string x, string y) => string.Equals(x, y, StringComparison.Ordinal),
            (List<object?> x, List<object?> y) => x.Count == y.Count && x.Zip(y).All(p => PyEquals(p.First, p.Second)),
            (Dictionary<string, object?> x, Dictionary<string, object?> y) =>
                x.Count == y.Count && x.All(kv => y.TryGetValue(kv.Key, out var o) && PyEquals(kv.Value, o)),
            _ => false,
        };
    }

    public static bool IsNumber(object? v) => v is long or int or double or bool;

    public static double ToDouble(object? v) => v switch
    {
        long l => l, int i => i, double d => d, bool b => b ? 1 : 0,
        _ => throw new InvalidCastException($"{Repr(v)} is not a number"),
    };

    /// <summary>Python truthiness.</summary>
    public static bool Truthy(object? v) => v switch
    {
        null => false,
        bool b => b,
        long l => l != 0,
        int i => i != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    /// <summary>Python's len(str): code points, not UTF-16 units.</summary>
    public static int PyLength(string s)
    {
        int n = 0;
        foreach (var _ in s.EnumerateRunes()) n++;
        return n;
    }

    /// <summary>Python's str.isdigit() for a non-empty string (what lm-eval checks before literal_eval of a target).</summary>
    public static bool IsDigits(string s) => s.Length > 0 && s.All(char.IsDigit);

    /// <summary>
    /// Python's ast.literal_eval for the literals task templates render: lists and tuples (as lists), strings, ints,
    /// floats, True/False/None. Anything else is a <see cref="FormatException"/>.
    /// </summary>
    public static object? LiteralEval(string text)
    {
        int i = 0;
        var value = ParseLiteral(text, ref i);
        SkipSpace(text, ref i);
        if (i != text.Length) throw new FormatException($"unexpected text after a literal at offset {i}");
        return value;
    }

    private static void SkipSpace(string t, ref int i)
    {
        while (i < t.Length && char.IsWhiteSpace(t[i])) i++;
    }

    private static object? ParseLiteral(string t, ref int i)
    {
        SkipSpace(t, ref i);
        if (i >= t.Length) throw new FormatException("empty literal");
        char c = t[i];
        if (c is '[' or '(')
        {
            char close = c == '[' ? ']' : ')';
            i++;
            var list = new List<object?>();
            while (true)
            {
                SkipSpace(t, ref i);
                if (i < t.Length && t[i] == close) { i++; return list; }
                list.Add(ParseLiteral(t, ref i));
                SkipSpace(t, ref i);
                if (i < t.Length && t[i] == ',') { i++; continue; }
                if (i < t.Length && t[i] == close) { i++; return list; }
                throw new FormatException($"expected ',' or '{close}' at offset {i}");
            }
        }
        if (c is '\'' or '"') return ParseString(t, ref i);
        int start = i;
        while (i < t.Length && (char.IsLetterOrDigit(t[i]) || t[i] is '.' or '-' or '+' or '_')) i++;
        var word = t[start..i];
        switch (word)
        {
            case "True": return true;
            case "False": return false;
            case "None": return null;
        }
        if (long.TryParse(word, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l)) return l;
        if (double.TryParse(word, NumberStyles.Float, CultureInfo.InvariantCulture, out var d)) return d;
        throw new FormatException($"'{(word.Length > 0 ? word : t[start].ToString())}' is not a Python literal");
    }

    internal static string ParseString(string t, ref int i)
    {
        char quote = t[i++];
        var sb = new StringBuilder();
        while (i < t.Length && t[i] != quote)
        {
            if (t[i] == '\\' && i + 1 < t.Length)
            {
                char e = t[i + 1];
                i += 2;
                switch (e)
                {
                    case 'n': sb.Append('\n'); break;
                    case 't': sb.Append('\t'); break;
                    case 'r': sb.Append('\r'); break;
                    case '0': sb.Append('\0'); break;
                    case 'x' when i + 2 <= t.Length:
                        sb.Append((char)Convert.ToInt32(t.Substring(i, 2), 16)); i += 2; break;
                    case 'u' when i + 4 <= t.Length:
                        sb.Append((char)Convert.ToInt32(t.Substring(i, 4), 16)); i += 4; break;
                    case '\n': break;
                    default: sb.Append(e); break;
                }
            }
            else sb.Append(t[i++]);
        }
        if (i >= t.Length) throw new FormatException("unterminated string literal");
        i++;
        return sb.ToString();
    }
}
