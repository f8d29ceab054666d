using OnnxMoe.Inference.Tokenization;
using OnnxMoe.Ir;
using OnnxMoe.Passes.Calibration;

namespace OnnxMoe.Compiler.Calibration;

/// <summary>
/// The calibration text tokenized once (no special tokens) into one token stream, from which every
/// consumer cuts its windows: trimming scores the recipe's samples x seq-len, AWQ the same number of
/// samples of at most 512 tokens. Windows are consecutive and start at the stream's beginning, so each
/// consumer sees the same text. The text is tokenized as one text, only as far as the longest request reaches.
/// </summary>
public sealed class CalibrationCorpus
{
    /// <summary>Calibration text shipped with the bundled models, relative to the repository root.</summary>
    public const string DefaultTextRelativePath = "models/data/kjv-calibration.txt";

    private readonly int[] _tokens;

    private CalibrationCorpus(int[] tokens, string source)
    {
        _tokens = tokens;
        Source = source;
    }

    /// <summary>Where the tokens came from (the text file), for messages and reports.</summary>
    public string Source { get; }
    public int TokenCount => _tokens.Length;

    /// <summary>Tokens given directly (tests): the windows of <see cref="Windows"/> at the samples' length give the samples back.</summary>
    public static CalibrationCorpus FromTokens(IReadOnlyList<int[]> samples, string source = "tokens") =>
        new(samples.SelectMany(s => s).ToArray(), source);

    /// <summary>Tokens kept clear of the cut when only a prefix of the text is tokenized: tokenizers without a pre-tokenizer may merge
    /// across any boundary, so the last tokens before a cut can differ from the whole text's.</summary>
    private const int CutMargin = 256;

    /// <summary>
    /// The first <paramref name="tokensWanted"/> tokens of <paramref name="textPath"/> tokenized as one text (so they equal the whole
    /// text's tokenization: a tokenizer may merge across lines, or prepend a marker to each text it is given). Only a prefix of whole
    /// lines is read, doubled until it yields the tokens wanted with a margin before the cut, so a large text is not held whole.
    /// </summary>
    public static CalibrationCorpus FromText(Tokenizer tokenizer, string textPath, long tokensWanted)
    {
        if (!File.Exists(textPath)) throw new UserErrorException($"{textPath}: calibration text not found");
        long chars = tokensWanted > int.MaxValue / 32 ? int.MaxValue / 4 : Math.Max(tokensWanted * 8, 1 << 16);
        while (true)
        {
            var (text, whole) = ReadPrefix(textPath, chars);
            var ids = tokenizer.Encode(text, addSpecialTokens: false);
            if (whole || ids.Length - CutMargin >= tokensWanted)
            {
                if (ids.Length == 0) throw new UserErrorException($"{textPath}: the calibration text gives no tokens");
                return new CalibrationCorpus(ids.Length > tokensWanted ? ids[..(int)tokensWanted] : ids, textPath);
            }
            if (chars >= int.MaxValue / 4) throw new UserErrorException($"{textPath}: the calibration text is too large to tokenize ({chars} characters read)");
            chars = Math.Min(chars * 2, int.MaxValue / 4);
        }
    }

    /// <summary>Whole lines from the start of the file until at least <paramref name="chars"/> characters; whether that was the whole file.</summary>
    private static (string Text, bool Whole) ReadPrefix(string path, long chars)
    {
        var text = new System.Text.StringBuilder();
        using var reader = new StreamReader(path);
        while (text.Length < chars)
        {
            var line = reader.ReadLine();
            if (line == null) return (text.ToString(), true);
            text.Append(line).Append('\n');
        }
        return (text.ToString(), reader.Peek() < 0);
    }

    /// <summary>
    /// The corpus a recipe or the CLI asks for: <paramref name="settings"/>.Text ("default" = the shipped text) tokenized with the
    /// tokenizer.json in <paramref name="modelDirectory"/> (a checkpoint or model folder), as far as samples x seq-len.
    /// </summary>
    public static CalibrationCorpus FromSettings(string modelDirectory, Recipes.CalibrationSettings settings)
    {
        string tokenizerPath = Path.Combine(modelDirectory, "tokenizer.json");
        if (!File.Exists(tokenizerPath))
            throw new UserErrorException($"{modelDirectory}: no tokenizer.json, which calibration needs to tokenize its text");
        return FromText(Tokenizer.Load(tokenizerPath), ResolveText(settings.Text), (long)settings.Samples * settings.SeqLen);
    }

    /// <summary>A settings text: "default" is the shipped text (searched for), anything else a path.</summary>
    public static string ResolveText(string text) => text == Recipes.CalibrationSettings.DefaultText
        ? FindDefaultText() ?? throw new UserErrorException($"the default calibration text {DefaultTextRelativePath} was not found; pass a text file")
        : text;

    /// <summary>
    /// <paramref name="count"/> consecutive windows of <paramref name="length"/> tokens. A stream too short for that many gives as many
    /// as it holds (<paramref name="shortfall"/> is told); one shorter than a single window is a <see cref="UserErrorException"/>.
    /// </summary>
    public CalibrationWindows Windows(int count, int length, Action<string>? shortfall = null)
    {
        if (count < 1 || length < 1) throw new UserErrorException($"calibration needs samples >= 1 and seq-len >= 1 (got {count} x {length})");
        int available = _tokens.Length / length;
        if (available == 0)
            throw new UserErrorException($"{Source}: the calibration text has {_tokens.Length} tokens, fewer than one sample of {length}");
        int n = Math.Min(count, available);
        if (n < count) shortfall?.Invoke($"{Source}: the calibration text holds {available} samples of {length} tokens; using {n} instead of {count}");
        return new CalibrationWindows(_tokens.AsMemory(0, n * length), n, length, Source);
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
