using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxMoe.Compiler.Bench;
using OnnxMoe.Inference.Evaluation.Tasks;

namespace OnnxMoe.Compiler.Report;

/// <summary>How the report was made (everything that decides its deterministic numbers, plus the runtime).</summary>
public sealed record ReportSettings(
    string Checkpoint,
    IReadOnlyList<string> Tasks,
    int? Limit,
    int? NumFewshot,
    string? PerplexityText,
    int PerplexitySeqLen,
    int PerplexityStride,
    int? PerplexityMaxTokens,
    int? CalibrationSamples,
    int? CalibrationSeqLen,
    string? CalibrationText,
    int BenchPromptLength,
    int BenchGenerateTokens,
    int BenchRepeats,
    int BenchRounds,
    string Runtime);

/// <summary>One task's scores for one recipe (the evaluator's results.json values); null where the task has no such metric.</summary>
public sealed record TaskScore(string Task, int Docs, double? Acc, double? AccStderr, double? AccNorm, double? AccNormStderr)
{
    public static TaskScore From(TaskResult t)
    {
        var acc = t.Metrics.FirstOrDefault(m => m.Name == "acc");
        var norm = t.Metrics.FirstOrDefault(m => m.Name == "acc_norm");
        return new TaskScore(t.Task.Name, t.Docs.Count, acc?.Value, acc?.Stderr, norm?.Value, norm?.Stderr);
    }
}

/// <summary>What one recipe measured before any ratio: its compile, evaluation and one benchmark per round.</summary>
public sealed record RecipeMeasurement(
    string Recipe,
    string Description,
    string Pipeline,
    string Artifact,
    long Parameters,
    long Bytes,
    double? Perplexity,
    IReadOnlyList<TaskScore> Tasks,
    IReadOnlyList<BenchModelResult> BenchRounds,
    double CompileSeconds,
    double EvalSeconds);

/// <summary>
/// Speed and memory of one recipe: medians over the benchmark rounds (each round measures every recipe once, in table
/// order). Ratios are the medians of the per-round ratios against the baseline measured in the same round, so drift of a
/// noisy machine between rounds cancels; <see cref="DecodeSpeedupMin"/>/<see cref="DecodeSpeedupMax"/> show the spread, the
/// per-round tokens/s are kept. Peak memory is the bench's peak RSS minus the RSS before loading. Wall-clock figures: not deterministic.
/// </summary>
public sealed record SpeedMeasurement(
    double PrefillTokensPerSecond,
    double DecodeTokensPerSecond,
    long PeakMemoryBytes,
    bool PeakIsolated,
    double PrefillSpeedup,
    double DecodeSpeedup,
    double DecodeSpeedupMin,
    double DecodeSpeedupMax,
    double? MemoryRatio,
    IReadOnlyList<double> PrefillTokensPerSecondRounds,
    IReadOnlyList<double> DecodeTokensPerSecondRounds,
    double CompileSeconds,
    double EvalSeconds);

/// <summary>
/// One row of the paper's table. <see cref="AverageAcc"/> is the unweighted mean of the tasks' acc (the paper's average),
/// <see cref="RetainedAcc"/> that average over the baseline's (1 = all kept); likewise for acc_norm. The deterministic
/// fields come from the compile and the evaluation; <see cref="Speed"/> holds the wall-clock ones.
/// </summary>
public sealed record ReportRow(
    string Recipe,
    string Description,
    string Pipeline,
    string Artifact,
    long Parameters,
    long Bytes,
    double? Perplexity,
    IReadOnlyList<TaskScore> Tasks,
    double? AverageAcc,
    double? AverageAccNorm,
    double ParametersRatio,
    double BytesRatio,
    double? PerplexityRatio,
    double? RetainedAcc,
    double? RetainedAccNorm,
    SpeedMeasurement Speed);

