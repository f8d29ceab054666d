using System.Globalization;
using System.Net;
using System.Text;
using static System.FormattableString;

namespace OnnxMoe.Compiler.Report;

/// <summary>
/// report.html: one self-contained page (inline CSS, no scripts, nothing fetched) with the table and two inline SVG charts drawn
/// here: accuracy retained against decode speedup (one point per recipe), and acc per task (one bar per recipe). The markup is
/// well-formed XML (every element closed, attributes quoted and escaped), so XML tools can read it.
/// </summary>
public static class ReportHtml
{
    private static readonly string[] Palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
    /// <summary>The paper's bar: the combined recipe keeps over 92% of the average accuracy.</summary>
    private const double PaperRetainedBar = 0.92;

    public static string Render(CompressionReport report)
    {
        var s = report.Settings;
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
        sb.Append("<title>").Append(E($"onnxmoe report: {s.Checkpoint}")).Append("</title>\n");
        sb.Append("<style>\nbody{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}" +
                  "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}" +
                  "th{background:#f3f3f3}code{font-size:90%}svg{display:block;margin:1em 0}svg text{font-family:sans-serif;font-size:12px}\n</style>\n");
        sb.Append("</head>\n<body>\n");
        sb.Append("<h1>Compression report: <code>").Append(E(s.Checkpoint)).Append("</code></h1>\n");
        sb.Append("<p>").Append(E($"Made by onnxmoe report ({s.Runtime}). One row per recipe; the first, {report.Baseline.Recipe}, is the uncompressed fp32 compile that every ratio (in brackets) is against.")).Append("</p>\n");
        sb.Append("<p>").Append(E(ReportMarkdown.ColumnsText(report))).Append("</p>\n");
        AppendTable(sb, report);
        sb.Append("<p>").Append(E(ReportMarkdown.NoiseText(report))).Append("</p>\n");
        if (report.TaskNames.Count > 0)
        {
            sb.Append("<h2>Accuracy retained against decode speedup</h2>\n");
            AppendScatter(sb, report);
            sb.Append("<h2>Accuracy per task</h2>\n");
            AppendBars(sb, report);
        }
        else sb.Append("<p>No tasks were evaluated, so there are no accuracy charts (give --tasks).</p>\n");
        sb.Append("<h2>Pipelines</h2>\n<table>\n<tr><th>recipe</th><th>pipeline</th><th>description</th></tr>\n");
        foreach (var r in report.Rows)
            sb.Append("<tr><td><code>").Append(E(r.Recipe)).Append("</code></td><td style=\"text-align:left\"><code>").Append(E(r.Pipeline.Length > 0 ? r.Pipeline : "(none)"))
              .Append("</code></td><td style=\"text-align:left\">").Append(E(r.Description)).Append("</td></tr>\n");
        sb.Append("</table>\n</body>\n</html>\n");
        return sb.ToString();
    }

    private static void AppendTable(StringBuilder sb, CompressionReport report)
    {
        var s = report.Settings;
        sb.Append("<table>\n<tr><th>recipe</th><th>params</th><th>MB</th>");
        if (s.PerplexityText is not null) sb.Append("<th>perplexity</th>");
        foreach (var t in report.TaskNames) sb.Append("<th>").Append(E(t)).Append("<br/>acc / acc_norm</th>");
        if (report.TaskNames.Count > 0) sb.Append("<th>average<br/>acc / acc_norm</th><th>retained<br/>acc / acc_norm</th>");
        sb.Append("<th>prefill tok/s</th><th>decode tok/s</th><th>peak MB</th></tr>\n");
        foreach (var r in report.Rows)
        {
            sb.Append("<tr><td><code>").Append(E(r.Recipe)).Append("</code></td>");
            Cell(sb, Invariant($"{r.Parameters / 1e6:F2} M ({r.ParametersRatio:F2}x)"));
            Cell(sb, Invariant($"{r.Bytes / 1e6:F2} ({r.BytesRatio:F2}x)"));
            if (s.PerplexityText is not null) Cell(sb, r.Perplexity is { } p ? Invariant($"{p:F3} ({r.PerplexityRatio:F3}x)") : "");
            foreach (var t in r.Tasks) Cell(sb, $"{ReportMarkdown.Score(t.Acc)} / {ReportMarkdown.Score(t.AccNorm)}");
            if (report.TaskNames.Count > 0)
            {
                Cell(sb, $"{ReportMarkdown.Score(r.AverageAcc)} / {ReportMarkdown.Score(r.AverageAccNorm)}");
                Cell(sb, $"{ReportMarkdown.Percent(r.RetainedAcc)} / {ReportMarkdown.Percent(r.RetainedAccNorm)}");
            }
            var v = r.Speed;
            Cell(sb, Invariant($"{v.PrefillTokensPerSecond:F0} ({v.PrefillSpeedup:F2}x)"));
            Cell(sb, Invariant($"{v.DecodeTokensPerSecond:F1} ({v.DecodeSpeedup:F2}x)"));
            Cell(sb, Invariant($"{v.PeakMemoryBytes / 1e6:F1}{(v.PeakIsolated ? "" : "*")} ({(v.MemoryRatio is { } m ? m.ToString("F2", CultureInfo.InvariantCulture) + "x" : "n/a")})"));
            sb.Append("</tr>\n");
        }
        sb.Append("</table>\n");
    }

