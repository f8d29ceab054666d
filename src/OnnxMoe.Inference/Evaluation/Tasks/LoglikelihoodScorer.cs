using System.Numerics.Tensors;
using OnnxMoe.Inference.Generation;
using OnnxMoe.Inference.Tokenization;

namespace OnnxMoe.Inference.Evaluation.Tasks;

/// <summary>A choice's score as lm-eval returns it: the summed log-probability of the continuation tokens and whether greedy decoding gives them.</summary>
public readonly record struct Loglikelihood(double LogProbability, bool IsGreedy);

/// <summary>Token ids of one request: the context (at least one token) and the continuation (at least one token).</summary>
public sealed record EncodedRequest(int[] Context, int[] Continuation);

/// <summary>How requests become tokens: lm-eval 0.4.9.1's HFLM (no BOS except for an empty context) or, with <see cref="AddBos"/>, newer lm-eval's (BOS first always).</summary>
public sealed record ScoringOptions
{
    /// <summary>Prefix id for an empty context: BOS, else EOS (HFLM.prefix_token_id).</summary>
    public required int PrefixTokenId { get; init; }

    /// <summary>Prepend <see cref="PrefixTokenId"/> to every context (lm-eval >= 0.4.10 with a BOS-adding tokenizer).</summary>
    public bool AddBos { get; init; }

    /// <summary>Model window; longer inputs lose tokens on the left (HFLM._loglikelihood_tokens).</summary>
    public int MaxLength { get; init; } = 2048;

    /// <summary>Documents whose contexts run in one batch.</summary>
    public int BatchSize { get; init; } = 1;
}

/// <summary>
/// Scores (context, continuation) requests with a decoder the way lm-eval's Hugging Face backend does, running a
/// context shared by a document's choices once: the contexts of a batch of documents are prefilled together (left
/// padded), the KV cache is copied to one row per choice (<see cref="IDecoderState.SelectRows"/>) and the
/// continuations run from it in one call (right padded, the padding masked and never read).
/// </summary>
public sealed class LoglikelihoodScorer(IDecoder decoder, Tokenizer tokenizer, ScoringOptions options)
{
    /// <summary>
    /// lm_eval/api/model.py TemplateLM._encode_pair and loglikelihood: the context's trailing whitespace moves to the
    /// continuation; continuation tokens = encode(context + continuation) after len(encode(context)) tokens, both
    /// encoded without special tokens (HFLM.tok_encode with add_bos_token False); an empty context is [prefix id]
    /// (BOS, else EOS: HFLM.prefix_token_id) with the continuation encoded alone.
    /// </summary>
    public EncodedRequest Encode(LoglikelihoodRequest request)
    {
        var (context, continuation) = (request.Context, request.Continuation);
        int[] contextIds, continuationIds;
        if (context.Length == 0)
        {
            contextIds = [options.PrefixTokenId];
            continuationIds = tokenizer.Encode(continuation, addSpecialTokens: false);
            return new EncodedRequest(contextIds, continuationIds);
        }
        int trimmed = context.TrimEnd().Length;
        if (trimmed < context.Length)
        {
            continuation = context[trimmed..] + continuation;
            context = context[..trimmed];
        }
        var whole = tokenizer.Encode(context + continuation, addSpecialTokens: false);
        contextIds = tokenizer.Encode(context, addSpecialTokens: false);
        continuationIds = whole.Length > contextIds.Length ? whole[contextIds.Length..] : [];
        if (options.AddBos) contextIds = [options.PrefixTokenId, .. contextIds];
        // An all-whitespace context encodes to nothing; the model still needs one input token, as HFLM asserts.
        if (contextIds.Length == 0) contextIds = [options.PrefixTokenId];
        return new EncodedRequest(contextIds, continuationIds);
    }

    /// <summary>Scores groups of requests (one group per document); the result has the groups' shape.</summary>
    public List<Loglikelihood[]> Score(IReadOnlyList<IReadOnlyList<EncodedRequest>> groups, Action<int>? groupsDone = null,
        CancellationToken cancellation = default)
    {
        var results = new List<Loglikelihood[]>(groups.Count);
        var batch = new List<IReadOnlyList<EncodedRequest>>();
        int done = 0;
        void Flush()
        {
            if (batch.Count == 0) return;
            results.AddRange(ScoreSharedBatch(batch));
            done += batch.Count;
            batch.Clear();
            groupsDone?.Invoke(done);
        }
        foreach (var group in groups)
        {
            cancellation.ThrowIfCancellationRequested();
            foreach (var r in group)
                if (r.Continuation.Length == 0) throw new ArgumentException("a continuation encodes to no tokens");
            bool shared = group.All(r => r.Context.AsSpan().SequenceEqual(group[0].Context))
                && group.All(r => r.Context.Length + r.Continuation.Length <= options.MaxLength + 1);
            if (!shared)
            {
                Flush();
                results.Add(group.Select(ScoreAlone).ToArray());
                groupsDone?.Invoke(++done);
                continue;
            }
            batch.Add(group);
            if (batch.Count >= Math.Max(1, options.BatchSize)) Flush();
        }
        Flush();
        return results;
    }

