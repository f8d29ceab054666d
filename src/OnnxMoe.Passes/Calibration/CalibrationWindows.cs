namespace OnnxMoe.Passes.Calibration;

/// <summary><see cref="Count"/> calibration samples of <see cref="Length"/> tokens each (every position a real token, no padding),
/// cut by the runner from its tokenized corpus.</summary>
public sealed class CalibrationWindows
{
    private static int _nextId;
    private readonly ReadOnlyMemory<int> _tokens;

    /// <param name="tokens">Count x length token ids, sample after sample (not copied).</param>
    public CalibrationWindows(ReadOnlyMemory<int> tokens, int count, int length, string source)
    {
        if (tokens.Length != (long)count * length) throw new ArgumentException($"{tokens.Length} tokens are not {count} samples of {length}");
        _tokens = tokens;
        Count = count;
        Length = length;
        Source = source;
        Id = Interlocked.Increment(ref _nextId);
    }

    public int Count { get; }
    public int Length { get; }
    public long TokenCount => (long)Count * Length;
    /// <summary>Where the tokens came from (the text file), for messages and reports.</summary>
    public string Source { get; }
    /// <summary>Distinguishes window sets in the hidden-state cache.</summary>
    internal int Id { get; }

    public ReadOnlySpan<int> Sample(int index) => _tokens.Span.Slice(index * Length, Length);
}
