using System.Diagnostics;
using OnnxMoe.Inference.Tokenization;

namespace OnnxMoe.Inference.Generation;

/// <summary>Settings of one generate call.</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 128;

    /// <summary>&lt;= 0: greedy decoding.</summary>
    public float Temperature { get; init; }

    /// <summary>0: no top-k filter.</summary>
    public int TopK { get; init; }

    /// <summary>1: no nucleus filter.</summary>
    public float TopP { get; init; } = 1f;

    public int Seed { get; init; }

    /// <summary>Whether the prompt gets the tokenizer's special tokens (BOS).</summary>
    public bool AddSpecialTokens { get; init; } = true;
}

public enum FinishReason
{
    /// <summary>An end-of-sequence id was generated (it is the last of GeneratedIds).</summary>
    EndOfSequence,
    MaxNewTokens,
    /// <summary>The model's context length was reached.</summary>
    ContextLength,
}

/// <summary>One sequence's outcome; times are for the whole batch it ran in.</summary>
public sealed record GenerationResult(
    IReadOnlyList<int> PromptIds,
    IReadOnlyList<int> GeneratedIds,
    string Text,
    FinishReason FinishReason,
    TimeSpan PrefillTime,
    TimeSpan DecodeTime,
    int DecodeSteps)
{
    /// <summary>Decode steps per second (each step yields one token per running sequence), excluding prefill.</summary>
    public double DecodeStepsPerSecond => DecodeTime > TimeSpan.Zero ? DecodeSteps / DecodeTime.TotalSeconds : 0;
}

/// <summary>
/// Autoregressive generation over an <see cref="IDecoder"/>: one prefill of the (left-padded) prompts, then one
/// decode step per token reusing the KV cache; stops per sequence on an end-of-sequence id.
/// </summary>
public sealed class Generator
{
    private readonly IDecoder _decoder;
    private readonly Tokenizer _tokenizer;
    private readonly HashSet<int> _eos;
    private readonly int _padTokenId;
    private readonly int? _contextLength;

    /// <param name="eosTokenIds">Ids that end a sequence (generation_config.json / genai_config.json).</param>
    /// <param name="padTokenId">Id placed left of shorter prompts in a batch (masked out).</param>
    /// <param name="contextLength">Maximum total length, when the model has one.</param>
    public Generator(IDecoder decoder, Tokenizer tokenizer, IEnumerable<int> eosTokenIds, int padTokenId = 0, int? contextLength = null)
    {
        _decoder = decoder;
        _tokenizer = tokenizer;
        _eos = eosTokenIds.ToHashSet();
        _padTokenId = padTokenId;
        _contextLength = contextLength;
    }

    /// <summary>Generates from a text prompt; <paramref name="onText"/> receives each newly final piece of text.</summary>
    public GenerationResult Generate(string prompt, GenerationOptions options, Action<string>? onText = null, CancellationToken cancellation = default) =>
        Generate(_tokenizer.Encode(prompt, options.AddSpecialTokens), options, onText, cancellation);

    public GenerationResult Generate(IReadOnlyList<int> promptIds, GenerationOptions options, Action<string>? onText = null, CancellationToken cancellation = default) =>
        GenerateBatch([promptIds], options, onText is null ? null : (_, text) => onText(text), cancellation)[0];

    public IReadOnlyList<GenerationResult> GenerateBatch(IReadOnlyList<string> prompts, GenerationOptions options,
        Action<int, string>? onText = null, CancellationToken cancellation = default) =>
        GenerateBatch(prompts.Select(p => (IReadOnlyList<int>)_tokenizer.Encode(p, options.AddSpecialTokens)).ToList(), options, onText, cancellation);

