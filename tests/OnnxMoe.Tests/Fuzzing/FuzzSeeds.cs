using System.Text;
using OnnxMoe.Checkpoints;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Lowering;
using OnnxMoe.Lowering.Families;
using OnnxMoe.Onnx;
using OnnxMoe.Tests.Lowering;

namespace OnnxMoe.Tests.Fuzzing;

/// <summary>
/// Valid inputs the fuzzers mutate, built once per test run from the bundled tiny checkpoints
/// (tests/data/families/*, models/tiny-*): safetensors files, a sharded index, configs of every family,
/// tokenizers, genai/generation configs and a compiled .onnx with external data. Disposed with the run.
/// </summary>
public sealed class FuzzSeeds : IDisposable
{
    private readonly TempFolder _folder = new();

    public FuzzSeeds()
    {
        foreach (var name in FamilyData.Names.Concat(FamilyData.TrainedModels))
        {
            string dir = FamilyData.Dir(name);
            Configs.Add((name, dir, File.ReadAllBytes(Path.Combine(dir, "config.json"))));
            foreach (var extra in new[] { "tokenizer.json" })
                if (File.Exists(Path.Combine(dir, extra))) Tokenizers.Add(File.ReadAllBytes(Path.Combine(dir, extra)));
            if (File.Exists(Path.Combine(dir, "generation_config.json"))) GenerationConfigs.Add(File.ReadAllBytes(Path.Combine(dir, "generation_config.json")));
        }

        // Small safetensors seeds: real tensor names and dtypes from the family checkpoints, tiny shapes, plus metadata.
        using (var real = SafetensorsFile.Open(Path.Combine(FamilyData.Dir("qwen3_moe"), "model.safetensors")))
        {
            var rng = new Random(7);
            var tensors = real.TensorNames.Take(5).Select(n => Tiny(n, DataType.Float, [2, 3], rng))
                .Append(Tiny("half", DataType.Float16, [4], rng)).Append(Tiny("bf", DataType.BFloat16, [1, 2, 2], rng))
                .Append(Tiny("ids", DataType.Int64, [3], rng)).Append(Tiny("mask", DataType.Bool, [5], rng))
                .Append(Tiny("empty", DataType.Float, [0, 4], rng)).Append(Tiny("scalar", DataType.Int32, [], rng)).ToList();
            string path = _folder["seed.safetensors"];
            SafetensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt", ["note"] = "fuzz seed" });
            Safetensors.Add(File.ReadAllBytes(path));
            SafetensorsWriter.Write(path, tensors.Take(2).ToList());
            Safetensors.Add(File.ReadAllBytes(path));
        }

        // The sharded mixtral checkpoint: its index is mutated, its shards are shared.
        ShardedDirectory = FamilyData.Dir("mixtral");
        Index = File.ReadAllBytes(Path.Combine(ShardedDirectory, CheckpointFolder.IndexFileName));

        // genai_config.json of every family, as compile writes it.
        foreach (var family in FamilyData.Names)
        {
            var config = HfConfig.Load(Path.Combine(FamilyData.Dir(family), "config.json"));
            var spec = ModelFamilies.ForConfig(config).ReadSpec(config);
            GenAiConfigs.Add(Encoding.UTF8.GetBytes(Compiler.Compile.GenAiConfigFactory.From(spec, "model.onnx", spec.NumLayers).ToJson()));
        }

        // A lowered model written with external data.
        using (var ckpt = CheckpointFolder.Open(FamilyData.Dir("qwen3_moe")))
        {
            var lowered = DecoderLowering.Lower(ckpt);
            OnnxDirectory = Directory.CreateDirectory(_folder["onnx"]).FullName;
            OnnxWriter.Write(lowered.Model, Path.Combine(OnnxDirectory, "model.onnx"), new OnnxWriteOptions { DataFileName = "model.onnx.data" });
        }
        OnnxModel = File.ReadAllBytes(Path.Combine(OnnxDirectory, "model.onnx"));
        OnnxData = File.ReadAllBytes(Path.Combine(OnnxDirectory, "model.onnx.data"));
    }

    public List<(string Name, string Directory, byte[] Json)> Configs { get; } = [];
    public List<byte[]> Tokenizers { get; } = [];
    public List<byte[]> GenerationConfigs { get; } = [];
    public List<byte[]> GenAiConfigs { get; } = [];
    public List<byte[]> Safetensors { get; } = [];
    public string ShardedDirectory { get; }
    public byte[] Index { get; }
    public string OnnxDirectory { get; }
    public byte[] OnnxModel { get; }
    public byte[] OnnxData { get; }

    private static KeyValuePair<string, Tensor> Tiny(string name, DataType type, long[] shape, Random rng)
    {
        var bytes = new byte[type.ByteCount(shape.Aggregate(1L, (a, d) => a * d))];
        rng.NextBytes(bytes);
        return new(name, new InMemoryTensor(type, shape, bytes));
    }

    public void Dispose() => _folder.Dispose();
}
