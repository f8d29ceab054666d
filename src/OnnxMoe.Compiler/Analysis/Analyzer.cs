using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Ir;
using OnnxMoe.Passes;
using OnnxMoe.Passes.Trimming;
using OnnxMoe.Structure;

namespace OnnxMoe.Compiler.Analysis;

/// <summary>
/// <c>onnxmoe analyze</c>: measures a lowered decoder's trimming scores once (one-shot, as the recipes use them)
/// and says, for each recipe, which blocks, MoE layers or experts its trimming step would remove.
/// </summary>
public static class Analyzer
{
    /// <summary>Scores <paramref name="model"/> (unchanged afterwards) and evaluates <paramref name="recipeNames"/>
    /// (built-in names or recipe files; default: every built-in recipe that trims, i.e. runs a <see cref="TrimmingPass"/>)
    /// against the scores.</summary>
    public static AnalysisReport Run(Model model, ICalibrationScores scores, PassRegistry registry, IEnumerable<string>? recipeNames = null,
        CancellationToken cancellationToken = default)
    {
        var structure = DecoderStructure.Read(model);
        var recipes = new List<(string Name, Recipe? Recipe, string? Error)>();
        foreach (var name in recipeNames ?? BuiltinRecipes.Names)
        {
            try
            {
                var recipe = RecipeLoader.Resolve(name, registry);
                if (recipeNames == null && !recipe.Pipeline.Steps.SelectMany(s => s.CreatePasses()).Any(p => p is TrimmingPass)) continue;
                recipes.Add((name, recipe, null));
            }
            catch (UserErrorException e)
            {
                recipes.Add((name, null, e.Message));
            }
        }
        // Consecutive block drop needs the similarity of runs of its length: measure them in the same pass.
        var runs = new SortedSet<int>();
        foreach (var (_, recipe, _) in recipes)
            foreach (var step in recipe?.Pipeline.Steps ?? [])
                if (step.Name == DropBlocksPass.Info.Name && step.Options.Get(DropBlocksPass.Mode) == DropBlocksPass.Consecutive && step.Options.TryGet(DropBlocksPass.N, out var n))
                {
                    int k = TrimmingSelection.Resolve(n, structure.NumLayers);
                    if (k > 0 && k < structure.NumLayers) runs.Add(k);
                }
        var measured = scores.Measure(model, runs.ToList(), cancellationToken);
        var selections = recipes.Select(r => r.Recipe == null
            ? new RecipeSelection(r.Name, "", [], r.Error)
            : Evaluate(r.Name, r.Recipe, structure, measured)).ToList();
        return AnalysisReport.Create(structure, measured, selections);
    }

    /// <summary>What each trimming step of <paramref name="recipe"/> removes from the unmodified model's scores.</summary>
    public static RecipeSelection Evaluate(string name, Recipe recipe, DecoderStructure structure, TrimmingScores scores)
    {
        var removals = new List<Removal>();
        string? error = null;
        foreach (var step in recipe.Pipeline.Steps)
        {
            try
            {
                var o = step.Options;
                switch (step.Name)
                {
                    case "drop-blocks":
                        {
                            var blocks = o.TryGet(DropBlocksPass.Blocks, out var listed) ? listed
                                : DropBlocksPass.Select(structure, o, scores, TrimmingSelection.Resolve(o.Get(DropBlocksPass.N), structure.NumLayers)).ToArray();
                            removals.AddRange(blocks.Select(b => new Removal(RemovalKind.Block, b, null)));
                            break;
                        }
                    case "drop-moe-layers":
                        {
                            int moeLayers = structure.Blocks.Count(b => b.Ffn is { Kind: FfnKind.Moe });
                            var layers = o.TryGet(DropMoeLayersPass.Layers, out var listed) ? listed
                                : DropMoeLayersPass.Select(structure, o, scores, TrimmingSelection.Resolve(o.Get(DropMoeLayersPass.N), moeLayers)).ToArray();
                            removals.AddRange(layers.Select(l => new Removal(RemovalKind.MoeLayer, l, null)));
                            break;
                        }
                    case "prune-experts":
                        {
                            if (o.TryGet(PruneExpertsPass.Experts, out var pairs)) removals.AddRange(pairs.Select(p => new Removal(RemovalKind.Expert, p.First, p.Second)));
                            else if (o.Get(PruneExpertsPass.Criterion) != PruneExpertsPass.Routing) error = "reconstruction-criterion selection is not previewed (it runs per subset at compile time)";
                            else
                                foreach (var (layer, ids) in PruneExpertsPass.Select(structure, o, scores))
                                    removals.AddRange(ids.Select(e => new Removal(RemovalKind.Expert, layer, e)));
                            break;
                        }
                }
            }
            catch (Exception e) when (e is UserErrorException or InvalidOperationException)
            {
                error = e.Message;
            }
        }
        return new RecipeSelection(name, recipe.Pipeline.ToString(), removals, error);
    }
}
