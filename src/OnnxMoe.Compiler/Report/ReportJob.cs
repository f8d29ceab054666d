using System.Diagnostics;
using OnnxMoe.Checkpoints;
using OnnxMoe.Compiler.Bench;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Inference.Evaluation;
using OnnxMoe.Inference.Evaluation.Tasks;
using OnnxMoe.Inference.Generation;
using OnnxMoe.Inference.Models;
using OnnxMoe.Ir;
using OnnxMoe.Passes;

namespace OnnxMoe.Compiler.Report;

/// <summary>
/// Compiles a checkpoint with each recipe, evaluates every artifact (perplexity, lm-eval tasks), benchmarks them all in
/// interleaved rounds, and writes the paper's table as report.md, report.json and report.html. Everything the request
/// names (checkpoint, recipes and their options, tasks and their templates, the perplexity text, the bench settings) is
/// checked before any work; the report folder is built in a hidden sibling and renamed into place when complete, so a
/// failure or a kill leaves no half-written report.
/// </summary>
public static class ReportJob
{
    /// <summary>The recipe name of the uncompressed fp32 compile, the baseline row (added first when not listed).</summary>
    public const string BaselineRecipe = "none";
    /// <summary>Stands for the baseline and every built-in recipe.</summary>
    public const string AllRecipes = "all";
    public const string ArtifactsFolder = "artifacts";
    public const string EvalFolder = "eval";

    private sealed record PlannedRecipe(string Name, string Description, CompileRequest Compile);

    public static CompressionReport Run(ReportRequest request)
    {
        var checkpoint = Path.GetFullPath(request.Checkpoint);
        if (!Directory.Exists(checkpoint)) throw new UserErrorException($"{request.Checkpoint}: no such checkpoint folder");
        using (CheckpointFolder.Open(checkpoint)) { }   // config.json and the safetensors headers, read lazily: fails before any work
        var recipes = PlanRecipes(request);
        var tasks = ResolveTasks(request);
        string? perplexityText = CheckPerplexity(request);
        var bench = request.Bench with { Engines = [BenchEngine.Ort], Session = request.Session };
        bench.Validate();
        if (request.BenchRounds < 1) throw new UserErrorException($"--bench-rounds must be at least 1, got {request.BenchRounds}");

        var progress = request.Progress;
        using var output = OutputFolder.Begin(Path.GetFullPath(request.Output.TrimEnd('/', '\\')), request.Overwrite);
        var measured = new List<(PlannedRecipe Recipe, CompileReport Compile, double? Perplexity, List<TaskScore> Tasks, double CompileS, double EvalS)>();
        for (int i = 0; i < recipes.Count; i++)
        {
            request.CancellationToken.ThrowIfCancellationRequested();
            var r = recipes[i];
            string step = $"[{i + 1}/{recipes.Count}] {r.Name}";
            progress?.Step($"{step}: compile");
            var clock = Stopwatch.StartNew();
            var compiled = CompileJob.Run(r.Compile with
            {
                Output = Path.Combine(output.BuildDirectory, ArtifactsFolder, r.Name),
                Progress = progress?.Compile,
                CancellationToken = request.CancellationToken,
            });
            double compileS = clock.Elapsed.TotalSeconds;
            clock.Restart();
            var (ppl, scores) = Evaluate(request, output.BuildDirectory, r.Name, step, tasks, perplexityText);
            measured.Add((r, compiled, ppl, scores, compileS, clock.Elapsed.TotalSeconds));
        }

        var dirs = recipes.Select(r => Path.Combine(output.BuildDirectory, ArtifactsFolder, r.Name)).ToList();
        var rounds = new List<BenchReport>();
        for (int round = 0; round < request.BenchRounds; round++)
        {
            request.CancellationToken.ThrowIfCancellationRequested();
            progress?.Step($"bench round {round + 1}/{request.BenchRounds}: {dirs.Count} models, prompt {bench.PromptLength}, {bench.GenerateTokens} generated tokens");
            rounds.Add(new BenchRunner(bench, message => progress?.Step("  " + message.TrimStart())).Run(dirs));
        }

        var settings = new ReportSettings(request.Checkpoint, tasks?.Tasks.Select(t => t.Name).ToList() ?? [], request.TaskOptions.Limit,
            request.TaskOptions.NumFewshot, request.PerplexityText, request.PerplexityOptions.SequenceLength, request.PerplexityOptions.Stride,
            request.PerplexityMaxTokens, request.Samples, request.SeqLen, request.CalibrationText,
            bench.PromptLength, bench.GenerateTokens, bench.Repeats, request.BenchRounds, rounds[0].Runtime);
        var report = new CompressionReport(settings, measured.Select((m, i) => new RecipeMeasurement(
            m.Recipe.Name, m.Recipe.Description, m.Compile.Pipeline, $"{ArtifactsFolder}/{m.Recipe.Name}",
            m.Compile.Parameters.Total, m.Compile.Bytes.Model + m.Compile.Bytes.Data, m.Perplexity, m.Tasks,
            rounds.Select(b => b.Rows[i].Result).ToList(), m.CompileS, m.EvalS)).ToList());

        progress?.Step("writing report.md, report.json, report.html");
        File.WriteAllText(Path.Combine(output.BuildDirectory, "report.json"), report.ToJson());
        File.WriteAllText(Path.Combine(output.BuildDirectory, "report.md"), ReportMarkdown.Render(report));
        File.WriteAllText(Path.Combine(output.BuildDirectory, "report.html"), ReportHtml.Render(report));
        output.Publish();
        return report;
    }

