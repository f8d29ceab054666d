using OnnxMoe.Ir;
using OnnxMoe.Structure;

namespace OnnxMoe.Passes.Trimming;

/// <summary>
/// Block Drop: removes whole decoder blocks (attention + FFN) with their KV-cache inputs and outputs, then
/// renumbers the remaining past/present names contiguously so the model stays an ORT GenAI decoder whose
/// num_hidden_layers is <c>DecoderStructure.NumLayers</c>. Explicit <c>blocks=3,7</c> (layer indices as in
/// node names) or <c>n=4</c> / <c>n=25%</c> chosen by cos(block input, block output), either the n most
/// similar blocks (<c>mode=discrete</c>) or the most similar run of n adjacent blocks (<c>mode=consecutive</c>).
/// </summary>
public sealed class DropBlocksPass : TrimmingPass
{
    public const string Discrete = "discrete";
    public const string Consecutive = "consecutive";

    public static readonly PassOption<int[]> Blocks = PassOption.IntList("blocks", "layer indices of the blocks to remove, e.g. 3,7");
    public static readonly PassOption<PassCount> N = PassOption.Count("n", null,
        "how many blocks to remove, chosen by cos(block input, block output): 4 or 25% of the blocks");
    public static readonly PassOption<string> Mode = PassOption.String("mode", Discrete,
        "discrete: the n most similar blocks; consecutive: the most similar run of n adjacent blocks", Discrete, Consecutive);

    public static readonly PassInfo Info = new("drop-blocks",
        "Removes whole decoder blocks and their KV cache (explicit, or the most redundant by calibration).",
        Blocks, N, Mode, Selection);

    public DropBlocksPass(PassOptions options) : base(Info, options)
    {
    }

    protected override PassResult Trim(Model model, PassContext context)
    {
        var counters = new CounterSet();
        var surgery = new DecoderSurgery(model, Name, counters);
        var s = surgery.Structure;
        var (list, count) = ListOrCount(Blocks, N);
        bool consecutive = Options.Get(Mode) == Consecutive;
        List<int> chosen;
        if (list != null)
        {
            if (list.Distinct().Count() != list.Length) throw Error($"blocks={Join(list)} lists a block twice");
            foreach (var i in list) surgery.Block(i);
            chosen = list.Order().ToList();
            if (consecutive && chosen.Count > 0)
            {
                var positions = chosen.Select(i => s.Blocks.FindIndex(b => b.Index == i)).ToList();
                if (positions[^1] - positions[0] != positions.Count - 1) throw Error($"mode=consecutive needs adjacent blocks, got {Join(chosen)}");
            }
        }
        else
        {
            CheckCountWithin("n", count!.Value, s.NumLayers, "decoder blocks");
            int n = TrimmingSelection.Resolve(count!.Value, s.NumLayers);
            CheckNotAll(s, n);
            if (n == 0) return PassResult.Unchanged;
            var scorer = Scorer(context);
            if (IsIterative)
            {
                if (consecutive) throw Error("selection=iterative drops one block at a time: use it with mode=discrete");
                for (int k = 0; k < n; k++)
                {
                    var scores = scorer.Measure(model, [], context.CancellationToken);
                    var pick = TrimmingSelection.MostSimilar(scores.BlockSimilarity, s.Blocks.Select(b => b.Index), 1)[0];
                    context.Info($"{Name}: iteration {k + 1}: dropping block {pick} (cos {Format(scores.BlockSimilarity[pick])})");
                    surgery.RemoveBlock(surgery.Block(pick));
                    surgery.RenumberKvCache();
                    surgery.Commit();
                }
                return Done(counters);
            }
            chosen = Select(s, Options, scorer.Measure(model, consecutive ? [n] : [], context.CancellationToken), n);
        }
        CheckNotAll(s, chosen.Count);
        if (chosen.Count == 0) return PassResult.Unchanged;
        context.Info($"{Name}: dropping blocks {Join(chosen)}");
        foreach (var i in chosen) surgery.RemoveBlock(surgery.Block(i));
        surgery.RenumberKvCache();
        surgery.Commit();
        return Done(counters);
    }

    /// <summary>One-shot choice of <paramref name="n"/> blocks (layer indices, ascending) from scores of the model as <paramref name="structure"/> describes it.</summary>
    public static List<int> Select(DecoderStructure structure, PassOptions options, TrimmingScores scores, int n)
    {
        if (n == 0) return [];
        if (options.Get(Mode) == Consecutive)
        {
            if (!scores.ConsecutiveSimilarity.TryGetValue(n, out var runs))
                throw new InvalidOperationException($"scores lack consecutive-run similarities for runs of {n}");
            int start = TrimmingSelection.BestConsecutiveRun(runs);
            return structure.Blocks.Skip(start).Take(n).Select(b => b.Index).ToList();
        }
        return TrimmingSelection.MostSimilar(scores.BlockSimilarity, structure.Blocks.Select(b => b.Index), n).ToList();
    }

    private void CheckNotAll(DecoderStructure s, int n)
    {
        if (n >= s.NumLayers)
            throw Error($"dropping {n} of the model's {s.NumLayers} blocks would leave no decoder block; drop at most {s.NumLayers - 1}");
    }
}
