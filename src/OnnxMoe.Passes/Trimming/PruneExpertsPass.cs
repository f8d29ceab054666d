using OnnxMoe.Ir;
using OnnxMoe.Structure;

namespace OnnxMoe.Passes.Trimming;

/// <summary>
/// Expert Drop: removes routed experts with their router columns. <c>keep=6</c> (or <c>keep=75%</c>) with
/// <c>mode=layerwise</c> keeps that many in every MoE layer; <c>mode=global</c> drops
/// round((mean experts per layer - keep) x MoE layers) lowest-scored experts across layers, so per-layer counts vary.
/// Scores: <c>criterion=routing</c> (full-softmax routing weight summed over calibration tokens, the paper) or
/// <c>criterion=reconstruction</c> (per layer, the kept subset whose MoE output on calibration tokens is closest
/// to the original: all subsets when there are at most <c>max-subsets</c>, else greedy removal). Explicit
/// <c>experts=1:0,2:3</c> (layer:expert, original ids) also works. top-k becomes min(k, remaining); shared
/// experts are never removed; expert ids keep their original numbering.
/// </summary>
public sealed class PruneExpertsPass : TrimmingPass
{
    public const string Layerwise = "layerwise";
    public const string Global = "global";
    public const string Routing = "routing";
    public const string Reconstruction = "reconstruction";

    public static readonly PassOption<PassCount> Keep = PassOption.Count("keep", null, "routed experts to keep per layer: 6 or 75% (global: on average)");
    public static readonly PassOption<string> Mode = PassOption.String("mode", Layerwise,
        "layerwise: keep the same number in every layer; global: drop the lowest scores across layers", Layerwise, Global);
    public static readonly PassOption<IntPair[]> Experts = PassOption.PairList("experts",
        "explicit layer:expert pairs to remove (original expert ids), e.g. 1:0,2:3");
    public static readonly PassOption<string> Criterion = PassOption.String("criterion", Routing,
        "routing: accumulated routing weight; reconstruction: MoE output error of the kept subset (layerwise only)", Routing, Reconstruction);
    public static readonly PassOption<int> MaxSubsets = PassOption.Int("max-subsets", 5000,
        "reconstruction: enumerate every kept subset of a layer when there are at most this many, else choose greedily");

    public static readonly PassInfo Info = new("prune-experts",
        "Removes routed experts and their router columns (explicit, or the least used by calibration).",
        Keep, Mode, Experts, Criterion, Selection, MaxSubsets);

    public PruneExpertsPass(PassOptions options) : base(Info, options)
    {
    }

    private bool IsGlobal => Options.Get(Mode) == Global;

