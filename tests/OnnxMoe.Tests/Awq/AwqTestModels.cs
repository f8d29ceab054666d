using OnnxMoe.Checkpoints;
using OnnxMoe.Compiler;
using OnnxMoe.Compiler.Awq;
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

    public static AwqOptions SmallOptions(string tokenizer) => new()
    {
        TokenizerPath = tokenizer, CalibrationTextPath = Calibration, Samples = 4, SequenceLength = 64, SearchSamples = 2, ClipTokens = 64,
    };

    /// <summary>Runs <paramref name="model"/> on the windows of <paramref name="tokens"/>: fp32 logits and the top-k indices of every MoE layer, concatenated.</summary>
    public static (float[] Logits, long[] Routing) Evaluate(Model model, CalibrationSamples tokens)
    {
        var structure = DecoderStructure.Read(model);
        var values = model.Graph.Nodes.ToDictionary(n => n.Name);
        var outputs = new List<Value> { model.Graph.Outputs.First(o => o.Name == "logits") };
        foreach (var b in structure.Blocks)
            if (b.Ffn?.Moe is { } moe) outputs.Add(values[moe.TopKNode].Outputs[1]);
        using var probe = new InMemorySession(SubgraphExtractor.Extract(model, [], outputs), new SessionConfig { IntraOpThreads = 1 }, "eval");
        var logits = new List<float>();
        var routing = new List<long>();
        for (int i = 0; i < tokens.Count; i++)
        {
            var inputs = DecoderInputs.Create(probe.Session, tokens, [i]);
            try
            {
                using var result = probe.Session.Run(inputs, outputs.Select(o => o.Name).ToList());
                logits.AddRange(result[0].ToFloatArray());
                for (int j = 1; j < outputs.Count; j++) routing.AddRange(result[j].ToArray<long>());
            }
            finally
            {
                foreach (var v in inputs.Values) v.Dispose();
            }
        }
        return (logits.ToArray(), routing.ToArray());
    }
}
