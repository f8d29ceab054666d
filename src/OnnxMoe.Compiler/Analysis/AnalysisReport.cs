using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxMoe.Passes.Trimming;
using OnnxMoe.Structure;

namespace OnnxMoe.Compiler.Analysis;

public enum RemovalKind
{
    Block,
    MoeLayer,
    Expert,
}

/// <summary>One thing a recipe would remove: a block, an MoE sub-layer, or expert <see cref="Expert"/> of layer <see cref="Layer"/>.</summary>
public sealed record Removal(RemovalKind Kind, int Layer, int? Expert)
{
    public override string ToString() => Kind switch
    {
        RemovalKind.Block => $"block {Layer.ToString(CultureInfo.InvariantCulture)}",
        RemovalKind.MoeLayer => $"moe layer {Layer.ToString(CultureInfo.InvariantCulture)}",
        _ => $"expert {Layer.ToString(CultureInfo.InvariantCulture)}:{Expert!.Value.ToString(CultureInfo.InvariantCulture)}",
    };
}

/// <summary>What recipe <see cref="Recipe"/> would remove (in the scored model), or why it cannot say.</summary>
public sealed record RecipeSelection(string Recipe, string Pipeline, IReadOnlyList<Removal> Removes, string? Error)
{
    /// <summary>"blocks 1, 2" / "moe layers 3" / "experts 1:0, 1:5" / "nothing" / "error: ...".</summary>
    public string Summary()
    {
        if (Error != null && Removes.Count == 0) return "error: " + Error;
        if (Removes.Count == 0) return "nothing";
        var parts = Removes.GroupBy(r => r.Kind).OrderBy(g => g.Key).Select(g => g.Key switch
        {
            RemovalKind.Block => "blocks " + string.Join(", ", g.Select(r => r.Layer)),
            RemovalKind.MoeLayer => "moe layers " + string.Join(", ", g.Select(r => r.Layer)),
            _ => $"{g.Count()} experts " + string.Join(", ", g.Select(r => $"{r.Layer}:{r.Expert}")),
        });
        return string.Join("; ", parts) + (Error != null ? " (error: " + Error + ")" : "");
    }
}

public sealed record BlockRow(int Layer, double Similarity);

public sealed record MoeLayerRow(int Layer, double Similarity, double SimilarityNoNorm);

/// <param name="Share">routing weight / tokens: the expert's average full-softmax weight per token.</param>
public sealed record ExpertRow(int Layer, int Expert, double RoutingWeight, double Share);

/// <summary>A plain table: header and rows of cell text (numbers formatted invariantly), for the CLI to render.</summary>
public sealed record Table(string Title, IReadOnlyList<string> Header, IReadOnlyList<IReadOnlyList<string>> Rows);

/// <summary>
/// Result of <see cref="Analyzer.Run"/>: per-block and per-MoE-layer similarities, per-expert routing scores,
/// and each recipe's selection. Output forms: <see cref="Tables"/>, <see cref="BarChart"/> (terminal),
/// <see cref="ToJson"/> and <see cref="ToSvg"/> (deterministic text: same scores, same bytes).
/// </summary>
public sealed class AnalysisReport
{
    public required string Family { get; init; }
    public required int NumLayers { get; init; }
    public required long Tokens { get; init; }
    public required IReadOnlyList<BlockRow> Blocks { get; init; }
    public required IReadOnlyList<MoeLayerRow> MoeLayers { get; init; }
    public required IReadOnlyList<ExpertRow> Experts { get; init; }
    public required IReadOnlyList<RecipeSelection> Recipes { get; init; }

