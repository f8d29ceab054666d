using System.CommandLine;
using OnnxMoe.Inference.Generation;
using OnnxMoe.Inference.Models;
using OnnxMoe.Ir;

namespace OnnxMoe.Cli.Commands;

internal static class GenerateCommand
{
    public static Command Create()
    {
        var modelDir = new Argument<string>("model-dir") { Description = "A model folder written by `onnxmoe compile` (model.onnx, genai_config.json, tokenizer.json)." };
        var prompt = new Option<string>("--prompt", "-p") { Description = "The text to continue.", Required = true };
        var maxNew = new Option<int>("--max-new-tokens", "-n") { Description = "Most tokens to generate (stops earlier at an end-of-sequence token).", DefaultValueFactory = _ => 64 };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature; 0 = greedy (deterministic).", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens (0 = all).", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling: smallest set of tokens whose probability reaches p (1 = off).", DefaultValueFactory = _ => 1f };
        var seed = new Option<int>("--seed") { Description = "Random seed for sampling: the same seed gives the same text.", DefaultValueFactory = _ => 0 };
        var stats = new Option<bool>("--stats") { Description = "Print prefill time and decode tokens/s to stderr at the end." };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var command = new Command("generate", "Generate text with a compiled model, streaming tokens as they come (KV cache, greedy or sampled).\n" +
            "Example: onnxmoe generate out/tiny-mixtral --prompt \"In the beginning\" --max-new-tokens 40")
        {
            modelDir, prompt, maxNew, temperature, topK, topP, seed, stats, device, threads,
        };
        command.SetAction(parse =>
        {
            var options = new GenerationOptions
            {
                MaxNewTokens = parse.GetValue(maxNew),
                Temperature = parse.GetValue(temperature),
                TopK = parse.GetValue(topK),
                TopP = parse.GetValue(topP),
                Seed = parse.GetValue(seed),
            };
            if (options.MaxNewTokens < 1) throw new UserErrorException("--max-new-tokens must be at least 1");
            if (options.Temperature < 0) throw new UserErrorException("--temperature must be 0 (greedy) or more");
            if (options.TopK < 0) throw new UserErrorException("--top-k must be 0 (off) or more");
            if (options.TopP is <= 0 or > 1) throw new UserErrorException("--top-p must be in (0, 1]");
            var folder = ModelFolder.Open(CommonOptions.ExistingFolder(parse.GetValue(modelDir)!, "model"));
            var config = CommonOptions.SessionConfig(parse.GetValue(device)!, parse.GetValue(threads));
            using var decoder = OrtDecoder.Open(folder, config);
            var generator = new Generator(decoder, folder.LoadTokenizer(), folder.EosTokenIds, folder.PadTokenId, folder.GenAi?.ContextLength);
            string text = parse.GetValue(prompt)!;
            Console.Write(text);
            var result = generator.Generate(text, options, piece => { Console.Write(piece); Console.Out.Flush(); });
            Console.WriteLine();
            if (parse.GetValue(stats))
                Console.Error.WriteLine($"prompt {result.PromptIds.Count} tokens, prefill {result.PrefillTime.TotalMilliseconds:F1} ms; " +
                    $"{result.GeneratedIds.Count} tokens generated, decode {result.DecodeStepsPerSecond:F1} tokens/s; stopped: {result.FinishReason}");
            return 0;
        });
        return command;
    }
}
