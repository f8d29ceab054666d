using OnnxMoe.Inference.Generation;

namespace OnnxMoe.Tests.Inference;

/// <summary>
/// A pure C# stand-in for a decoder session. Its "KV cache" is the list of unmasked (token, position) pairs; the logits
/// of a position are a hash of that history, so wrong masks, positions or cache reuse change the output.
/// It checks the GenAI I/O shape contract on every call.
/// </summary>
internal sealed class ToyDecoder(int vocabSize, Func<IReadOnlyList<(long Token, long Position)>, int, float[]>? logitsOf = null) : IDecoder
{
    public int VocabSize { get; } = vocabSize;
    public int ForwardCalls { get; private set; }
    public long ForwardTokens { get; private set; }

    private readonly Func<IReadOnlyList<(long Token, long Position)>, int, float[]> _logitsOf = logitsOf ?? HashLogits;

    public static float[] HashLogits(IReadOnlyList<(long Token, long Position)> history, int vocab)
    {
        long h = 17;
        foreach (var (token, position) in history) h = (h * 1_000_003 + token * 7919 + position * 104_729) % 1_000_000_007;
        var logits = new float[vocab];
        for (int v = 0; v < vocab; v++) logits[v] = (h * 31 + v * 17) % 97 / 10f;
        return logits;
    }

    public IDecoderState CreateState(int batchSize) => new State(this, batchSize);

    public void Dispose() { }

    private sealed class State(ToyDecoder owner, int batch) : IDecoderState
    {
        private readonly List<(long, long)>[] _history = Enumerable.Range(0, batch).Select(_ => new List<(long, long)>()).ToArray();
        private float[] _logits = [];

        public int BatchSize => batch;
        public int PastLength { get; private set; }

        public ReadOnlySpan<float> Forward(ReadOnlySpan<long> inputIds, int sequenceLength, ReadOnlySpan<long> attentionMask, ReadOnlySpan<long> positionIds)
        {
            int total = PastLength + sequenceLength;
            Assert.Equal(batch * sequenceLength, inputIds.Length);
            Assert.Equal(batch * total, attentionMask.Length);
            Assert.Equal(batch * sequenceLength, positionIds.Length);
            int vocab = owner.VocabSize;
            _logits = new float[batch * sequenceLength * vocab];
            for (int r = 0; r < batch; r++)
            {
                for (int j = 0; j < sequenceLength; j++)
                {
                    if (attentionMask[r * total + PastLength + j] == 1)
                    {
                        // A real token sits at the position equal to the number of real tokens before it.
                        Assert.Equal(_history[r].Count, positionIds[r * sequenceLength + j]);
                        _history[r].Add((inputIds[r * sequenceLength + j], positionIds[r * sequenceLength + j]));
                    }
                    owner._logitsOf(_history[r], vocab).CopyTo(_logits, (r * sequenceLength + j) * vocab);
                }
            }
            PastLength = total;
            owner.ForwardCalls++;
            owner.ForwardTokens += batch * sequenceLength;
            return _logits;
        }

        public IDecoderState SelectRows(ReadOnlySpan<int> rows)
        {
            var copy = new State(owner, rows.Length) { PastLength = PastLength };
            for (int i = 0; i < rows.Length; i++) copy._history[i].AddRange(_history[rows[i]]);
            return copy;
        }

        public void Dispose() { }
    }
}
