using System.Numerics.Tensors;

namespace OnnxMoe.Inference.Generation;

/// <summary>
/// Picks the next token from one logits row: greedy (argmax, lowest id on ties) when temperature &lt;= 0, otherwise
/// temperature, then top-k, then top-p (nucleus), then a draw from a seeded RNG, so the same seed gives the same text.
/// </summary>
public sealed class TokenSampler
{
    private readonly float _temperature;
    private readonly int _topK;
    private readonly float _topP;
    private readonly Random _random;
    private int[] _order = [];
    private double[] _probabilities = [];

    public TokenSampler(float temperature = 0f, int topK = 0, float topP = 1f, int seed = 0)
    {
        if (float.IsNaN(temperature)) throw new ArgumentException("temperature must be a number", nameof(temperature));
        if (topK < 0) throw new ArgumentException($"top-k must be >= 0 (0 = off), got {topK}", nameof(topK));
        if (!(topP > 0f && topP <= 1f)) throw new ArgumentException($"top-p must be in (0, 1], got {topP}", nameof(topP));
        _temperature = temperature;
        _topK = topK;
        _topP = topP;
        _random = new Random(seed);
    }

    public bool IsGreedy => _temperature <= 0f || _topK == 1;

    public int Sample(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty) throw new ArgumentException("empty logits row", nameof(logits));
        if (IsGreedy) return TensorPrimitives.IndexOfMax(logits);

        int vocab = logits.Length;
        if (_order.Length != vocab)
        {
            _order = new int[vocab];
            _probabilities = new double[vocab];
        }
        for (int i = 0; i < vocab; i++) _order[i] = i;
        var row = logits.ToArray();
        // Sort ids by logit, descending; ties by id so the order is deterministic.
        Array.Sort(_order, (a, b) => row[b].CompareTo(row[a]) is var c && c != 0 ? c : a.CompareTo(b));

        int kept = _topK > 0 ? Math.Min(_topK, vocab) : vocab;
        double max = row[_order[0]] / _temperature, sum = 0;
        for (int i = 0; i < kept; i++)
        {
            var p = Math.Exp(row[_order[i]] / _temperature - max);
            _probabilities[i] = p;
            sum += p;
        }
        if (_topP < 1f)
        {
            double cumulative = 0;
            int nucleus = kept;
            for (int i = 0; i < kept; i++)
            {
                cumulative += _probabilities[i] / sum;
                if (cumulative >= _topP)
                {
                    nucleus = i + 1;
                    break;
                }
            }
            kept = nucleus;
            sum = 0;
            for (int i = 0; i < kept; i++) sum += _probabilities[i];
        }

        double u = _random.NextDouble() * sum;
        for (int i = 0; i < kept; i++)
        {
            u -= _probabilities[i];
            if (u < 0) return _order[i];
        }
        return _order[kept - 1];
    }
}
