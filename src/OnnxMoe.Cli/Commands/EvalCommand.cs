using System.CommandLine;
using OnnxMoe.Inference.Evaluation;
using OnnxMoe.Inference.Evaluation.Tasks;
using OnnxMoe.Inference.Generation;
using OnnxMoe.Inference.Models;
using OnnxMoe.Ir;

namespace OnnxMoe.Cli.Commands;

internal static class EvalCommand
{
    /// <summary>Where built-in task YAMLs live: tasks/ next to onnxmoe.dll (copied from models/data/tasks at build).</summary>
    public static string BuiltinTasksFolder => Path.Combine(AppContext.BaseDirectory, "tasks");

    public static Command Create()
    {
        var modelDir = new Argument<string>("model-dir") { Description = "A model folder written by `onnxmoe compile`." };
        var text = new Option<string?>("--perplexity") { Description = "UTF-8 text file to measure perplexity on (e.g. models/data/kjv-heldout.txt)." };
        var seqLen = new Option<int>("--seq-len") { Description = "Perplexity: tokens per window.", DefaultValueFactory = _ => 512 };
        var stride = new Option<int>("--stride") { Description = "Perplexity: tokens the window moves each step; each token is scored once (HF's sliding-window recipe).", DefaultValueFactory = _ => 256 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Perplexity: score only the first N tokens of the file (0 = all).", DefaultValueFactory = _ => 0 };
        var tasks = new Option<string?>("--tasks") { Description = "lm-eval multiple-choice tasks: names, group names (onnxmoe = the built-in tasks) or task.yaml paths, comma-separated." };
        var numFewshot = new Option<int?>("--num-fewshot") { Description = "Few-shot examples per document (overrides the YAML's num_fewshot, except in tasks whose YAML says 0, which stay zero-shot as in lm-eval; lm-eval's sampler and seed 1234)." };
        var limit = new Option<int?>("--limit") { Description = "Evaluate only the first N documents of each task." };
        var batchSize = new Option<int>("--batch-size") { Description = "Documents per forward batch (a document's choices always share one).", DefaultValueFactory = _ => 1 };
        var outputPath = new Option<string?>("--output-path") { Description = "Folder for results.json (lm-eval's layout)." };
        var logSamples = new Option<bool>("--log-samples") { Description = "Also write samples_<task>.jsonl (per-choice loglikelihoods) into --output-path." };
        var addBos = new Option<bool>("--add-bos") { Description = "Put BOS before every context (newer lm-eval); default is lm-eval 0.4.9.1's: BOS only for an empty context." };
        var includePath = new Option<string[]>("--include-path") { Description = "More folders of task YAMLs to find task names in.", AllowMultipleArgumentsPerToken = true };
        var json = new Option<bool>("--json") { Description = "Perplexity: print the result as JSON." };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var command = new Command("eval", "Evaluate a compiled model: perplexity on a text file (lower is better) and/or lm-eval 0.4 multiple-choice tasks " +
            "(acc, acc_norm, scored as lm-eval's Hugging Face backend does), with a progress bar.\n" +
            "Examples: onnxmoe eval out/tiny-mixtral --perplexity models/data/kjv-heldout.txt --seq-len 256\n" +
            "          onnxmoe eval out/tiny-mixtral --tasks onnxmoe --output-path out/eval --log-samples")
        {
            modelDir, text, seqLen, stride, maxTokens, tasks, numFewshot, limit, batchSize, outputPath, logSamples, addBos, includePath, json, device, threads,
        };
        command.SetAction(parse =>
        {
            string? textFile = parse.GetValue(text), taskSpec = parse.GetValue(tasks);
            if (textFile is null && taskSpec is null) throw new UserErrorException("give --perplexity FILE and/or --tasks NAMES");
            if (parse.GetValue(logSamples) && parse.GetValue(outputPath) is null) throw new UserErrorException("--log-samples needs --output-path");
            var folder = ModelFolder.Open(CommonOptions.ExistingFolder(parse.GetValue(modelDir)!, "model"));
            var config = CommonOptions.SessionConfig(parse.GetValue(device)!, parse.GetValue(threads));

            // Everything the user gave is checked before the model loads or anything is written.
            ResolvedTasks? resolved = null;
            if (taskSpec is not null)
            {
                var folders = new List<string> { BuiltinTasksFolder };
                foreach (var p in parse.GetValue(includePath) ?? [])
                    folders.Add(CommonOptions.ExistingFolder(p, "task"));
                resolved = new TaskCatalog(folders).Resolve([taskSpec]);
            }
            using var decoder = OrtDecoder.Open(folder, config);
            if (textFile is not null) RunPerplexity(parse, folder, decoder, textFile, seqLen, stride, maxTokens, json);
            if (resolved is not null)
            {
                var options = new TaskEvalOptions
                {
                    NumFewshot = parse.GetValue(numFewshot), Limit = parse.GetValue(limit), BatchSize = parse.GetValue(batchSize),
                    AddBos = parse.GetValue(addBos),
                };
                var evaluator = TaskEvaluator.ForModel(folder, decoder, options);
                var results = evaluator.Evaluate(resolved, options, folder.Directory, (task, run) =>
                    Progress.Run(task.Name, report => run(p => report(p.DocsDone, p.DocCount, $"{p.DocsDone}/{p.DocCount} docs, {p.DocsPerSecond:F1} docs/s"))));
                Console.Write(TaskResultsWriter.Table(results));
                if (parse.GetValue(outputPath) is { } dir)
                    foreach (var written in TaskResultsWriter.Write(results, dir, parse.GetValue(logSamples)))
                        Console.Error.WriteLine($"wrote {written}");
            }
            return 0;
        });
        return command;
    }

    private static void RunPerplexity(ParseResult parse, ModelFolder folder, OrtDecoder decoder, string textFile,
        Option<int> seqLen, Option<int> stride, Option<int> maxTokens, Option<bool> json)
    {
        int len = parse.GetValue(seqLen), step = parse.GetValue(stride), max = parse.GetValue(maxTokens);
        if (len < 2) throw new UserErrorException("--seq-len must be at least 2");
        if (step < 1 || step > len) throw new UserErrorException($"--stride must be between 1 and --seq-len ({len})");
        if (max < 0) throw new UserErrorException("--max-tokens must be 0 (all) or more");
        string textPath = CommonOptions.ExistingFile(textFile, "text");
        var tokens = folder.LoadTokenizer().Encode(File.ReadAllText(textPath), addSpecialTokens: false);
        if (max > 0 && tokens.Length > max) tokens = tokens[..max];
        if (tokens.Length < 2) throw new UserErrorException($"{textPath}: too little text to score ({tokens.Length} tokens)");
        var evaluator = new PerplexityEvaluator(decoder);
        var options = new PerplexityOptions { SequenceLength = len, Stride = step };
        PerplexityResult result = Progress.Run($"perplexity on {Path.GetFileName(textPath)}", report =>
            evaluator.Evaluate(tokens, options, p => report(p.ScoredTokens, p.TokensToScore, $"{p.ScoredTokens / Math.Max(1e-9, p.Elapsed.TotalSeconds):F0} tokens/s")));
        if (parse.GetValue(json))
            Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(new
            {
                model = folder.Directory, text = textPath, perplexity = result.Perplexity, nll = result.NegativeLogLikelihood,
                tokens = result.TokenCount, windows = result.Windows, tokens_per_second = result.TokensPerSecond, seq_len = len, stride = step,
            }));
        else
            Console.WriteLine($"perplexity {result.Perplexity:F3} (mean NLL {result.NegativeLogLikelihood:F4} nats) over {result.TokenCount:N0} tokens, " +
                $"{result.Windows} windows, {result.TokensPerSecond:F0} tokens/s");
    }
}