    public static AnalysisReport Create(DecoderStructure s, TrimmingScores scores, IReadOnlyList<RecipeSelection> recipes)
    {
        var experts = new List<ExpertRow>();
        foreach (var b in s.Blocks.Where(b => b.Ffn is { Kind: FfnKind.Moe }))
        {
            var ids = b.Ffn!.Moe!.ExpertIds;
            var w = scores.ExpertRouting[b.Index];
            for (int c = 0; c < ids.Count; c++) experts.Add(new ExpertRow(b.Index, ids[c], w[c], scores.Tokens > 0 ? w[c] / scores.Tokens : 0));
        }
        return new AnalysisReport
        {
            Family = s.Family,
            NumLayers = s.NumLayers,
            Tokens = scores.Tokens,
            Blocks = s.Blocks.Select(b => new BlockRow(b.Index, scores.BlockSimilarity[b.Index])).ToList(),
            MoeLayers = s.Blocks.Where(b => b.Ffn is { Kind: FfnKind.Moe })
                .Select(b => new MoeLayerRow(b.Index, scores.MoeSimilarity[b.Index], scores.MoeSimilarityNoNorm[b.Index])).ToList(),
            Experts = experts,
            Recipes = recipes,
        };
    }

    private static string F(double d, int digits = 6) => d.ToString("F" + digits.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
    private static string I(long i) => i.ToString(CultureInfo.InvariantCulture);

    // ---- tables and terminal charts -------------------------------------------------------------

    /// <summary>Blocks, MoE layers, experts and recipes as tables.</summary>
    public IReadOnlyList<Table> Tables() =>
    [
        new("Blocks: cos(block input, block output)", ["layer", "similarity"], Blocks.Select(r => (IReadOnlyList<string>)[I(r.Layer), F(r.Similarity)]).ToList()),
        new("MoE layers: cos(h, h + MoE(Norm h)) and cos(Norm h, MoE(Norm h))", ["layer", "similarity", "similarity (no norm)"],
            MoeLayers.Select(r => (IReadOnlyList<string>)[I(r.Layer), F(r.Similarity), F(r.SimilarityNoNorm)]).ToList()),
        new("Experts: full-softmax routing weight", ["layer", "expert", "weight", "share"],
            Experts.Select(r => (IReadOnlyList<string>)[I(r.Layer), I(r.Expert), F(r.RoutingWeight, 3), F(r.Share)]).ToList()),
        new("Recipes: what each would remove", ["recipe", "removes"], Recipes.Select(r => (IReadOnlyList<string>)[r.Recipe, r.Summary()]).ToList()),
    ];

    /// <summary>Horizontal bar chart lines: label, bar of <paramref name="width"/> cells scaled between the minimum and maximum
    /// (so small differences between similar layers are visible), value. Kinds: blocks, layers, experts.</summary>
    public string BarChart(string kind, int width = 40)
    {
        var rows = Series(kind);
        if (rows.Count == 0) return "";
        double min = rows.Min(r => r.Value), max = rows.Max(r => r.Value);
        int labelWidth = rows.Max(r => r.Label.Length);
        var sb = new StringBuilder();
        foreach (var (label, value) in rows)
        {
            // At least one cell so the smallest bar is still seen; all full when every value is equal.
            int cells = max > min ? 1 + (int)Math.Round((value - min) / (max - min) * (width - 1)) : width;
            sb.Append(label.PadRight(labelWidth)).Append(" |").Append(new string('#', cells)).Append(new string(' ', width - cells)).Append("| ").Append(F(value)).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>(label, value) series behind charts: blocks (block similarity), layers (MoE similarity), experts (routing share).</summary>
    public IReadOnlyList<(string Label, double Value)> Series(string kind) => kind switch
    {
        "blocks" => Blocks.Select(r => ($"block {I(r.Layer)}", r.Similarity)).ToList(),
        "layers" => MoeLayers.Select(r => ($"layer {I(r.Layer)}", r.Similarity)).ToList(),
        "experts" => Experts.Select(r => ($"{I(r.Layer)}:{I(r.Expert)}", r.Share)).ToList(),
        _ => throw new ArgumentException($"unknown chart '{kind}' (blocks, layers, experts)"),
    };

    public static IReadOnlyList<string> ChartKinds { get; } = ["blocks", "layers", "experts"];

    // ---- JSON -----------------------------------------------------------------------------------

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    public string ToJson() => JsonSerializer.Serialize(new
    {
        family = Family,
        num_layers = NumLayers,
        tokens = Tokens,
        blocks = Blocks,
        moe_layers = MoeLayers,
        experts = Experts,
        recipes = Recipes.Select(r => new { recipe = r.Recipe, pipeline = r.Pipeline, removes = r.Removes, summary = r.Summary(), error = r.Error }),
    }, Json) + "\n";

    // ---- SVG ------------------------------------------------------------------------------------

    /// <summary>A standalone SVG bar chart (blocks, layers) or heat map (experts: layers x experts, darker = more routing weight).</summary>
    public string ToSvg(string kind)
    {
        if (kind == "experts") return ExpertHeatmap();
        var rows = Series(kind);
        string title = kind == "blocks" ? "Block similarity cos(input, output)" : "MoE layer similarity cos(h, h + MoE(Norm h))";
        const int barH = 18, gap = 4, left = 90, chartW = 400, top = 30;
        int height = top + rows.Count * (barH + gap) + 10;
        double min = rows.Count == 0 ? 0 : Math.Min(0, rows.Min(r => r.Value)), max = rows.Count == 0 ? 1 : Math.Max(rows.Max(r => r.Value), 1e-12);
        var sb = Header(left + chartW + 90, height, title);
        for (int i = 0; i < rows.Count; i++)
        {
            var (label, value) = rows[i];
            int y = top + i * (barH + gap);
            double w = (value - min) / (max - min) * chartW;
            sb.Append($"<text x=\"{left - 6}\" y=\"{y + 13}\" text-anchor=\"end\">{Escape(label)}</text>\n");
            sb.Append($"<rect x=\"{left}\" y=\"{y}\" width=\"{F(w, 1)}\" height=\"{barH}\" fill=\"#4477aa\"/>\n");
            sb.Append($"<text x=\"{F(left + w + 4, 1)}\" y=\"{y + 13}\">{F(value, 4)}</text>\n");
        }
        return sb.Append("</svg>\n").ToString();
    }

    private string ExpertHeatmap()
    {
        var layers = Experts.Select(e => e.Layer).Distinct().Order().ToList();
        var ids = Experts.Select(e => e.Expert).Distinct().Order().ToList();
        const int cell = 18, left = 70, top = 44;
        double max = Experts.Count == 0 ? 1 : Math.Max(Experts.Max(e => e.Share), 1e-12);
        var sb = Header(left + ids.Count * cell + 20, top + layers.Count * cell + 10, "Expert routing share (darker = more weight)");
        for (int j = 0; j < ids.Count; j++)
            sb.Append($"<text x=\"{left + j * cell + cell / 2}\" y=\"{top - 6}\" text-anchor=\"middle\">{I(ids[j])}</text>\n");
        for (int i = 0; i < layers.Count; i++)
        {
            sb.Append($"<text x=\"{left - 6}\" y=\"{top + i * cell + 13}\" text-anchor=\"end\">layer {I(layers[i])}</text>\n");
            foreach (var e in Experts.Where(e => e.Layer == layers[i]))
            {
                int shade = (int)Math.Round(255 - 200 * (e.Share / max));
                sb.Append($"<rect x=\"{left + ids.IndexOf(e.Expert) * cell}\" y=\"{top + i * cell}\" width=\"{cell - 1}\" height=\"{cell - 1}\" " +
                          $"fill=\"rgb({I(shade)},{I(shade)},255)\"><title>{I(e.Layer)}:{I(e.Expert)} {F(e.Share, 4)}</title></rect>\n");
            }
        }
        return sb.Append("</svg>\n").ToString();
    }

    private static StringBuilder Header(int width, int height, string title) => new StringBuilder()
        .Append($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"monospace\" font-size=\"11\">\n")
        .Append($"<text x=\"8\" y=\"16\" font-size=\"13\">{Escape(title)}</text>\n");

    private static string Escape(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&quot;");
}
