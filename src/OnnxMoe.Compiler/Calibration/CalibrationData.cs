using OnnxMoe.Inference.Tokenization;
using OnnxMoe.Ir;

namespace OnnxMoe.Compiler.Calibration;

/// <summary>
/// Calibration token samples, each exactly <see cref="SequenceLength"/> tokens (no padding, so every
/// position is a real token). Cut from one token stream: the text is tokenized without special tokens
/// and split into consecutive windows; the text need only be tokenized as far as the samples reach.
/// </summary>
public sealed class CalibrationData
{
    /// <summary>Calibration text shipped with the bundled models, relative to the repository root.</summary>
    public const string DefaultTextRelativePath = "models/data/kjv-calibration.txt";

    private CalibrationData(IReadOnlyList<int[]> samples, string source)
    {
        if (samples.Count == 0) throw new UserErrorException($"{source}: no calibration samples");
        int len = samples[0].Length;
        if (len == 0 || samples.Any(s => s.Length != len)) throw new ArgumentException("calibration samples must be non-empty and of equal length");
        Samples = samples;
        SequenceLength = len;
        Source = source;
    }

    public IReadOnlyList<int[]> Samples { get; }
    public int SequenceLength { get; }
    public long TokenCount => (long)Samples.Count * SequenceLength;
    /// <summary>Where the tokens came from, for reports.</summary>
    public string Source { get; }

    /// <summary>Samples given as token ids (all of one length).</summary>
    public static CalibrationData FromTokens(IReadOnlyList<int[]> samples, string source = "tokens") => new(samples, source);

    /// <summary>
    /// <paramref name="samples"/> windows of <paramref name="seqLen"/> tokens from <paramref name="textPath"/>. A text too short for
    /// that many gives as many whole windows as it holds (at least one; a text shorter than one window gives one shorter sample);
    /// <see cref="Samples"/>.Count says how many were made.
    /// </summary>
    public static CalibrationData FromText(Tokenizer tokenizer, string textPath, int samples, int seqLen)
    {
        if (samples < 1 || seqLen < 1) throw new UserErrorException($"calibration needs samples >= 1 and seq-len >= 1 (got {samples} x {seqLen})");
        if (!File.Exists(textPath)) throw new UserErrorException($"{textPath}: calibration text not found");
        long wanted = (long)samples * seqLen;
        var tokens = new List<int>();
        var chunk = new System.Text.StringBuilder();
        foreach (var line in File.ReadLines(textPath))
        {
            chunk.Append(line).Append('\n');
            if (chunk.Length < 1 << 16) continue;
            tokens.AddRange(tokenizer.Encode(chunk.ToString(), addSpecialTokens: false));
            chunk.Clear();
            if (tokens.Count >= wanted) break;
        }
        if (chunk.Length > 0 && tokens.Count < wanted) tokens.AddRange(tokenizer.Encode(chunk.ToString(), addSpecialTokens: false));
        if (tokens.Count == 0) throw new UserErrorException($"{textPath}: the calibration text gives no tokens");
        if (tokens.Count < seqLen) return new CalibrationData([tokens.ToArray()], textPath);
        int n = (int)Math.Min(samples, tokens.Count / seqLen);
        var result = new List<int[]>(n);
        for (int i = 0; i < n; i++) result.Add(tokens.GetRange(i * seqLen, seqLen).ToArray());
        return new CalibrationData(result, textPath);
    }

    /// <summary>
    /// Calibration data as a recipe or the CLI asks for it: <paramref name="settings"/>.Text ("default" = the shipped
    /// text) tokenized with the tokenizer.json in <paramref name="modelDirectory"/> (a checkpoint or model folder).
    /// </summary>
    public static CalibrationData FromSettings(string modelDirectory, Recipes.CalibrationSettings settings)
    {
        string tokenizerPath = Path.Combine(modelDirectory, "tokenizer.json");
        if (!File.Exists(tokenizerPath))
            throw new UserErrorException($"{modelDirectory}: no tokenizer.json, which calibration needs to tokenize its text");
        string text = settings.Text == Recipes.CalibrationSettings.DefaultText
            ? FindDefaultText() ?? throw new UserErrorException($"the default calibration text {DefaultTextRelativePath} was not found; pass a text file")
            : settings.Text;
        return FromText(Tokenizer.Load(tokenizerPath), text, settings.Samples, settings.SeqLen);
    }

    /// <summary>The shipped calibration text, searched upwards from the working directory and the program's folder; null when absent.</summary>
    public static string? FindDefaultText()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var d = new DirectoryInfo(start); d != null; d = d.Parent)
            {
                var p = Path.Combine(d.FullName, DefaultTextRelativePath);
                if (File.Exists(p)) return p;
            }
        return null;
    }
}
