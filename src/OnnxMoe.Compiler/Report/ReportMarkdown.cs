using System.Globalization;
using System.Text;
using static System.FormattableString;

namespace OnnxMoe.Compiler.Report;

/// <summary>report.md: the settings, the paper's table (ratios against the baseline in brackets), each recipe's pipeline.</summary>
public static class ReportMarkdown
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static string Render(CompressionReport report)
    {
        var s = report.Settings;
        var sb = new StringBuilder();
        sb.Append(Inv, $"# Compression report: {s.Checkpoint}\n\n");
        sb.Append(Inv, $"Made by `onnxmoe report` ({s.Runtime}). One row per recipe; the first, `{report.Baseline.Recipe}`, is the uncompressed fp32 compile that every ratio (in brackets) is against.\n\n");
        sb.Append(ColumnsText(report)).Append("\n\n");

        var header = new List<string> { "recipe", "params", "MB" };
        if (s.PerplexityText is not null) header.Add("perplexity");
        header.AddRange(report.TaskNames.Select(t => $"{t} acc / acc_norm"));
        if (report.TaskNames.Count > 0) header.AddRange(["average acc / acc_norm", "retained acc / acc_norm"]);
        header.AddRange(["prefill tok/s", "decode tok/s", "peak MB"]);
        sb.Append("| ").Append(string.Join(" | ", header)).Append(" |\n");
        sb.Append('|').Append(string.Join("|", header.Select((_, i) => i == 0 ? " --- " : " ---: "))).Append("|\n");
        foreach (var r in report.Rows)
        {
            var cells = new List<string>
            {
                $"`{r.Recipe}`",
                Invariant($"{r.Parameters / 1e6:F2} M ({r.ParametersRatio:F2}x)"),
                Invariant($"{r.Bytes / 1e6:F2} ({r.BytesRatio:F2}x)"),
            };
            if (s.PerplexityText is not null) cells.Add(r.Perplexity is { } p ? Invariant($"{p:F3} ({r.PerplexityRatio:F3}x)") : "");
            cells.AddRange(r.Tasks.Select(t => $"{Score(t.Acc)} / {Score(t.AccNorm)}"));
            if (report.TaskNames.Count > 0)
            {
                cells.Add($"{Score(r.AverageAcc)} / {Score(r.AverageAccNorm)}");
                cells.Add($"{Percent(r.RetainedAcc)} / {Percent(r.RetainedAccNorm)}");
            }
            var v = r.Speed;
            cells.Add(Invariant($"{v.PrefillTokensPerSecond:F0} ({v.PrefillSpeedup:F2}x)"));
            cells.Add(Invariant($"{v.DecodeTokensPerSecond:F1} ({v.DecodeSpeedup:F2}x)"));
            cells.Add(Invariant($"{v.PeakMemoryBytes / 1e6:F1}{(v.PeakIsolated ? "" : "*")} ({(v.MemoryRatio is { } m ? m.ToString("F2", Inv) + "x" : "n/a")})"));
            sb.Append("| ").Append(string.Join(" | ", cells)).Append(" |\n");
        }
        sb.Append('\n').Append(NoiseText(report)).Append("\n\n");
        sb.Append("| recipe | pipeline | description |\n| --- | --- | --- |\n");
        foreach (var r in report.Rows)
            sb.Append(Inv, $"| `{r.Recipe}` | {(r.Pipeline.Length > 0 ? $"`{r.Pipeline}`" : "(none)")} | {r.Description.Replace("|", "\\|")} |\n");
        return sb.ToString();
    }

    /// <summary>What the columns mean and how they were measured (shared by the markdown and HTML pages).</summary>
    internal static string ColumnsText(CompressionReport report)
    {
        var s = report.Settings;
        var parts = new List<string> { "params: weight parameters (an int4 weight counts as its K x N values); MB: model.onnx + model.onnx.data, 10^6 bytes" };
        if (s.PerplexityText is not null)
            parts.Add(Invariant($"perplexity on {s.PerplexityText} (windows of {s.PerplexitySeqLen} tokens, stride {s.PerplexityStride}{(s.PerplexityMaxTokens is { } m ? $", first {m} tokens" : "")}; lower is better)"));
        if (s.Tasks.Count > 0)
            parts.Add(Invariant($"tasks scored as lm-eval 0.4's multiple-choice tasks, {(s.NumFewshot is { } n ? $"{n}-shot" : "each task's num_fewshot")}, {(s.Limit is { } l ? $"first {l} documents of each" : "all documents")}; ") +
                "average: unweighted mean over the tasks; retained: average / the baseline's average");
        parts.Add(Invariant($"speed at batch 1: prefill of a {s.BenchPromptLength}-token prompt, decode = 1 / median time per generated token ({s.BenchGenerateTokens} tokens), ") +
            Invariant($"{s.BenchRepeats} repeats per round, median of {s.BenchRounds} interleaved rounds; peak MB: the process's peak RSS while the model ran minus the RSS before loading it"));
        if (s.CalibrationSamples is not null || s.CalibrationSeqLen is not null || s.CalibrationText is not null)
            parts.Add($"calibration: {s.CalibrationSamples?.ToString(Inv) ?? "each recipe's"} samples of {s.CalibrationSeqLen?.ToString(Inv) ?? "each recipe's"} tokens from {s.CalibrationText ?? "each recipe's text"}");
        return string.Join(". ", parts.Select(p => char.ToUpperInvariant(p[0]) + p[1..])) + ".";
    }

    /// <summary>The spread of the decode ratios over the rounds: how noisy the machine was.</summary>
    internal static string NoiseText(CompressionReport report)
    {
        var spreads = report.Rows.Skip(1).Select(r => Invariant($"`{r.Recipe}` {r.Speed.DecodeSpeedupMin:F2}-{r.Speed.DecodeSpeedupMax:F2}x")).ToList();
        string text = spreads.Count == 0 ? "" : "Decode speedup, lowest to highest round: " + string.Join(", ", spreads) + ".";
        if (report.Rows.Any(r => !r.Speed.PeakIsolated)) text += " * peak not isolated: the kernel refused to reset the peak RSS, so it may include an earlier model.";
        return text.Trim();
    }

    internal static string Score(double? v) => v is { } x ? x.ToString("F3", Inv) : "-";
    internal static string Percent(double? v) => v is { } x ? (100 * x).ToString("F1", Inv) + "%" : "-";
}
