using OnnxMoe.Compiler.Bench;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Inference.Evaluation;
using OnnxMoe.Inference.Evaluation.Tasks;
using OnnxMoe.Runtime;

namespace OnnxMoe.Compiler.Report;

/// <summary>
/// One `onnxmoe report`: a checkpoint, the recipes to compare (the uncompressed <see cref="ReportJob.BaselineRecipe"/> is always
/// the first row), how to evaluate them (perplexity on a text, lm-eval multiple-choice tasks) and how to benchmark them.
/// <see cref="ReportJob.Run(ReportRequest)"/> carries it out; the CLI only fills it in.
/// </summary>
public sealed record ReportRequest
{
    /// <summary>Hugging Face checkpoint folder.</summary>
    public required string Checkpoint { get; init; }
    /// <summary>Report folder: report.md, report.json, report.html, artifacts/&lt;recipe&gt;/ (the compiled folders) and
    /// eval/&lt;recipe&gt;/results.json (the evaluator's lm-eval layout); built aside and renamed into place when complete.</summary>
    public required string Output { get; init; }
    /// <summary>Built-in recipe names, recipe .yaml paths, <c>none</c> (the uncompressed fp32 compile) or <c>all</c> (every built-in).</summary>
    public required IReadOnlyList<string> Recipes { get; init; }
    /// <summary>Task names, groups or task.yaml paths (comma lists allowed); empty: no accuracy columns.</summary>
    public IReadOnlyList<string> Tasks { get; init; } = [];
    /// <summary>Folders task names are looked up in (the CLI passes its built-in tasks folder and any --include-path).</summary>
    public IReadOnlyList<string> TaskFolders { get; init; } = [];
    public TaskEvalOptions TaskOptions { get; init; } = new();
    /// <summary>UTF-8 text to measure perplexity on; null: no perplexity column.</summary>
    public string? PerplexityText { get; init; }
    public PerplexityOptions PerplexityOptions { get; init; } = new();
    /// <summary>Score only the first N tokens of <see cref="PerplexityText"/>; null: all.</summary>
    public int? PerplexityMaxTokens { get; init; }
    /// <summary>Calibration overrides for every recipe (null: each recipe's own).</summary>
    public int? Samples { get; init; }
    public int? SeqLen { get; init; }
    public string? CalibrationText { get; init; }
    public long? CalibrationMemory { get; init; }
    /// <summary>Prompt, generated tokens and repeats of each benchmark; <see cref="BenchOptions.Engines"/> and
    /// <see cref="BenchOptions.Session"/> are set from <see cref="Session"/> (ORT engine).</summary>
    public BenchOptions Bench { get; init; } = new();
    /// <summary>Benchmark rounds: every artifact is measured once per round, in table order, and the medians over rounds are reported.</summary>
    public int BenchRounds { get; init; } = 3;
    /// <summary>Device and threads for calibration, evaluation and benchmarks; null: CPU, ORT's default threads.</summary>
    public SessionConfig? Session { get; init; }
    /// <summary>Replace an existing report folder (swapped in only once the new one is complete).</summary>
    public bool Overwrite { get; init; }
    public IReportProgress? Progress { get; init; }
    public CancellationToken CancellationToken { get; init; }
}

/// <summary>Receives a report's progress (it is long work): one call per step, progress within evaluation steps, and the
/// compile display each recipe's compile reports to. Called on the working thread.</summary>
public interface IReportProgress
{
    /// <summary>A step starts, e.g. "[2/8] block-drop-awq: compile".</summary>
    void Step(string message);
    /// <summary>An evaluation step advanced to <paramref name="done"/> of <paramref name="total"/>.</summary>
    void Advanced(string what, long done, long total, string detail);
    /// <summary>Where each compile reports its stages; null: nowhere.</summary>
    ICompileProgress? Compile { get; }
}
