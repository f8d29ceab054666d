using System.Text;
using System.Text.Json;

namespace OnnxMoe.Tests.Fuzzing;

/// <summary>
/// Seeded mutations of valid inputs: byte flips, truncations, splices, and (for JSON) value swaps, key
/// deletions and duplications done on the text, so the results include what a JSON library would never
/// write (duplicate keys, 1e999, NaN). Same seed, same mutation; <see cref="Describe"/> says what was done.
/// </summary>
internal sealed class Mutator(int seed)
{
    private readonly Random _rng = new(seed);
    private readonly List<string> _log = [];

    public string Describe => string.Join("; ", _log);

    /// <summary>Values swapped into JSON: wrong signs, huge, non-finite, wrong types.</summary>
    private static readonly string[] JsonValues =
    [
        "-1", "0", "-3", "1", "2", "7", "9", "12", "1000000000", "-1000000000", "2147483647", "2147483648", "-2147483649",
        "9223372036854775807", "9223372036854775808", "18446744073709551616", "1099511627776", "1e999", "-1e999", "1e-320",
        "NaN", "Infinity", "0.5", "-0.0", "3.7", "\"\"", "\"x\"", "\"NaN\"", "\"-1\"", "\"\\u0000\"", "\"\\ud800\"", "null", "true",
        "false", "[]", "[0]", "[-1]", "[1,1]", "[99]", "[\"a\"]", "{}", "{\"a\":1}", "[[[[[[]]]]]]",
    ];

    public int Next(int max) => _rng.Next(max);

    /// <summary>One to three byte-level mutations.</summary>
    public byte[] MutateBytes(byte[] input, int focusStart = 0, int focusLength = -1)
    {
        var b = input.ToList();
        if (focusLength < 0) focusLength = input.Length - focusStart;
        int rounds = 1 + _rng.Next(3);
        for (int r = 0; r < rounds && b.Count > 0; r++)
        {
            int lo = Math.Min(focusStart, b.Count - 1), span = Math.Max(1, Math.Min(focusLength, b.Count - lo));
            int at = lo + _rng.Next(span);
            switch (_rng.Next(8))
            {
                case 0:
                    int bit = _rng.Next(8);
                    b[at] ^= (byte)(1 << bit);
                    _log.Add($"flip bit {bit} at {at}");
                    break;
                case 1:
                    byte v = (byte)(_rng.Next(2) == 0 ? _rng.Next(256) : new byte[] { 0, 0xFF, 0x7F, 0x80, (byte)'"', (byte)'{', (byte)'-', (byte)'9' }[_rng.Next(8)]);
                    b[at] = v;
                    _log.Add($"set byte {at} to 0x{v:X2}");
                    break;
                case 2:
                    b.RemoveRange(at, b.Count - at);
                    _log.Add($"truncate at {at}");
                    break;
                case 3:
                    int len = Math.Min(b.Count - at, 1 + _rng.Next(16));
                    b.RemoveRange(at, len);
                    _log.Add($"delete {len} bytes at {at}");
                    break;
                case 4:
                    var junk = new byte[1 + _rng.Next(8)];
                    _rng.NextBytes(junk);
                    b.InsertRange(at, junk);
                    _log.Add($"insert {junk.Length} random bytes at {at}");
                    break;
                case 5:
                    int from = _rng.Next(b.Count), n = Math.Min(b.Count - from, 1 + _rng.Next(32));
                    b.InsertRange(at, b.GetRange(from, n));
                    _log.Add($"copy {n} bytes from {from} to {at}");
                    break;
                case 6:
                    // Overwrite 8 bytes with an extreme little-endian integer (lengths, counts).
                    var word = BitConverter.GetBytes(new[] { 0L, -1L, long.MaxValue, 1L << 40, int.MaxValue + 1L, 1L << 62 }[_rng.Next(6)]);
                    for (int k = 0; k < 8 && at + k < b.Count; k++) b[at + k] = word[k];
                    _log.Add($"write extreme int64 at {at}");
                    break;
                default:
                    int cut = _rng.Next(b.Count + 1);
                    b.RemoveRange(cut, b.Count - cut);
                    _log.Add($"truncate to {cut} bytes");
                    break;
            }
        }
        return b.ToArray();
    }

