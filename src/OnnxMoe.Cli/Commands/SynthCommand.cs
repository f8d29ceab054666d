using System.CommandLine;
using OnnxMoe.Ir;
using OnnxMoe.Lowering;

namespace OnnxMoe.Cli.Commands;

internal static class SynthCommand
{
    public static Command Create()
    {
        var family = new Argument<string>("family") { Description = "Model family: mixtral, deepseek-moe, qwen2-moe, qwen3-moe or olmoe." };
        var output = new Option<string>("--output", "-o") { Description = "Checkpoint folder to write (config.json, safetensors shards, index).", Required = true };
        var size = new Option<string>("--size") { Description = "Approximate weight bytes, e.g. 4GiB, 1500MiB (layers are added until it is reached).", DefaultValueFactory = _ => "64MiB" };
        var dtype = new Option<string>("--dtype") { Description = "Weight type: bf16 (default), fp16 or fp32.", DefaultValueFactory = _ => "bf16" };
        var layers = new Option<int?>("--layers") { Description = "Number of decoder layers (overrides --size)." };
        var hidden = new Option<int>("--hidden") { Description = "Hidden size.", DefaultValueFactory = _ => 1024 };
        var intermediate = new Option<int>("--intermediate") { Description = "Routed expert width.", DefaultValueFactory = _ => 2816 };
        var experts = new Option<int>("--experts") { Description = "Routed experts per MoE layer.", DefaultValueFactory = _ => 8 };
        var topK = new Option<int>("--top-k") { Description = "Experts per token.", DefaultValueFactory = _ => 2 };
        var vocab = new Option<int>("--vocab") { Description = "Vocabulary size (embedding and lm_head rows).", DefaultValueFactory = _ => 32000 };
        var seed = new Option<int>("--seed") { Description = "Seed: the same options give the same bytes.", DefaultValueFactory = _ => 1 };
        var command = new Command("synth", "Write a random Hugging Face MoE checkpoint of any size, streamed (for benchmarks and scale tests; not a trained model).\n" +
            "Example: onnxmoe synth mixtral -o /tmp/mixtral-4g --size 4GiB --dtype fp32")
        {
            family, output, size, dtype, layers, hidden, intermediate, experts, topK, vocab, seed,
        };
        command.SetAction(parse =>
        {
            var options = new RandomCheckpointOptions
            {
                Family = parse.GetValue(family)!,
                TargetBytes = CommonOptions.ParseSize(parse.GetValue(size)!, "--size")!.Value,
                DType = parse.GetValue(dtype)!.Trim().ToLowerInvariant() switch
                {
                    "bf16" or "bfloat16" => DataType.BFloat16,
                    "fp16" or "f16" => DataType.Float16,
                    "fp32" or "f32" => DataType.Float,
                    var other => throw new UserErrorException($"--dtype '{other}': use bf16, fp16 or fp32"),
                },
                NumLayers = parse.GetValue(layers),
                HiddenSize = Positive(parse.GetValue(hidden), "--hidden"),
                IntermediateSize = Positive(parse.GetValue(intermediate), "--intermediate"),
                NumExperts = Positive(parse.GetValue(experts), "--experts"),
                TopK = Positive(parse.GetValue(topK), "--top-k"),
                VocabSize = Positive(parse.GetValue(vocab), "--vocab"),
                Seed = parse.GetValue(seed),
            };
            if (options.TopK > options.NumExperts) throw new UserErrorException($"--top-k {options.TopK} exceeds --experts {options.NumExperts}");
            string dir = parse.GetValue(output)!;
            if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any()) throw new UserErrorException($"{dir}: folder exists and is not empty");
            var watch = System.Diagnostics.Stopwatch.StartNew();
            var spec = RandomCheckpointGenerator.Generate(dir, options);
            long bytes = Directory.GetFiles(dir, "*.safetensors").Sum(f => new FileInfo(f).Length);
            Console.WriteLine($"wrote {dir}: {spec.Architecture}, {spec.NumLayers} layers, {bytes:N0} bytes of safetensors in {watch.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return command;
    }

    private static int Positive(int v, string name) => v > 0 ? v : throw new UserErrorException($"{name} must be positive");
}
