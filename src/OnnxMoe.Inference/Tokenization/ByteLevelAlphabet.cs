using System.Text;

namespace OnnxMoe.Inference.Tokenization;

/// <summary>GPT-2's reversible byte to printable-character map used by ByteLevel BPE.</summary>
internal static class ByteLevelAlphabet
{
    public static readonly char[] ByteToChar = BuildByteToChar();
    public static readonly Dictionary<char, byte> CharToByte = ByteToChar.Select((c, b) => (c, (byte)b)).ToDictionary(p => p.c, p => p.Item2);

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    public static string Encode(string text)
    {
        var bytes = Patterns.Utf8.GetBytes(text);
        var sb = new StringBuilder(bytes.Length);
        foreach (var b in bytes) sb.Append(ByteToChar[b]);
        return sb.ToString();
    }

    /// <summary>The bytes a byte-level token stands for; a token with a character outside the alphabet stands for its own UTF-8 bytes.</summary>
    public static void AppendBytes(string token, List<byte> output)
    {
        foreach (var c in token)
        {
            if (!CharToByte.ContainsKey(c))
            {
                output.AddRange(Patterns.Utf8.GetBytes(token));
                return;
            }
        }
        foreach (var c in token) output.Add(CharToByte[c]);
    }
}