    /// <summary>Generates for several prompts at once with left padding; <paramref name="onText"/> gets (row, text).</summary>
    public IReadOnlyList<GenerationResult> GenerateBatch(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options,
        Action<int, string>? onText = null, CancellationToken cancellation = default)
    {
        if (prompts.Count == 0) return [];
        if (prompts.Any(p => p.Count == 0)) throw new ArgumentException("a prompt encodes to no tokens: nothing to condition on");
        if (options.MaxNewTokens < 0) throw new ArgumentException($"max new tokens must be >= 0, got {options.MaxNewTokens}");
        int batch = prompts.Count;
        int promptLength = prompts.Max(p => p.Count);
        if (_contextLength is int ctx && promptLength > ctx)
            throw new ArgumentException($"the prompt has {promptLength} tokens, more than the model's context length {ctx}");

        var sampler = new TokenSampler(options.Temperature, options.TopK, options.TopP, options.Seed);
        var generated = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        var finish = new FinishReason?[batch];
        var streams = Enumerable.Range(0, batch).Select(r => _tokenizer.CreateStreamingDecoder(prompts[r].ToArray())).ToArray();
        var nextPosition = new long[batch];
        var text = Enumerable.Range(0, batch).Select(_ => new System.Text.StringBuilder()).ToArray();

        // Left padding: pads are masked out and do not advance positions.
        var ids = new long[batch * promptLength];
        var maskRows = Enumerable.Range(0, batch).Select(_ => new List<long>(promptLength + options.MaxNewTokens)).ToArray();
        var positions = new long[batch * promptLength];
        for (int r = 0; r < batch; r++)
        {
            int pad = promptLength - prompts[r].Count;
            for (int j = 0; j < promptLength; j++)
            {
                bool real = j >= pad;
                ids[r * promptLength + j] = real ? prompts[r][j - pad] : _padTokenId;
                maskRows[r].Add(real ? 1 : 0);
                positions[r * promptLength + j] = real ? j - pad : 0;
            }
            nextPosition[r] = prompts[r].Count;
        }

        var stopwatch = Stopwatch.StartNew();
        using var state = _decoder.CreateState(batch);
        int vocab = _decoder.VocabSize;
        var logits = state.Forward(ids, promptLength, Flatten(maskRows), positions);
        var lastRows = CopyLastRows(logits, batch, promptLength, vocab);
        var prefillTime = stopwatch.Elapsed;
        stopwatch.Restart();
        int steps = 0;

        var stepIds = new long[batch];
        var stepPositions = new long[batch];
        if (options.MaxNewTokens == 0) Array.Fill(finish, FinishReason.MaxNewTokens);
        while (true)
        {
            cancellation.ThrowIfCancellationRequested();
            for (int r = 0; r < batch; r++)
            {
                if (finish[r] is not null) continue;
                int token = sampler.Sample(lastRows.AsSpan(r * vocab, vocab));
                generated[r].Add(token);
                var piece = streams[r].Push(token);
                if (piece.Length > 0)
                {
                    text[r].Append(piece);
                    onText?.Invoke(r, piece);
                }
                if (_eos.Contains(token)) finish[r] = FinishReason.EndOfSequence;
                else if (generated[r].Count >= options.MaxNewTokens) finish[r] = FinishReason.MaxNewTokens;
                // Feeding this token back would exceed the model's context.
                else if (_contextLength is int c && state.PastLength + 1 > c) finish[r] = FinishReason.ContextLength;
            }
            if (finish.All(f => f is not null)) break;

            for (int r = 0; r < batch; r++)
            {
                // Finished rows keep running (their output is ignored) so the batch stays rectangular.
                stepIds[r] = finish[r] is null ? generated[r][^1] : _padTokenId;
                stepPositions[r] = nextPosition[r]++;
                maskRows[r].Add(1);
            }
            logits = state.Forward(stepIds, 1, Flatten(maskRows), stepPositions);
            lastRows = CopyLastRows(logits, batch, 1, vocab);
            steps++;
        }
        var decodeTime = stopwatch.Elapsed;

        var results = new GenerationResult[batch];
        for (int r = 0; r < batch; r++)
        {
            var tail = streams[r].Flush();
            if (tail.Length > 0)
            {
                text[r].Append(tail);
                onText?.Invoke(r, tail);
            }
            results[r] = new GenerationResult(prompts[r].ToArray(), generated[r].ToArray(), text[r].ToString(), finish[r]!.Value, prefillTime, decodeTime, steps);
        }
        return results;
    }

    private static long[] Flatten(List<long>[] rows)
    {
        int width = rows[0].Count;
        var flat = new long[rows.Length * width];
        for (int r = 0; r < rows.Length; r++) rows[r].CopyTo(flat, r * width);
        return flat;
    }

    private static float[] CopyLastRows(ReadOnlySpan<float> logits, int batch, int sequenceLength, int vocab)
    {
        if (logits.Length != batch * sequenceLength * vocab)
            throw new InvalidOperationException($"decoder returned {logits.Length} logits, expected {batch}x{sequenceLength}x{vocab}");
        var rows = new float[batch * vocab];
        for (int r = 0; r < batch; r++)
            logits.Slice((r * sequenceLength + sequenceLength - 1) * vocab, vocab).CopyTo(rows.AsSpan(r * vocab));
        return rows;
    }
}
