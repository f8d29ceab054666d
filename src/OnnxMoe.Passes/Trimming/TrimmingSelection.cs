using System.Globalization;

namespace OnnxMoe.Passes.Trimming;

/// <summary>
/// The selection rules of Expert Trimming, as pure functions of scores (so the analyzer can say what a
/// recipe would remove without running it). Ties break towards the lower layer / block / expert id, so
/// the same scores always give the same selection.
/// </summary>
public static class TrimmingSelection
{
    /// <summary>How many of <paramref name="total"/> candidates a count option means: absolute counts as given,
    /// a positive share at least 1 (12.5% of a 4-layer model drops one layer, not none).</summary>
    public static int Resolve(PassCount count, int total)
    {
        int n = count.Resolve(total);
        return count.IsPercent && count.Amount > 0 && total > 0 ? Math.Max(1, n) : n;
    }

    /// <summary>The <paramref name="n"/> keys with the highest similarity (most redundant first).</summary>
    public static IReadOnlyList<int> MostSimilar(IReadOnlyDictionary<int, double> similarity, IEnumerable<int> candidates, int n) =>
        candidates.Select(k => (Key: k, Score: similarity.TryGetValue(k, out var s) ? s : throw MissingScore(k)))
            .OrderByDescending(t => t.Score).ThenBy(t => t.Key)
            .Take(n).Select(t => t.Key).Order().ToList();

    /// <summary>Start position (in current block order) of the run of <paramref name="n"/> adjacent blocks whose first input and
    /// last output are most similar.</summary>
    public static int BestConsecutiveRun(IReadOnlyList<double> runSimilarity)
    {
        if (runSimilarity.Count == 0) throw new InvalidOperationException("no consecutive runs to choose from");
        int best = 0;
        for (int s = 1; s < runSimilarity.Count; s++) if (runSimilarity[s] > runSimilarity[best]) best = s;
        return best;
    }

    /// <summary>Layer-wise Expert Drop: in each layer, the experts (original ids) outside the highest routing scores.</summary>
    /// <param name="layers">per layer: its expert ids and routing scores, aligned.</param>
    /// <param name="keepOf">experts to keep in a layer (layer index, its expert count).</param>
    public static SortedDictionary<int, List<int>> LayerwiseDrop(IReadOnlyDictionary<int, (IReadOnlyList<int> Ids, double[] Scores)> layers, Func<int, int, int> keepOf)
    {
        var result = new SortedDictionary<int, List<int>>();
        foreach (var (layer, (ids, scores)) in layers.OrderBy(kv => kv.Key))
        {
            var drop = Enumerable.Range(0, ids.Count).OrderByDescending(c => scores[c]).ThenBy(c => ids[c]).Skip(keepOf(layer, ids.Count)).Select(c => ids[c]).Order().ToList();
            if (drop.Count > 0) result[layer] = drop;
        }
        return result;
    }

    /// <summary>Global Expert Drop: the <paramref name="drop"/> lowest routing scores across all layers.</summary>
    public static SortedDictionary<int, List<int>> GlobalDrop(IReadOnlyDictionary<int, (IReadOnlyList<int> Ids, double[] Scores)> layers, int drop)
    {
        var all = layers.SelectMany(kv => kv.Value.Ids.Select((id, c) => (Layer: kv.Key, Id: id, Score: kv.Value.Scores[c])))
            .OrderBy(t => t.Score).ThenBy(t => t.Layer).ThenBy(t => t.Id).Take(drop);
        var result = new SortedDictionary<int, List<int>>();
        foreach (var t in all)
        {
            if (!result.TryGetValue(t.Layer, out var list)) result[t.Layer] = list = new List<int>();
            list.Add(t.Id);
        }
        foreach (var list in result.Values) list.Sort();
        return result;
    }

    /// <summary>round((mean experts per layer - keep) x layers), with keep a count or a share of the mean.</summary>
    public static int GlobalDropCount(IReadOnlyCollection<int> expertsPerLayer, PassCount keep)
    {
        double mean = expertsPerLayer.Average();
        double kept = keep.IsPercent ? mean * keep.Amount / 100.0 : keep.Amount;
        return (int)Math.Max(0, Math.Round((mean - kept) * expertsPerLayer.Count, MidpointRounding.AwayFromZero));
    }

    private static InvalidOperationException MissingScore(int key) =>
        new($"no calibration score for layer {key.ToString(CultureInfo.InvariantCulture)}");
}
