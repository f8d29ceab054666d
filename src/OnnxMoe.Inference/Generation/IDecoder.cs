namespace OnnxMoe.Inference.Generation;

/// <summary>
/// A causal decoder run step by step with a KV cache: the ORT GenAI-style session adapter, or a test double.
/// Generation and perplexity depend only on this.
/// </summary>
public interface IDecoder : IDisposable
{
    /// <summary>Width of one logits row.</summary>
    int VocabSize { get; }

    /// <summary>Starts an empty KV cache for <paramref name="batchSize"/> sequences; the caller owns and disposes it.</summary>
    IDecoderState CreateState(int batchSize);
}

/// <summary>The KV cache of one batch of sequences.</summary>
public interface IDecoderState : IDisposable
{
    int BatchSize { get; }

    /// <summary>Number of positions already in the cache (the same for every row; left padding is masked).</summary>
    int PastLength { get; }

    /// <summary>
    /// Runs <paramref name="inputIds"/> [batch, sequenceLength] (row-major) with <paramref name="attentionMask"/>
    /// [batch, PastLength + sequenceLength] and <paramref name="positionIds"/> [batch, sequenceLength]; the cache grows
    /// by sequenceLength. Returns fp32 logits [batch, sequenceLength, VocabSize] owned by the state, valid until the
    /// next call or disposal.
    /// </summary>
    ReadOnlySpan<float> Forward(ReadOnlySpan<long> inputIds, int sequenceLength, ReadOnlySpan<long> attentionMask, ReadOnlySpan<long> positionIds);

    /// <summary>
    /// A new state whose row i is a copy of this state's row <paramref name="rows"/>[i] (same PastLength); this state is
    /// unchanged. Lets a shared prefix run once and several continuations go on from it. The caller owns the result.
    /// </summary>
    IDecoderState SelectRows(ReadOnlySpan<int> rows);
}
