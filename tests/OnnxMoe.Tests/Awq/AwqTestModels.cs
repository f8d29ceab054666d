using OnnxMoe.Passes.Calibration;
using OnnxMoe.Checkpoints;
using OnnxMoe.Compiler;
using OnnxMoe.Passes.Quantization.Awq;
using OnnxMoe.Compiler.Calibration;
using OnnxMoe.Inference.Tokenization;
using OnnxMoe.Ir.Building;
using OnnxMoe.Ir;
using OnnxMoe.Lowering;
using OnnxMoe.Runtime;
using OnnxMoe.Structure;
using OnnxMoe.Tests.Inference;

namespace OnnxMoe.Tests.Awq;

/// <summary>Lowered decoders for AWQ tests and a runner that returns logits and every MoE layer's top-k expert choice.</summary>
internal static class AwqTestModels
{
    public static string Repo => TestFiles.RepositoryRoot();
    public static string Calibration => Path.Combine(Repo, "models", "data", "kjv-calibration.txt");
    public static string HeldOut => Path.Combine(Repo, "models", "data", "kjv-heldout.txt");
    public static string MixtralTokenizer => Path.Combine(Repo, "models", "tiny-mixtral", "tokenizer.json");

    /// <summary>A random checkpoint (vocabulary 2048 so the tiny-mixtral tokenizer fits), lowered to fp32.</summary>
    public static LoweredModel RandomLowered(string family, string dir, int kvHeads = 2) =>
        DecoderLowering.Lower(CheckpointFolder.Open(CreateRandom(family, dir, kvHeads)));

    public static string CreateRandom(string family, string dir, int kvHeads)
    {
        var ckpt = Path.Combine(dir, $"ckpt-{family}");
        RandomCheckpointGenerator.Generate(ckpt, new RandomCheckpointOptions
        {
            Family = family, DType = DataType.Float, Seed = 3, NumLayers = 2, HiddenSize = 64, NumAttentionHeads = 4,
            NumKeyValueHeads = kvHeads, NumExperts = 4, TopK = 2, IntermediateSize = 48, VocabSize = 2048,
        });
        return ckpt;
    }

    public static AwqOptions SmallOptions() => new() { Samples = 4, SequenceLength = 64, SearchSamples = 2, ClipTokens = 64 };

    /// <summary>An ORT region runner over the calibration text, tokenized with <paramref name="tokenizer"/> as far as <paramref name="o"/> reaches.</summary>
    public static OrtRegionRunner Core(string tokenizer, AwqOptions o, string? text = null) =>
        new(() => CalibrationCorpus.FromText(Tokenizer.Load(tokenizer), text ?? Calibration, (long)o.Samples * o.SequenceLength));

    /// <summary>The AWQ pass service on its own runner (tokenized on first use).</summary>
    public static AwqCalibrator Service(AwqOptions o, string tokenizer, Action<AwqProgress>? progress = null) =>
        new(o, new BlockStateCache(Core(tokenizer, o)), progress);

    /// <summary>Windows of the held-out text.</summary>
    public static CalibrationWindows HeldOutWindows(string tokenizer, int count, int length) =>
        CalibrationCorpus.FromText(Tokenizer.Load(tokenizer), HeldOut, (long)count * length).Windows(count, length);

    /// <summary>Runs <paramref name="model"/> on the windows of <paramref name="tokens"/>: fp32 logits and the top-k indices of every MoE layer, concatenated.</summary>
    public static (float[] Logits, long[] Routing) Evaluate(Model model, CalibrationWindows tokens)
    {
        var structure = DecoderStructure.Read(model);
        var values = model.Graph.Nodes.ToDictionary(n => n.Name);
        var outputs = new List<Value> { model.Graph.Outputs.First(o => o.Name == "logits") };
        foreach (var b in structure.Blocks)
            if (b.Ffn?.Moe is { } moe) outputs.Add(values[moe.TopKNode].Outputs[1]);
        using var probe = new InMemorySession(RegionExtractor.Extract(model, [], outputs), new SessionConfig { IntraOpThreads = 1 }, "eval");
        var logits = new List<float>();
        var routing = new List<long>();
        for (int i = 0; i < tokens.Count; i++)
        {
            var inputs = OrtRegionRunner.DecoderFeeds(probe.Session, structure, tokens, i, 1);
            try
            {
                using var result = probe.Session.Run(inputs, outputs.Select(o => o.Name).ToList());
                logits.AddRange(result[0].ToFloatArray());
                for (int j = 1; j < outputs.Count; j++) routing.AddRange(result[j].ToArray<long>());
            }
            finally
            {
                foreach (var v in inputs) v.Value.Dispose();
            }
        }
        return (logits.ToArray(), routing.ToArray());
    }
}