    protected override PassResult Trim(Model model, PassContext context)
    {
        var counters = new CounterSet();
        var surgery = new DecoderSurgery(model, Name, counters);
        Fusion.FusePass.RequireStandardForm(surgery.Structure, Name);
        var (pairs, keep) = ListOrCount(Experts, Keep);
        if (pairs != null)
        {
            Apply(surgery, context, ValidatePairs(surgery, pairs));
            return Done(counters);
        }
        var k = keep!.Value;
        if (!k.IsPercent && k.Amount < 1 || k.IsPercent && k.Amount <= 0) throw Error($"keep={k} would leave layers without experts; keep at least 1");
        if (!surgery.MoeBlocks.Any()) return PassResult.Unchanged;
        var counts = surgery.MoeBlocks.Select(b => b.Ffn!.Moe!.ExpertIds.Count).ToList();
        if (!k.IsPercent && IsGlobal && k.Amount > counts.Average())
            throw Error($"keep={k} but the model's MoE layers have {counts.Average().ToString("0.##", System.Globalization.CultureInfo.InvariantCulture)} routed experts on average; mode=global keeps fewer than that");
        if (!k.IsPercent && k.Amount > counts.Max())
            throw Error($"keep={k} but the model's MoE layers have at most {counts.Max()} routed experts");
        bool reconstruction = Options.Get(Criterion) == Reconstruction;
        if (reconstruction && IsGlobal) throw Error("criterion=reconstruction chooses the kept experts per layer: use it with mode=layerwise");
        var scorer = Scorer(context);
        if (reconstruction)
        {
            Apply(surgery, context, ReconstructionSelect(surgery, model, scorer, k, context));
            return Done(counters);
        }
        if (!IsIterative)
        {
            var scores = scorer.Measure(model, [], context.CancellationToken);
            Apply(surgery, context, Select(surgery.Structure, Options, scores));
            return Done(counters);
        }
        // Iterative: one expert per layer (layerwise) or one expert overall (global) per round, re-scoring in between.
        int globalLeft = IsGlobal ? TrimmingSelection.GlobalDropCount(surgery.MoeBlocks.Select(b => b.Ffn!.Moe!.ExpertIds.Count).ToList(), k) : 0;
        var target = surgery.MoeBlocks.ToDictionary(b => b.Index, b => KeepOf(k, b.Ffn!.Moe!.ExpertIds.Count));
        for (int round = 1; ; round++)
        {
            if (IsGlobal && globalLeft == 0) break;
            var layers = RoutingLayers(surgery.Structure, scorer.Measure(model, [], context.CancellationToken));
            SortedDictionary<int, List<int>> drop;
            if (IsGlobal)
            {
                drop = TrimmingSelection.GlobalDrop(layers, 1);
                globalLeft--;
            }
            else
            {
                drop = TrimmingSelection.LayerwiseDrop(layers, (layer, count) => count > target[layer] ? count - 1 : count);
                if (drop.Count == 0) break;
            }
            context.Info($"{Name}: round {round}");
            Apply(surgery, context, drop);
        }
        return Done(counters);
    }

    private static int KeepOf(PassCount keep, int count) => Math.Max(1, keep.Resolve(count));

    /// <summary>One-shot routing-score choice: removed experts (original ids) per layer index.</summary>
    public static SortedDictionary<int, List<int>> Select(DecoderStructure structure, PassOptions options, TrimmingScores scores)
    {
        var keep = options.Get(Keep);
        var layers = RoutingLayers(structure, scores);
        if (options.Get(Mode) == Global)
            return TrimmingSelection.GlobalDrop(layers, TrimmingSelection.GlobalDropCount(layers.Values.Select(l => l.Ids.Count).ToList(), keep));
        return TrimmingSelection.LayerwiseDrop(layers, (_, count) => KeepOf(keep, count));
    }

    private static Dictionary<int, (IReadOnlyList<int> Ids, double[] Scores)> RoutingLayers(DecoderStructure s, TrimmingScores scores)
    {
        var layers = new Dictionary<int, (IReadOnlyList<int>, double[])>();
        foreach (var b in s.Blocks.Where(b => b.Ffn is { Kind: FfnKind.Moe }))
        {
            var ids = b.Ffn!.Moe!.ExpertIds;
            if (!scores.ExpertRouting.TryGetValue(b.Index, out var r) || r.Length != ids.Count)
                throw new InvalidOperationException($"routing scores of layer {b.Index} do not match its {ids.Count} experts");
            layers[b.Index] = (ids, r);
        }
        return layers;
    }

    private SortedDictionary<int, List<int>> ReconstructionSelect(DecoderSurgery surgery, Model model, ICalibrationScores scorer, PassCount keep, PassContext context)
    {
        var result = new SortedDictionary<int, List<int>>();
        int maxSubsets = Options.Get(MaxSubsets);
        foreach (var b in surgery.MoeBlocks.ToList())
        {
            var ids = b.Ffn!.Moe!.ExpertIds;
            int n = KeepOf(keep, ids.Count);
            if (n >= ids.Count) continue;
            List<int> kept;
            if (Binomial(ids.Count, n) <= maxSubsets)
            {
                var subsets = Combinations(ids, n).ToList();
                var errors = scorer.ReconstructionErrors(model, b.Index, subsets, context.CancellationToken);
                kept = subsets[ArgMin(errors)].ToList();
                context.Info($"{Name}: layer {b.Index}: best of {subsets.Count} subsets keeps {Join(kept)} (error {Format(errors.Min())})");
            }
            else
            {
                kept = ids.ToList();
                while (kept.Count > n)
                {
                    var candidates = kept.Select(e => (IReadOnlyList<int>)kept.Where(x => x != e).ToList()).ToList();
                    var errors = scorer.ReconstructionErrors(model, b.Index, candidates, context.CancellationToken);
                    kept = candidates[ArgMin(errors)].ToList();
                }
                context.Info($"{Name}: layer {b.Index}: greedy removal keeps {Join(kept)}");
            }
            result[b.Index] = ids.Where(e => !kept.Contains(e)).ToList();
        }
        return result;
    }

    private static int ArgMin(IReadOnlyList<double> xs)
    {
        int best = 0;
        for (int i = 1; i < xs.Count; i++) if (xs[i] < xs[best]) best = i;
        return best;
    }

    private static double Binomial(int n, int k)
    {
        double r = 1;
        for (int i = 1; i <= k; i++) r = r * (n - k + i) / i;
        return r;
    }

    /// <summary>All k-element subsets of <paramref name="items"/> in lexicographic order of positions.</summary>
    private static IEnumerable<IReadOnlyList<int>> Combinations(IReadOnlyList<int> items, int k)
    {
        var idx = Enumerable.Range(0, k).ToArray();
        while (true)
        {
            yield return idx.Select(i => items[i]).ToArray();
            int j = k - 1;
            while (j >= 0 && idx[j] == items.Count - k + j) j--;
            if (j < 0) yield break;
            idx[j]++;
            for (int m = j + 1; m < k; m++) idx[m] = idx[m - 1] + 1;
        }
    }

    private SortedDictionary<int, List<int>> ValidatePairs(DecoderSurgery surgery, IntPair[] pairs)
    {
        var result = new SortedDictionary<int, List<int>>();
        var moeLayers = DecoderSurgery.DescribeIndices(surgery.MoeBlocks.Select(b => b.Index));
        foreach (var p in pairs)
        {
            var b = surgery.Block(p.First);
            if (b.Ffn is not { Kind: FfnKind.Moe, Moe: { } moe })
                throw Error($"layer {p.First} is not an MoE layer (it is {(b.Ffn == null ? "a dropped MoE sub-layer" : "a dense MLP layer")}); MoE layers: {moeLayers}");
            if (!moe.ExpertIds.Contains(p.Second))
                throw Error($"layer {p.First} has no routed expert {p.Second}; its experts: {DecoderSurgery.DescribeIndices(moe.ExpertIds)}");
            if (!result.TryGetValue(p.First, out var list)) result[p.First] = list = new List<int>();
            if (list.Contains(p.Second)) throw Error($"expert {p} is listed twice");
            list.Add(p.Second);
        }
        foreach (var list in result.Values) list.Sort();
        return result;
    }

    private void Apply(DecoderSurgery surgery, PassContext context, SortedDictionary<int, List<int>> drop)
    {
        foreach (var (layer, ids) in drop)
        {
            var b = surgery.Block(layer);
            if (ids.Count >= b.Ffn!.Moe!.ExpertIds.Count)
                throw Error($"the selection would remove every routed expert of layer {layer} ({Join(ids)}); keep more experts");
        }
        foreach (var (layer, ids) in drop)
        {
            context.Info($"{Name}: layer {layer}: removing experts {Join(ids)}");
            surgery.RemoveExperts(surgery.Block(layer), ids);
        }
        surgery.Commit();
    }
}
