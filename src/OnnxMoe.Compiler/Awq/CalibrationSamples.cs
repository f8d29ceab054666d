using OnnxMoe.Inference.Tokenization;
using OnnxMoe.Ir;

namespace OnnxMoe.Compiler.Awq;

/// <summary>Calibration token windows: <see cref="Count"/> samples of <see cref="SequenceLength"/> token ids each, row-major.</summary>
public sealed class CalibrationSamples
{
    public CalibrationSamples(long[] tokens, int count, int sequenceLength)
    {
        if (count < 1 || sequenceLength < 1 || tokens.Length != (long)count * sequenceLength)
            throw new ArgumentException($"{tokens.Length} tokens do not make {count} samples of {sequenceLength}");
        Tokens = tokens;
        Count = count;
        SequenceLength = sequenceLength;
    }

    public long[] Tokens { get; }
    public int Count { get; }
    public int SequenceLength { get; }

    public ReadOnlySpan<long> Sample(int index) => Tokens.AsSpan(index * SequenceLength, SequenceLength);

    /// <summary>
    /// Tokenizes <paramref name="textPath"/> (no special tokens) and cuts it into consecutive windows.
    /// A text too short for <paramref name="samples"/> windows gives as many as it holds
    /// (<paramref name="shortfall"/> says so); one that holds none is a <see cref="UserErrorException"/>.
    /// </summary>
    public static CalibrationSamples FromText(string textPath, Tokenizer tokenizer, int samples, int sequenceLength, Action<string>? shortfall = null)
    {
        var ids = tokenizer.Encode(File.ReadAllText(textPath), addSpecialTokens: false);
        int available = ids.Length / sequenceLength;
        if (available == 0)
            throw new UserErrorException($"{textPath}: the calibration text has {ids.Length} tokens, fewer than one sample of {sequenceLength}");
        int count = Math.Min(samples, available);
        if (count < samples)
            shortfall?.Invoke($"{textPath}: the calibration text holds {available} samples of {sequenceLength} tokens; using {count} instead of {samples}");
        var tokens = new long[(long)count * sequenceLength];
        for (int i = 0; i < tokens.Length; i++) tokens[i] = ids[i];
        return new CalibrationSamples(tokens, count, sequenceLength);
    }
}