    /// <summary>The recipes in row order, the baseline first, each checked as a compile would check it (passes, options, calibration).</summary>
    private static List<PlannedRecipe> PlanRecipes(ReportRequest request)
    {
        var specs = request.Recipes.SelectMany(s => s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            .SelectMany(s => s == AllRecipes ? BuiltinRecipes.Names.Prepend(BaselineRecipe) : [s]).ToList();
        if (specs.Count == 0) throw new UserErrorException("--recipes names no recipe (built-in: " + string.Join(", ", BuiltinRecipes.Names) + ")");
        var registry = PassRegistry.CreateDefault();
        var baseRequest = new CompileRequest
        {
            Checkpoint = request.Checkpoint, Output = "", Samples = request.Samples, SeqLen = request.SeqLen, CalibrationText = request.CalibrationText,
            CalibrationMemory = request.CalibrationMemory, Session = request.Session, Registry = registry,
        };
        var planned = new List<PlannedRecipe> { new(BaselineRecipe, "uncompressed (fp32, no passes)", baseRequest) };
        foreach (var spec in specs.Where(s => s != BaselineRecipe))
        {
            var recipe = RecipeLoader.Resolve(spec, registry);
            if (planned.Any(p => p.Name == recipe.Name))
                throw new UserErrorException($"--recipes: '{spec}' is listed twice (recipe name '{recipe.Name}'; each row's artifact folder is named after it)");
            var compile = baseRequest with { Recipe = spec };
            compile.Resolve();
            planned.Add(new PlannedRecipe(recipe.Name, recipe.Description, compile));
        }
        baseRequest.Resolve();
        return planned;
    }

    /// <summary>The tasks, each one's documents built (templates rendered, targets checked) so a bad task fails before any compile.</summary>
    private static ResolvedTasks? ResolveTasks(ReportRequest request)
    {
        request.TaskOptions.Validate();
        if (request.Tasks.Count == 0) return null;
        var resolved = new TaskCatalog(request.TaskFolders).Resolve(request.Tasks);
        foreach (var t in resolved.Tasks) t.BuildRequests(request.TaskOptions.NumFewshot ?? t.NumFewshot, request.TaskOptions.Limit, request.TaskOptions.FewshotSeed);
        return resolved;
    }

    private static string? CheckPerplexity(ReportRequest request)
    {
        var o = request.PerplexityOptions;
        if (o.SequenceLength < 2) throw new UserErrorException($"--perplexity-seq-len must be at least 2, got {o.SequenceLength}");
        if (o.Stride < 1 || o.Stride > o.SequenceLength) throw new UserErrorException($"--perplexity-stride must be between 1 and --perplexity-seq-len ({o.SequenceLength}), got {o.Stride}");
        if (request.PerplexityMaxTokens is < 2) throw new UserErrorException($"--perplexity-max-tokens must be at least 2, got {request.PerplexityMaxTokens}");
        if (request.PerplexityText is not { } text) return null;
        if (Directory.Exists(text)) throw new UserErrorException($"{text}: is a folder, expected a perplexity text file");
        if (!File.Exists(text)) throw new UserErrorException($"{text}: no such perplexity text file");
        return Path.GetFullPath(text);
    }

    /// <summary>Perplexity and task scores of one artifact; the evaluator's results.json goes to eval/&lt;recipe&gt;/.</summary>
    private static (double? Perplexity, List<TaskScore> Tasks) Evaluate(ReportRequest request, string root, string name, string step,
        ResolvedTasks? tasks, string? perplexityText)
    {
        var progress = request.Progress;
        var folder = ModelFolder.Open(Path.Combine(root, ArtifactsFolder, name));
        using var decoder = OrtDecoder.Open(folder, request.Session);
        double? ppl = null;
        if (perplexityText is not null)
        {
            progress?.Step($"{step}: perplexity on {Path.GetFileName(perplexityText)}");
            var tokens = folder.LoadTokenizer().Encode(File.ReadAllText(perplexityText), addSpecialTokens: false);
            if (request.PerplexityMaxTokens is { } max && tokens.Length > max) tokens = tokens[..max];
            if (tokens.Length < 2) throw new UserErrorException($"{request.PerplexityText}: too little text to score ({tokens.Length} tokens)");
            string what = $"{name} perplexity";
            ppl = new PerplexityEvaluator(decoder).Evaluate(tokens, request.PerplexityOptions,
                p => progress?.Advanced(what, p.ScoredTokens, p.TokensToScore, $"{p.ScoredTokens / Math.Max(1e-9, p.Elapsed.TotalSeconds):F0} tokens/s"),
                request.CancellationToken).Perplexity;
        }
        var scores = new List<TaskScore>();
        if (tasks is not null)
        {
            progress?.Step($"{step}: tasks {string.Join(", ", tasks.Tasks.Select(t => t.Name))}");
            var evaluator = TaskEvaluator.ForModel(folder, decoder, request.TaskOptions);
            var results = evaluator.Evaluate(tasks, request.TaskOptions, $"{ArtifactsFolder}/{name}", (task, run) =>
                run(p => progress?.Advanced($"{name} {task.Name}", p.DocsDone, p.DocCount, $"{p.DocsDone}/{p.DocCount} docs, {p.DocsPerSecond:F1} docs/s")));
            TaskResultsWriter.Write(results, Path.Combine(root, EvalFolder, name), logSamples: false);
            scores.AddRange(results.Tasks.Select(TaskScore.From));
        }
        return (ppl, scores);
    }
}