/// <summary>
/// The table `onnxmoe report` writes: one row per recipe, the first the uncompressed baseline every ratio is against.
/// report.json is <see cref="ToJson"/>: the same inputs give the same bytes except the wall-clock fields (each row's
/// <c>speed</c>, and <c>settings.runtime</c> only if the ORT build changes).
/// </summary>
public sealed class CompressionReport
{
    public CompressionReport(ReportSettings settings, IReadOnlyList<RecipeMeasurement> measured)
    {
        if (measured.Count == 0) throw new ArgumentException("a report needs at least the baseline row", nameof(measured));
        Settings = settings;
        var baseline = measured[0];
        double? baseAcc = Average(baseline.Tasks, t => t.Acc), baseNorm = Average(baseline.Tasks, t => t.AccNorm);
        Rows = measured.Select(m =>
        {
            double? acc = Average(m.Tasks, t => t.Acc), norm = Average(m.Tasks, t => t.AccNorm);
            return new ReportRow(m.Recipe, m.Description, m.Pipeline, m.Artifact, m.Parameters, m.Bytes, m.Perplexity, m.Tasks, acc, norm,
                (double)m.Parameters / baseline.Parameters, (double)m.Bytes / baseline.Bytes,
                m.Perplexity / baseline.Perplexity, Ratio(acc, baseAcc), Ratio(norm, baseNorm), Speed(m, baseline));
        }).ToList();
    }

    public ReportSettings Settings { get; }
    public IReadOnlyList<ReportRow> Rows { get; }
    public ReportRow Baseline => Rows[0];
    /// <summary>Task names in column order (the baseline's; every row has the same tasks).</summary>
    public IReadOnlyList<string> TaskNames => Baseline.Tasks.Select(t => t.Task).ToList();

    /// <summary>Unweighted mean over the tasks; null without tasks or when a task lacks the metric.</summary>
    public static double? Average(IReadOnlyList<TaskScore> tasks, Func<TaskScore, double?> metric) =>
        tasks.Count == 0 || tasks.Any(t => metric(t) is null) ? null : tasks.Sum(t => metric(t)!.Value) / tasks.Count;

    private static double? Ratio(double? value, double? baseline) => value is { } v && baseline is { } b && b > 0 ? v / b : null;

    private static SpeedMeasurement Speed(RecipeMeasurement m, RecipeMeasurement baseline)
    {
        var rounds = m.BenchRounds.Zip(baseline.BenchRounds).ToList();
        var decodeRatios = rounds.Select(r => r.First.DecodeTokensPerSecond / r.Second.DecodeTokensPerSecond).ToList();
        var memoryRatios = rounds.Where(r => r.Second.PeakRssDeltaBytes > 0).Select(r => (double)r.First.PeakRssDeltaBytes / r.Second.PeakRssDeltaBytes).ToList();
        return new SpeedMeasurement(
            BenchRunner.Median(m.BenchRounds.Select(r => r.PrefillTokensPerSecond).ToList()),
            BenchRunner.Median(m.BenchRounds.Select(r => r.DecodeTokensPerSecond).ToList()),
            (long)BenchRunner.Median(m.BenchRounds.Select(r => (double)r.PeakRssDeltaBytes).ToList()),
            m.BenchRounds.All(r => r.PeakIsolated),
            BenchRunner.Median(rounds.Select(r => r.First.PrefillTokensPerSecond / r.Second.PrefillTokensPerSecond).ToList()),
            BenchRunner.Median(decodeRatios), decodeRatios.Min(), decodeRatios.Max(),
            memoryRatios.Count > 0 ? BenchRunner.Median(memoryRatios) : null,
            m.BenchRounds.Select(r => r.PrefillTokensPerSecond).ToList(), m.BenchRounds.Select(r => r.DecodeTokensPerSecond).ToList(),
            m.CompileSeconds, m.EvalSeconds);
    }

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public string ToJson() => JsonSerializer.Serialize(new { settings = Settings, rows = Rows }, Json) + "\n";
}
