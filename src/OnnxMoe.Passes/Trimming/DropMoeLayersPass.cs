using OnnxMoe.Ir;
using OnnxMoe.Structure;

namespace OnnxMoe.Passes.Trimming;

/// <summary>
/// Layer Drop: removes MoE sub-layers with their post-attention norm; the residual stream passes through
/// and attention (with its KV cache) stays. Explicit <c>layers=3,7</c> or <c>n=4</c> / <c>n=25%</c> of the MoE
/// layers chosen by cos(h, h + MoE(Norm(h))) (<c>norm=false</c>: cos(Norm(h), MoE(Norm(h)))). Dense MLP layers
/// are never candidates.
/// </summary>
public sealed class DropMoeLayersPass : TrimmingPass
{
    public static readonly PassOption<int[]> Layers = PassOption.IntList("layers", "layer indices of the MoE sub-layers to remove, e.g. 3,7");
    public static readonly PassOption<PassCount> N = PassOption.Count("n", null,
        "how many MoE sub-layers to remove, chosen by calibration: 4 or 25% of the MoE layers");
    public static readonly PassOption<bool> Norm = PassOption.Bool("norm", true, "score cos(h, h + MoE(Norm(h))); false: cos(Norm(h), MoE(Norm(h)))");

    public static readonly PassInfo Info = new("drop-moe-layers",
        "Removes MoE sub-layers and their post-attention norm (explicit, or the most redundant by calibration).",
        Layers, N, Norm, Selection);

    public DropMoeLayersPass(PassOptions options) : base(Info, options)
    {
    }

    protected override PassResult Trim(Model model, PassContext context)
    {
        var counters = new CounterSet();
        var surgery = new DecoderSurgery(model, Name, counters);
        var (list, count) = ListOrCount(Layers, N);
        List<int> chosen;
        if (list != null)
        {
            if (list.Distinct().Count() != list.Length) throw Error($"layers={Join(list)} lists a layer twice");
            foreach (var i in list) CheckMoeLayer(surgery, i);
            chosen = list.Order().ToList();
        }
        else
        {
            CheckCountWithin("n", count!.Value, surgery.MoeBlocks.Count(), "MoE layers");
            int n = TrimmingSelection.Resolve(count!.Value, surgery.MoeBlocks.Count());
            if (n == 0) return PassResult.Unchanged;
            var scorer = Scorer(context);
            if (IsIterative)
            {
                for (int k = 0; k < n; k++)
                {
                    var scores = scorer.Measure(model, [], context.CancellationToken);
                    var pick = Select(surgery.Structure, Options, scores, 1)[0];
                    context.Info($"{Name}: iteration {k + 1}: dropping the MoE sub-layer of layer {pick}");
                    surgery.RemoveMoeLayer(surgery.Block(pick));
                    surgery.Commit();
                }
                return Done(counters);
            }
            chosen = Select(surgery.Structure, Options, scorer.Measure(model, [], context.CancellationToken), n);
        }
        if (chosen.Count == 0) return PassResult.Unchanged;
        context.Info($"{Name}: dropping the MoE sub-layers of layers {Join(chosen)}");
        foreach (var i in chosen) surgery.RemoveMoeLayer(surgery.Block(i));
        surgery.Commit();
        return Done(counters);
    }

    /// <summary>One-shot choice of <paramref name="n"/> MoE layers (layer indices, ascending).</summary>
    public static List<int> Select(DecoderStructure structure, PassOptions options, TrimmingScores scores, int n)
    {
        var similarity = options.Get(Norm) ? scores.MoeSimilarity : scores.MoeSimilarityNoNorm;
        var candidates = structure.Blocks.Where(b => b.Ffn is { Kind: FfnKind.Moe }).Select(b => b.Index);
        return TrimmingSelection.MostSimilar(similarity, candidates, n).ToList();
    }

    private void CheckMoeLayer(DecoderSurgery surgery, int index)
    {
        var b = surgery.Block(index);
        var moeLayers = DecoderSurgery.DescribeIndices(surgery.MoeBlocks.Select(x => x.Index));
        if (b.Ffn == null) throw Error($"layer {index} has no MoE sub-layer left (already dropped); MoE layers: {moeLayers}");
        if (b.Ffn.Kind != FfnKind.Moe) throw Error($"layer {index} is a dense MLP layer, not an MoE layer; MoE layers: {moeLayers}");
    }
}
