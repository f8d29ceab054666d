using OnnxMoe.Ir;
using OnnxMoe.Lowering;

namespace OnnxMoe.Tests.Lowering;

/// <summary>Tiny random checkpoints written by <see cref="RandomCheckpointGenerator"/> into a temp folder.</summary>
internal static class TinyCheckpoints
{
    public static RandomCheckpointOptions Options(string family, DataType dtype = DataType.Float) => new()
    {
        Family = family, DType = dtype, Seed = 7, NumLayers = 2, HiddenSize = 32, NumAttentionHeads = 4,
        NumKeyValueHeads = 2, NumExperts = 4, TopK = 2, IntermediateSize = 16, VocabSize = 64,
    };

    public static string Create(string family, DataType dtype = DataType.Float, Func<RandomCheckpointOptions, RandomCheckpointOptions>? tweak = null)
    {
        string dir = Directory.CreateTempSubdirectory($"onnxmoe-{family}-").FullName;
        var o = Options(family, dtype);
        RandomCheckpointGenerator.Generate(dir, tweak?.Invoke(o) ?? o);
        return dir;
    }
}
