using System.CommandLine;
using OnnxMoe.Inference.Evaluation;
using OnnxMoe.Inference.Generation;
using OnnxMoe.Inference.Models;
using OnnxMoe.Ir;
using Spectre.Console;

namespace OnnxMoe.Cli.Commands;

internal static class EvalCommand
{
    public static Command Create()
    {
        var modelDir = new Argument<string>("model-dir") { Description = "A model folder written by `onnxmoe compile`." };
        var text = new Option<string>("--perplexity") { Description = "UTF-8 text file to measure perplexity on (e.g. models/data/kjv-heldout.txt).", Required = true };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per window.", DefaultValueFactory = _ => 512 };
        var stride = new Option<int>("--stride") { Description = "Tokens the window moves each step; each token is scored once (HF's sliding-window recipe).", DefaultValueFactory = _ => 256 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Score only the first N tokens of the file (0 = all).", DefaultValueFactory = _ => 0 };
        var json = new Option<bool>("--json") { Description = "Print the result as JSON." };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var command = new Command("eval", "Measure a compiled model's perplexity on a text file (lower is better), with a progress bar and tokens/s.\n" +
            "Example: onnxmoe eval out/tiny-mixtral --perplexity models/data/kjv-heldout.txt --seq-len 256")
        {
            modelDir, text, seqLen, stride, maxTokens, json, device, threads,
        };
        command.SetAction(parse =>
        {
            int len = parse.GetValue(seqLen), step = parse.GetValue(stride), max = parse.GetValue(maxTokens);
            if (len < 2) throw new UserErrorException("--seq-len must be at least 2");
            if (step < 1 || step > len) throw new UserErrorException($"--stride must be between 1 and --seq-len ({len})");
            if (max < 0) throw new UserErrorException("--max-tokens must be 0 (all) or more");
            var folder = ModelFolder.Open(CommonOptions.ExistingFolder(parse.GetValue(modelDir)!, "model"));
            string textPath = CommonOptions.ExistingFile(parse.GetValue(text)!, "text");
            var tokens = folder.LoadTokenizer().Encode(File.ReadAllText(textPath), addSpecialTokens: false);
            if (max > 0 && tokens.Length > max) tokens = tokens[..max];
            if (tokens.Length < 2) throw new UserErrorException($"{textPath}: too little text to score ({tokens.Length} tokens)");
            var config = CommonOptions.SessionConfig(parse.GetValue(device)!, parse.GetValue(threads));
            using var decoder = OrtDecoder.Open(folder, config);
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
            return 0;
        });
        return command;
    }
}
