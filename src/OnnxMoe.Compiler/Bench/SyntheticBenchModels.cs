using OnnxMoe.Ir;
using OnnxMoe.Lowering;

namespace OnnxMoe.Compiler.Bench;

/// <summary>
/// Random checkpoints for speed work (generated locally, never committed). The medium one is
/// Mixtral-shaped: hidden 1024, 16 heads (4 key/value), 8 experts of width 2816, top-2, vocabulary
/// 32000, 16 layers: 1.21 B parameters (2.4 GB in bf16).
/// </summary>
public static class SyntheticBenchModels
{
    public static RandomCheckpointOptions MediumMixtral(int layers = 16) => new()
    {
        Family = "mixtral", DType = DataType.BFloat16, Seed = 1, NumLayers = layers, HiddenSize = 1024, NumAttentionHeads = 16,
        NumKeyValueHeads = 4, NumExperts = 8, TopK = 2, IntermediateSize = 2816, VocabSize = 32000,
    };
}
