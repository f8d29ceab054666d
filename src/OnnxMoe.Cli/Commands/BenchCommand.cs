using System.CommandLine;
using OnnxMoe.Compiler.Bench;

namespace OnnxMoe.Cli.Commands;

internal static class BenchCommand
{
    public static Command Create()
    {
        var models = new Argument<string[]>("model-dirs") { Description = "Model folders written by `onnxmoe compile`; the first is the baseline the others are compared with.", Arity = ArgumentArity.OneOrMore };
        var promptLen = new Option<int>("--prompt-len") { Description = "Prompt tokens for the prefill measurement.", DefaultValueFactory = _ => 128 };
        var gen = new Option<int>("--gen") { Description = "Tokens generated with the KV cache for the decode measurement.", DefaultValueFactory = _ => 64 };
        var batch = new Option<int>("--batch") { Description = "Sequences per run (the paper: 1).", DefaultValueFactory = _ => 1 };
        var repeat = new Option<int>("--repeat") { Description = "Measured repeats per model (medians are reported); one warm-up run is excluded.", DefaultValueFactory = _ => 3 };
        var engine = new Option<string>("--engine") { Description = "Comma list of engines each folder is measured with: ort (onnxmoe's decoder over ONNX Runtime; with fused attention on CPU it keeps the KV cache in one shared buffer updated in place), ort-concat (the same decoder with a fresh present per step, to see what the shared buffer gains), genai (ONNX Runtime GenAI with the folder's genai_config.json).", DefaultValueFactory = _ => "ort" };
        var json = new Option<bool>("--json") { Description = "Print the results as JSON." };
        var profile = new Option<string?>("--profile")
        {
            Description = "Profile each model (ort engine): after its measurement a second session runs the same schedule with ORT's profiler on; " +
                "write ORT's profile as DIR/<model>.ort-profile.json (default DIR: onnxmoe-profile) and print the top op types by kernel time for prefill and decode.",
            Arity = ArgumentArity.ZeroOrOne,
            HelpName = "DIR",
        };
        var bandwidthBuffer = new Option<string>("--bandwidth-buffer")
        {
            Description = "Buffer the read-bandwidth probe streams through before each model (e.g. 1GiB, 256MiB); make it several times the last-level cache.",
            DefaultValueFactory = _ => "1GiB",
        };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var command = new Command("bench", "Measure prefill tokens/s, decode tokens/s (1 / median time per generated token, KV cache), peak RSS and file bytes of " +
            "one or more compiled models in one run, with ratios against the first, and each model's lower bound on a decode step: the bytes it reads at least " +
            "(weights, top-k of the routed experts, one embedding row, KV cache) over the read bandwidth measured in the same process.\n" +
            "Example: onnxmoe bench out/base out/int4 out/block-drop-int4 --prompt-len 128 --gen 64 --engine ort,genai")
        {
            models, promptLen, gen, batch, repeat, engine, json, profile, bandwidthBuffer, device, threads,
        };
        command.SetAction(parse =>
        {
            var dirs = parse.GetValue(models)!;
            foreach (var d in dirs) CommonOptions.ExistingFolder(d, "model");
            var options = new BenchOptions
            {
                PromptLength = parse.GetValue(promptLen),
                GenerateTokens = parse.GetValue(gen),
                Batch = parse.GetValue(batch),
                Repeats = parse.GetValue(repeat),
                Session = CommonOptions.SessionConfig(parse.GetValue(device)!, parse.GetValue(threads)),
                Engines = BenchEngines.Parse(parse.GetValue(engine)!),
                BandwidthBufferBytes = CommonOptions.ParseSize(parse.GetValue(bandwidthBuffer), "--bandwidth-buffer")!.Value,
                ProfileDirectory = parse.GetResult(profile) is null ? null : parse.GetValue(profile) ?? "onnxmoe-profile",
            };
            options.Validate();
            var report = new BenchRunner(options, message => Console.Error.WriteLine(message)).Run(dirs);
            Console.Write(parse.GetValue(json) ? report.ToJson() + Environment.NewLine : report.ToTable());
            return 0;
        });
        return command;
    }
}