    private static void Cell(StringBuilder sb, string text) => sb.Append("<td>").Append(E(text)).Append("</td>");

    /// <summary>x: decode speedup, y: average acc retained (%); the paper's 92% bar dashed.</summary>
    private static void AppendScatter(StringBuilder sb, CompressionReport report)
    {
        const double W = 640, H = 420, L = 70, R = 150, T = 20, B = 50;
        var points = report.Rows.Select((r, i) => (r.Recipe, X: r.Speed.DecodeSpeedup, Y: 100 * (r.RetainedAcc ?? double.NaN), Color: Palette[i % Palette.Length]))
            .Where(p => double.IsFinite(p.Y)).ToList();
        var (x0, x1, xStep) = NiceRange(points.Select(p => p.X).Append(1.0));
        var (y0, y1, yStep) = NiceRange(points.Select(p => p.Y).Append(100 * PaperRetainedBar).Append(100.0));
        double Px(double x) => L + (x - x0) / (x1 - x0) * (W - L - R);
        double Py(double y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
        sb.Append(Invariant($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"accuracy retained against decode speedup\">\n"));
        Axes(sb, L, T, W - R, H - B);
        for (double x = x0; x <= x1 + xStep / 2; x += xStep)
            sb.Append(Invariant($"<line x1=\"{Px(x):F1}\" y1=\"{H - B}\" x2=\"{Px(x):F1}\" y2=\"{H - B + 5}\" stroke=\"#444\"/><text x=\"{Px(x):F1}\" y=\"{H - B + 18}\" text-anchor=\"middle\">{x:0.##}x</text>\n"));
        for (double y = y0; y <= y1 + yStep / 2; y += yStep)
            sb.Append(Invariant($"<line x1=\"{L - 5}\" y1=\"{Py(y):F1}\" x2=\"{L}\" y2=\"{Py(y):F1}\" stroke=\"#444\"/><text x=\"{L - 8}\" y=\"{Py(y) + 4:F1}\" text-anchor=\"end\">{y:0.#}%</text>\n"));
        sb.Append(Invariant($"<line x1=\"{L}\" y1=\"{Py(100 * PaperRetainedBar):F1}\" x2=\"{W - R}\" y2=\"{Py(100 * PaperRetainedBar):F1}\" stroke=\"#999\" stroke-dasharray=\"5,4\"/>"));
        sb.Append(Invariant($"<text x=\"{W - R + 4}\" y=\"{Py(100 * PaperRetainedBar) + 4:F1}\" fill=\"#777\">92% (paper)</text>\n"));
        sb.Append(Invariant($"<text x=\"{(L + W - R) / 2}\" y=\"{H - 10}\" text-anchor=\"middle\">decode speedup over {E(report.Baseline.Recipe)}</text>\n"));
        sb.Append(Invariant($"<text transform=\"translate(16,{(T + H - B) / 2}) rotate(-90)\" text-anchor=\"middle\">average acc retained</text>\n"));
        var placed = new List<(double X, double Y, double Width)>();
        foreach (var p in points)
        {
            sb.Append(Invariant($"<circle cx=\"{Px(p.X):F1}\" cy=\"{Py(p.Y):F1}\" r=\"5\" fill=\"{p.Color}\"><title>{E(p.Recipe)}: {p.X:F2}x decode, {p.Y:F1}% retained</title></circle>"));
            // Labels of nearby points would print over each other: move this one down until it is clear of those placed.
            double lx = Px(p.X) + 8, ly = Py(p.Y) - 6, width = 7 * p.Recipe.Length;
            while (placed.Any(o => Math.Abs(o.Y - ly) < 14 && lx < o.X + o.Width && o.X < lx + width)) ly += 14;
            placed.Add((lx, ly, width));
            sb.Append(Invariant($"<text x=\"{lx:F1}\" y=\"{ly:F1}\" fill=\"{p.Color}\">{E(p.Recipe)}</text>\n"));
        }
        sb.Append("</svg>\n");
    }

    /// <summary>Grouped bars: one group per task and one for the average, one bar per recipe (acc, 0 to 1).</summary>
    private static void AppendBars(StringBuilder sb, CompressionReport report)
    {
        const double H = 400, L = 110, T = 20, B = 110, Bar = 14, Gap = 24;
        var groups = report.TaskNames.Select((name, k) => (Name: name, Values: report.Rows.Select(r => r.Tasks[k].Acc).ToList()))
            .Append((Name: "average", Values: report.Rows.Select(r => r.AverageAcc).ToList())).ToList();
        int n = report.Rows.Count;
        double groupW = n * Bar + Gap, plotW = groups.Count * groupW, legendW = 170, W = L + plotW + legendW;
        double Py(double y) => H - B - y * (H - T - B);
        sb.Append(Invariant($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"accuracy per task\">\n"));
        Axes(sb, L, T, L + plotW, H - B);
        for (int i = 0; i <= 5; i++)
        {
            double y = i / 5.0;
            sb.Append(Invariant($"<line x1=\"{L - 5}\" y1=\"{Py(y):F1}\" x2=\"{L + plotW}\" y2=\"{Py(y):F1}\" stroke=\"{(i == 0 ? "#444" : "#e5e5e5")}\"/><text x=\"{L - 8}\" y=\"{Py(y) + 4:F1}\" text-anchor=\"end\">{y:0.0}</text>\n"));
        }
        for (int g = 0; g < groups.Count; g++)
        {
            double gx = L + g * groupW + Gap / 2;
            for (int i = 0; i < n; i++)
            {
                if (groups[g].Values[i] is not { } v) continue;
                sb.Append(Invariant($"<rect x=\"{gx + i * Bar:F1}\" y=\"{Py(v):F1}\" width=\"{Bar - 2}\" height=\"{Py(0) - Py(v):F1}\" fill=\"{Palette[i % Palette.Length]}\"><title>{E(report.Rows[i].Recipe)} on {E(groups[g].Name)}: acc {v:F3}</title></rect>"));
            }
            double tx = gx + n * Bar / 2, ty = H - B + 14;
            sb.Append(Invariant($"<text transform=\"translate({tx:F1},{ty}) rotate(-30)\" text-anchor=\"end\">{E(groups[g].Name)}</text>\n"));
        }
        sb.Append(Invariant($"<text transform=\"translate({L - 40},{(T + H - B) / 2}) rotate(-90)\" text-anchor=\"middle\">acc</text>\n"));
        for (int i = 0; i < n; i++)
        {
            double ly = T + 10 + i * 18;
            sb.Append(Invariant($"<rect x=\"{L + plotW + 16}\" y=\"{ly - 9}\" width=\"10\" height=\"10\" fill=\"{Palette[i % Palette.Length]}\"/><text x=\"{L + plotW + 32}\" y=\"{ly}\">{E(report.Rows[i].Recipe)}</text>\n"));
        }
        sb.Append("</svg>\n");
    }

    private static void Axes(StringBuilder sb, double left, double top, double right, double bottom) =>
        sb.Append(Invariant($"<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"#444\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{bottom}\" stroke=\"#444\"/>\n"));

    /// <summary>An axis range around the values on a 1-2-5 step, with at most about six ticks.</summary>
    internal static (double Low, double High, double Step) NiceRange(IEnumerable<double> values)
    {
        var v = values.Where(double.IsFinite).ToList();
        double lo = v.Min(), hi = v.Max();
        if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
        // A margin so that no point sits on the frame.
        (lo, hi) = (lo - 0.04 * (hi - lo), hi + 0.04 * (hi - lo));
        double raw = (hi - lo) / 5, magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = new[] { 1.0, 2.0, 5.0, 10.0 }.Select(m => m * magnitude).First(s => s >= raw);
        return (Math.Floor(lo / step) * step, Math.Ceiling(hi / step) * step, step);
    }

    private static string E(string text) => WebUtility.HtmlEncode(text);
}