    /// <summary>One request by itself, one forward over (context + continuation)[-(max_length + 1):][:-1] as HFLM runs it.</summary>
    public Loglikelihood ScoreAlone(EncodedRequest request)
    {
        var all = request.Context.Concat(request.Continuation).ToArray();
        var input = all.Length > options.MaxLength + 1 ? all[^(options.MaxLength + 1)..] : all;
        int n = input.Length - 1, contLen = request.Continuation.Length;
        var ids = new long[n];
        var mask = new long[n];
        var positions = new long[n];
        for (int i = 0; i < n; i++) { ids[i] = input[i]; mask[i] = 1; positions[i] = i; }
        using var state = decoder.CreateState(1);
        var logits = state.Forward(ids, n, mask, positions);
        int vocab = decoder.VocabSize;
        var scratch = new float[vocab];
        double sum = 0;
        bool greedy = true;
        for (int j = 0; j < contLen; j++)
        {
            var row = logits.Slice((n - contLen + j) * vocab, vocab);
            var (lp, isMax) = LogProbability(row, request.Continuation[j], scratch);
            sum += lp;
            greedy &= isMax;
        }
        return new Loglikelihood(sum, greedy);
    }

    private List<Loglikelihood[]> ScoreSharedBatch(List<IReadOnlyList<EncodedRequest>> groups)
    {
        int vocab = decoder.VocabSize, docs = groups.Count;
        var contexts = groups.Select(g => g[0].Context).ToArray();
        int width = contexts.Max(c => c.Length);
        // Prefill: contexts left-padded; a real token's position counts the real tokens before it.
        var ids = new long[docs * width];
        var mask = new long[docs * width];
        var positions = new long[docs * width];
        for (int d = 0; d < docs; d++)
        {
            int pad = width - contexts[d].Length;
            for (int j = 0; j < contexts[d].Length; j++)
            {
                ids[d * width + pad + j] = contexts[d][j];
                mask[d * width + pad + j] = 1;
                positions[d * width + pad + j] = j;
            }
        }
        using var prefill = decoder.CreateState(docs);
        var prefillLogits = prefill.Forward(ids, width, mask, positions);
        // The last context position predicts every choice's first continuation token.
        var firstRows = new float[docs][];
        for (int d = 0; d < docs; d++) firstRows[d] = prefillLogits.Slice((d * width + width - 1) * vocab, vocab).ToArray();

        var rows = new List<(int Doc, int Choice)>();
        for (int d = 0; d < docs; d++)
            for (int c = 0; c < groups[d].Count; c++) rows.Add((d, c));
        int steps = rows.Max(r => groups[r.Doc][r.Choice].Continuation.Length) - 1;
        var scratch = new float[vocab];
        var results = groups.Select(g => new Loglikelihood[g.Count]).ToList();
        float[]? contLogits = null;
        if (steps > 0)
        {
            using var branched = prefill.SelectRows(rows.Select(r => r.Doc).ToArray());
            int total = width + steps;
            var cIds = new long[rows.Count * steps];
            var cMask = new long[rows.Count * total];
            var cPositions = new long[rows.Count * steps];
            for (int r = 0; r < rows.Count; r++)
            {
                var (d, c) = rows[r];
                var cont = groups[d][c].Continuation;
                for (int j = 0; j < width; j++) cMask[r * total + j] = mask[d * width + j];
                for (int j = 0; j < steps; j++)
                {
                    bool real = j < cont.Length - 1;
                    cIds[r * steps + j] = real ? cont[j] : cont[0];
                    cMask[r * total + width + j] = real ? 1 : 0;
                    cPositions[r * steps + j] = contexts[d].Length + j;
                }
            }
            contLogits = branched.Forward(cIds, steps, cMask, cPositions).ToArray();
        }
        for (int r = 0; r < rows.Count; r++)
        {
            var (d, c) = rows[r];
            var cont = groups[d][c].Continuation;
            var (sum, greedy) = LogProbability(firstRows[d], cont[0], scratch);
            for (int j = 1; j < cont.Length; j++)
            {
                var (lp, isMax) = LogProbability(contLogits.AsSpan(((r * steps) + j - 1) * vocab, vocab), cont[j], scratch);
                sum += lp;
                greedy &= isMax;
            }
            results[d][c] = new Loglikelihood(sum, greedy);
        }
        return results;
    }

    /// <summary>log_softmax(logits)[target] (max subtracted, in double) and whether target is the argmax (torch's argmax: first maximum).</summary>
    public static (double LogProbability, bool IsArgmax) LogProbability(ReadOnlySpan<float> logits, int target, Span<float> scratch)
    {
        if ((uint)target >= (uint)logits.Length) throw new ArgumentOutOfRangeException(nameof(target), $"token id {target} is outside the vocabulary ({logits.Length})");
        var buffer = scratch[..logits.Length];
        float max = TensorPrimitives.Max(logits);
        TensorPrimitives.Subtract(logits, max, buffer);
        TensorPrimitives.Exp(buffer, buffer);
        double sum = TensorPrimitives.Sum(buffer);
        return (logits[target] - max - Math.Log(sum), TensorPrimitives.IndexOfMax(logits) == target);
    }
}
