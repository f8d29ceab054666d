using System.CommandLine;
using OnnxMoe.Compiler.Bench;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Compiler.Report;
using OnnxMoe.Inference.Evaluation;
using OnnxMoe.Inference.Evaluation.Tasks;

namespace OnnxMoe.Cli.Commands;

internal static class ReportCommand
{
    public static Command Create()
    {
        var checkpoint = new Argument<string>("checkpoint-dir") { Description = "Hugging Face checkpoint folder (as for `onnxmoe compile`)." };
        var recipes = new Option<string>("--recipes") { Description = "Comma list of built-in recipe names (`onnxmoe recipes`) and recipe .yaml files; `all` = every built-in. The uncompressed fp32 compile (`none`) is always the first row, the baseline of every ratio.", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "Report folder: report.md, report.json, report.html, artifacts/<recipe>/ (the compiled model folders, kept) and eval/<recipe>/results.json (lm-eval's layout); built aside and renamed into place when complete.", DefaultValueFactory = _ => "report" };
        var tasks = new Option<string?>("--tasks") { Description = "lm-eval multiple-choice tasks: names, groups (onnxmoe = the built-in KJV tasks) or task.yaml paths, comma-separated." };
        var includePath = new Option<string[]>("--include-path") { Description = "More folders of task YAMLs to find task names in.", AllowMultipleArgumentsPerToken = true };
        var limit = new Option<int?>("--limit") { Description = "Evaluate only the first N documents of each task (quick runs)." };
        var numFewshot = new Option<int?>("--num-fewshot") { Description = "Few-shot examples per document (default: each task's num_fewshot, 0 for the built-in tasks, as in the paper)." };
        var batchSize = new Option<int>("--batch-size") { Description = "Task documents per forward batch.", DefaultValueFactory = _ => 8 };
        var addBos = new Option<bool>("--add-bos") { Description = "Put BOS before every task context (newer lm-eval)." };
        var perplexity = new Option<string?>("--perplexity") { Description = "UTF-8 text file to measure perplexity on; choose one the model was not trained on (e.g. models/data/kjv-heldout.txt for the bundled models)." };
        var pplSeqLen = new Option<int>("--perplexity-seq-len") { Description = "Perplexity: tokens per window.", DefaultValueFactory = _ => 512 };
        var pplStride = new Option<int>("--perplexity-stride") { Description = "Perplexity: tokens the window moves each step.", DefaultValueFactory = _ => 256 };
        var pplMaxTokens = new Option<int?>("--perplexity-max-tokens") { Description = "Perplexity: score only the first N tokens of the file." };
        var samples = new Option<int?>("--samples") { Description = "Calibration samples for every recipe (default: each recipe's, 128 for the built-ins)." };
        var seqLen = new Option<int?>("--seq-len") { Description = "Tokens per calibration sample for every recipe (default: each recipe's, 2048 for the built-ins)." };
        var calibration = new Option<string?>("--calibration") { Description = "Calibration text file for every recipe (default: each recipe's, else models/data/kjv-calibration.txt)." };
        var benchPrompt = new Option<int>("--bench-prompt") { Description = "Benchmark: prompt tokens for the prefill measurement.", DefaultValueFactory = _ => 128 };
        var benchGen = new Option<int>("--bench-gen") { Description = "Benchmark: tokens generated with the KV cache for the decode measurement.", DefaultValueFactory = _ => 64 };
        var benchRepeat = new Option<int>("--bench-repeat") { Description = "Benchmark: measured repeats per model and round (after one warm-up).", DefaultValueFactory = _ => 3 };
        var benchRounds = new Option<int>("--bench-rounds") { Description = "Benchmark: rounds, each measuring every model once in table order; speeds and ratios are medians over the rounds.", DefaultValueFactory = _ => 3 };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an existing report folder (only once the new one is complete)." };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Print each compile's per-step detail too." };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var calibrationMemory = CommonOptions.CalibrationMemory();
        var command = new Command("report", "The paper's table for one checkpoint: compile it with each recipe, evaluate every artifact (perplexity, lm-eval " +
            "multiple-choice tasks), benchmark them all in interleaved rounds, and write parameters, bytes, perplexity, each task's acc and acc_norm, " +
            "their average, the % of the uncompressed average retained, prefill and decode tokens/s and peak memory, with ratios against the " +
            "uncompressed compile, as report.md, report.json (deterministic except each row's speed) and report.html (inline SVG charts: accuracy " +
            "retained against decode speedup, accuracy per task). Progress goes to stderr; nothing is left behind on an error.\n" +
            "Examples:\n" +
            "  onnxmoe report models/tiny-mixtral --recipes all --tasks onnxmoe --perplexity models/data/kjv-heldout.txt --samples 8 --seq-len 128 -o out/report\n" +
            "  onnxmoe report ckpt --recipes block-drop-awq,my-recipe.yaml --tasks arc_easy --include-path lm-eval-tasks --limit 100 --bench-gen 16 -o out/quick")
        {
            checkpoint, recipes, output, tasks, includePath, limit, numFewshot, batchSize, addBos, perplexity, pplSeqLen, pplStride, pplMaxTokens,
            samples, seqLen, calibration, benchPrompt, benchGen, benchRepeat, benchRounds, overwrite, verbose, device, threads, calibrationMemory,
        };
        command.SetAction(parse =>
        {
            var taskFolders = new List<string> { EvalCommand.BuiltinTasksFolder };
            foreach (var p in parse.GetValue(includePath) ?? []) taskFolders.Add(CommonOptions.ExistingFolder(p, "task"));
            var request = new ReportRequest
            {
                Checkpoint = parse.GetValue(checkpoint)!,
                Output = parse.GetValue(output)!,
                Recipes = [parse.GetValue(recipes)!],
                Tasks = parse.GetValue(tasks) is { } t ? [t] : [],
                TaskFolders = taskFolders,
                TaskOptions = new TaskEvalOptions
                {
                    Limit = parse.GetValue(limit), NumFewshot = parse.GetValue(numFewshot), BatchSize = parse.GetValue(batchSize), AddBos = parse.GetValue(addBos),
                },
                PerplexityText = parse.GetValue(perplexity),
                PerplexityOptions = new PerplexityOptions { SequenceLength = parse.GetValue(pplSeqLen), Stride = parse.GetValue(pplStride) },
                PerplexityMaxTokens = parse.GetValue(pplMaxTokens),
                Samples = parse.GetValue(samples),
                SeqLen = parse.GetValue(seqLen),
                CalibrationText = parse.GetValue(calibration),
                CalibrationMemory = CommonOptions.ParseSize(parse.GetValue(calibrationMemory), "--calibration-memory"),
                Bench = new BenchOptions { PromptLength = parse.GetValue(benchPrompt), GenerateTokens = parse.GetValue(benchGen), Repeats = parse.GetValue(benchRepeat) },
                BenchRounds = parse.GetValue(benchRounds),
                Session = CommonOptions.SessionConfig(parse.GetValue(device)!, parse.GetValue(threads)),
                Overwrite = parse.GetValue(overwrite),
                Progress = new PlainReportProgress(parse.GetValue(verbose)),
            };
            if (request.Tasks.Count == 0 && request.PerplexityText is null) throw new Ir.UserErrorException("give --tasks NAMES and/or --perplexity FILE: the table needs a quality measure");
            var report = ReportJob.Run(request);
            string dir = Path.GetFullPath(request.Output);
            Console.Write(ReportMarkdown.Render(report));
            Console.Error.WriteLine($"wrote {Path.Combine(dir, "report.md")}, report.json, report.html and {report.Rows.Count} artifacts under {Path.Combine(dir, ReportJob.ArtifactsFolder)}");
            return 0;
        });
        return command;
    }

    /// <summary>Plain stderr lines (a report is minutes to hours of work, best followed in a log): each step, every 10% of an
    /// evaluation, each compile's stages.</summary>
    private sealed class PlainReportProgress(bool verbose) : IReportProgress
    {
        private string _what = "";
        private int _decile = -1;

        public ICompileProgress Compile { get; } = new PlainCompileProgress(verbose);

        public void Step(string message) => Console.Error.WriteLine(message);

        public void Advanced(string what, long done, long total, string detail)
        {
            int decile = total > 0 ? (int)(10 * done / total) : 0;
            if (what == _what && decile == _decile) return;
            (_what, _decile) = (what, decile);
            Console.Error.WriteLine($"  {what}: {10 * decile}% {detail}");
        }
    }
}
