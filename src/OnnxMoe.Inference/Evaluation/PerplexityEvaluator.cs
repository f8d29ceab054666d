using System.Diagnostics;
using System.Numerics.Tensors;
using OnnxMoe.Inference.Generation;

namespace OnnxMoe.Inference.Evaluation;

/// <summary>Sliding-window settings: windows of <see cref="SequenceLength"/> tokens advancing by <see cref="Stride"/>.</summary>
public sealed record PerplexityOptions
{
    public int SequenceLength { get; init; } = 512;

    /// <summary>Window advance; each token is scored once, by the window that first covers it.</summary>
    public int Stride { get; init; } = 256;
}

/// <summary>Progress after each window.</summary>
public readonly record struct PerplexityProgress(int Window, int WindowCount, long ScoredTokens, long TokensToScore, TimeSpan Elapsed);

/// <summary>Perplexity over a token stream.</summary>
/// <param name="Perplexity">exp(mean NLL).</param>
/// <param name="NegativeLogLikelihood">Mean NLL per scored token, in nats.</param>
/// <param name="TokenCount">Tokens scored.</param>
/// <param name="ForwardTokens">Tokens run through the model (windows overlap, so more than scored).</param>
public sealed record PerplexityResult(double Perplexity, double NegativeLogLikelihood, long TokenCount, long ForwardTokens, int Windows, TimeSpan Elapsed)
{
    /// <summary>Scored tokens per second of wall time.</summary>
    public double TokensPerSecond => Elapsed > TimeSpan.Zero ? TokenCount / Elapsed.TotalSeconds : 0;
}

/// <summary>
/// Hugging Face style strided perplexity: window i covers [i*stride, i*stride + seqLen); it scores only the tokens no
/// earlier window scored, each predicted from everything before it in the window. Memory holds one window's logits.
/// </summary>
public sealed class PerplexityEvaluator(IDecoder decoder)
{
    public PerplexityResult Evaluate(IReadOnlyList<int> tokens, PerplexityOptions options,
        Action<PerplexityProgress>? progress = null, CancellationToken cancellation = default)
    {
        int seqLen = options.SequenceLength, stride = options.Stride;
        if (seqLen < 2) throw new ArgumentException($"sequence length must be >= 2, got {seqLen}");
        if (stride < 1 || stride > seqLen) throw new ArgumentException($"stride must be in 1..{seqLen} (the sequence length), got {stride}");
        if (tokens.Count < 2) throw new ArgumentException($"perplexity needs at least 2 tokens, got {tokens.Count}");

        var windows = Windows(tokens.Count, seqLen, stride);
        long toScore = windows.Sum(w => (long)(w.End - w.FirstScored));
        int vocab = decoder.VocabSize;
        var scratch = new float[vocab];
        var ids = new long[seqLen];
        var mask = new long[seqLen];
        var positions = new long[seqLen];
        double totalNll = 0;
        long scored = 0, forward = 0;
        var stopwatch = Stopwatch.StartNew();

        for (int w = 0; w < windows.Count; w++)
        {
            cancellation.ThrowIfCancellationRequested();
            var (begin, end, firstScored) = windows[w];
            int n = end - begin;
            for (int j = 0; j < n; j++)
            {
                ids[j] = tokens[begin + j];
                mask[j] = 1;
                positions[j] = j;
            }
            using (var state = decoder.CreateState(1))
            {
                var logits = state.Forward(ids.AsSpan(0, n), n, mask.AsSpan(0, n), positions.AsSpan(0, n));
                if (logits.Length != n * vocab)
                    throw new InvalidOperationException($"decoder returned {logits.Length} logits, expected {n}x{vocab}");
                for (int t = firstScored; t < end; t++)
                {
                    int target = tokens[t];
                    if ((uint)target >= (uint)vocab) throw new ArgumentException($"token id {target} at position {t} is outside the model's vocabulary ({vocab})");
                    totalNll += NegativeLogLikelihood(logits.Slice((t - begin - 1) * vocab, vocab), target, scratch);
                }
            }
            scored += end - firstScored;
            forward += n;
            progress?.Invoke(new PerplexityProgress(w + 1, windows.Count, scored, toScore, stopwatch.Elapsed));
        }
        var mean = totalNll / scored;
        return new PerplexityResult(Math.Exp(mean), mean, scored, forward, windows.Count, stopwatch.Elapsed);
    }

    /// <summary>The windows (begin, end, first scored position) for a stream of <paramref name="count"/> tokens.</summary>
    internal static List<(int Begin, int End, int FirstScored)> Windows(int count, int seqLen, int stride)
    {
        var windows = new List<(int, int, int)>();
        int previousEnd = 0;
        for (int begin = 0; ; begin += stride)
        {
            int end = Math.Min(begin + seqLen, count);
            // Position begin has no context inside its window, so it is never scored here.
            int firstScored = Math.Max(begin + 1, previousEnd);
            if (end > firstScored) windows.Add((begin, end, firstScored));
            previousEnd = end;
            if (end == count) break;
        }
        return windows;
    }

    /// <summary>-log softmax(logits)[target], computed stably (max subtracted) with TensorPrimitives.</summary>
    public static double NegativeLogLikelihood(ReadOnlySpan<float> logits, int target, Span<float> scratch)
    {
        var buffer = scratch[..logits.Length];
        float max = TensorPrimitives.Max(logits);
        TensorPrimitives.Subtract(logits, max, buffer);
        TensorPrimitives.Exp(buffer, buffer);
        double sum = TensorPrimitives.Sum(buffer);
        return Math.Log(sum) + max - logits[target];
    }
}