    /// <summary>One to three JSON-aware mutations of UTF-8 JSON text; falls back to byte mutations when it stops parsing.</summary>
    public byte[] MutateJson(byte[] json)
    {
        int rounds = 1 + _rng.Next(3);
        var text = json;
        for (int r = 0; r < rounds; r++)
        {
            var spans = JsonSpans.Of(text);
            if (spans == null || spans.Values.Count == 0 || _rng.Next(10) == 0) { text = MutateBytes(text); continue; }
            switch (_rng.Next(6))
            {
                case 0 or 1 or 2:
                {
                    var (s, e) = spans.Values[_rng.Next(spans.Values.Count)];
                    string value = JsonValues[_rng.Next(JsonValues.Length)];
                    _log.Add($"value {Encoding.UTF8.GetString(text, s, Math.Min(e - s, 40))} -> {value}");
                    text = Splice(text, s, e, Encoding.UTF8.GetBytes(value));
                    break;
                }
                case 3 when spans.Properties.Count > 0:
                {
                    var (s, e, name) = spans.Properties[_rng.Next(spans.Properties.Count)];
                    _log.Add($"delete key {name}");
                    // Remove a following comma too when there is one, so most deletions stay valid JSON.
                    int end = e;
                    while (end < text.Length && text[end] is (byte)' ' or (byte)'\n' or (byte)'\r' or (byte)'\t') end++;
                    if (end < text.Length && text[end] == (byte)',') e = end + 1;
                    text = Splice(text, s, e, []);
                    break;
                }
                case 4 when spans.Properties.Count > 0:
                {
                    var (s, e, name) = spans.Properties[_rng.Next(spans.Properties.Count)];
                    _log.Add($"duplicate key {name}");
                    text = Splice(text, e, e, [.. ","u8, .. text.AsSpan(s, e - s)]);
                    break;
                }
                default:
                {
                    // Swap two values (a string where a number was, a list where an object was...).
                    var (s1, e1) = spans.Values[_rng.Next(spans.Values.Count)];
                    var (s2, e2) = spans.Values[_rng.Next(spans.Values.Count)];
                    if (e1 <= s2 || e2 <= s1)
                    {
                        if (s1 > s2) { (s1, s2) = (s2, s1); (e1, e2) = (e2, e1); }
                        _log.Add($"swap values at {s1} and {s2}");
                        text = [.. text.AsSpan(0, s1), .. text.AsSpan(s2, e2 - s2), .. text.AsSpan(e1, s2 - e1), .. text.AsSpan(s1, e1 - s1), .. text.AsSpan(e2)];
                    }
                    break;
                }
            }
        }
        return text;
    }

    /// <summary>Line- and token-level mutations of text (YAML, pipelines): replace a token, delete or duplicate a line, insert punctuation.</summary>
    public string MutateText(string text, string[] tokens)
    {
        int rounds = 1 + _rng.Next(3);
        for (int r = 0; r < rounds; r++)
        {
            var lines = text.Split('\n').ToList();
            switch (_rng.Next(7))
            {
                case 0 when lines.Count > 1:
                    int d = _rng.Next(lines.Count);
                    _log.Add($"delete line {d}");
                    lines.RemoveAt(d);
                    text = string.Join('\n', lines);
                    break;
                case 1:
                    int u = _rng.Next(lines.Count);
                    _log.Add($"duplicate line {u}");
                    lines.Insert(u, lines[u]);
                    text = string.Join('\n', lines);
                    break;
                case 2 or 3:
                {
                    var words = System.Text.RegularExpressions.Regex.Matches(text, @"[A-Za-z0-9_.%-]+");
                    if (words.Count == 0) goto default;
                    var w = words[_rng.Next(words.Count)];
                    string t = tokens[_rng.Next(tokens.Length)];
                    _log.Add($"token '{w.Value}' -> '{t}'");
                    text = text[..w.Index] + t + text[(w.Index + w.Length)..];
                    break;
                }
                case 4:
                {
                    int at = _rng.Next(text.Length + 1);
                    string p = new[] { "{", "}", "[", "]", ",", ":", "=", " ", "\t", "\n", "-", "'", "\"", "%", "#", "&", "*", "!", "|", ">", "\0" }[_rng.Next(21)];
                    _log.Add($"insert {JsonSerializer.Serialize(p)} at {at}");
                    text = text[..at] + p + text[at..];
                    break;
                }
                case 5 when text.Length > 0:
                {
                    int at = _rng.Next(text.Length), len = Math.Min(text.Length - at, 1 + _rng.Next(6));
                    _log.Add($"delete {len} chars at {at}");
                    text = text.Remove(at, len);
                    break;
                }
                default:
                {
                    int cut = _rng.Next(text.Length + 1);
                    _log.Add($"truncate to {cut} chars");
                    text = text[..cut];
                    break;
                }
            }
        }
        return text;
    }

    private static byte[] Splice(byte[] text, int start, int end, ReadOnlySpan<byte> with) =>
        [.. text.AsSpan(0, start), .. with, .. text.AsSpan(end)];

    /// <summary>Byte ranges of every value and every property (name through value) in a JSON document.</summary>
    private sealed class JsonSpans
    {
        public List<(int Start, int End)> Values { get; } = [];
        public List<(int Start, int End, string Name)> Properties { get; } = [];

        public static JsonSpans? Of(byte[] json)
        {
            var spans = new JsonSpans();
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip, MaxDepth = 512 });
            var open = new Stack<(int Start, int PropertyStart, string? Name)>();
            (int Start, string Name)? pending = null;
            try
            {
                while (reader.Read())
                {
                    int start = (int)reader.TokenStartIndex;
                    switch (reader.TokenType)
                    {
                        case JsonTokenType.PropertyName:
                            pending = (start, reader.GetString()!);
                            break;
                        case JsonTokenType.StartObject or JsonTokenType.StartArray:
                            open.Push((start, pending?.Start ?? -1, pending?.Name));
                            pending = null;
                            break;
                        case JsonTokenType.EndObject or JsonTokenType.EndArray:
                            var (s, ps, name) = open.Pop();
                            spans.Add(s, (int)reader.BytesConsumed, ps, name);
                            break;
                        default:
                            spans.Add(start, (int)reader.BytesConsumed, pending?.Start ?? -1, pending?.Name);
                            pending = null;
                            break;
                    }
                }
            }
            catch (Exception e) when (e is JsonException or InvalidOperationException) { return null; } // not JSON (or not UTF-8) any more
            return spans;
        }

        private void Add(int start, int end, int propertyStart, string? name)
        {
            Values.Add((start, end));
            if (name != null) Properties.Add((propertyStart, end, name));
        }
    }
}
