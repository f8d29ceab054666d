using System.Text;
using OnnxMoe.Checkpoints;
using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Inference.Models;
using OnnxMoe.Inference.Tokenization;
using OnnxMoe.Ir;
using OnnxMoe.Lowering;
using OnnxMoe.Lowering.Families;
using OnnxMoe.Onnx;
using OnnxMoe.Passes;
using OnnxMoe.Tests.Lowering;
using Xunit.Abstractions;

namespace OnnxMoe.Tests.Fuzzing;

/// <summary>
/// Seeded mutation fuzzing of every reader: each mutated input gives success or the reader's documented
/// user-error exception (one line), never another exception, a hang or files left behind.
/// </summary>
[Collection("fuzzing")]
public sealed class ReaderFuzzTests(FuzzSeeds seeds, ITestOutputHelper output) : IClassFixture<FuzzSeeds>
{
    private const int Cases = 1000;
    private static readonly Type[] UserError = [typeof(UserErrorException)];

    [Fact]
    public void SafetensorsHeader() => FuzzRunner.Run("safetensors header", Cases, 1_000_000, UserError, (i, m, dir) =>
    {
        var seed = seeds.Safetensors[i % seeds.Safetensors.Count];
        int headerEnd = 8 + (int)BitConverter.ToUInt64(seed, 0);
        // Mostly the JSON header (as JSON or as bytes), sometimes the length prefix or the whole file.
        byte[] bytes = m.Next(4) switch
        {
            0 => [.. seed.AsSpan(0, 8), .. Rejoin(seed, m.MutateJson(seed[8..headerEnd]), headerEnd)],
            1 => m.MutateBytes(seed, 0, headerEnd),
            2 => RewriteLength(m.MutateJson(seed[8..headerEnd]), seed[headerEnd..]),
            _ => m.MutateBytes(seed),
        };
        string path = Path.Combine(dir, "model.safetensors");
        File.WriteAllBytes(path, bytes);
        return () => ReadAll(path);
    }, output);

    [Fact]
    public void SafetensorsData() => FuzzRunner.Run("safetensors data", Cases, 2_000_000, UserError, (i, m, dir) =>
    {
        var seed = seeds.Safetensors[i % seeds.Safetensors.Count];
        int headerEnd = 8 + (int)BitConverter.ToUInt64(seed, 0);
        string path = Path.Combine(dir, "model.safetensors");
        File.WriteAllBytes(path, m.MutateBytes(seed, headerEnd, seed.Length - headerEnd));
        return () => ReadAll(path);
    }, output);

    [Fact]
    public void ShardedIndex() => FuzzRunner.Run("model.safetensors.index.json", Cases, 3_000_000, UserError, (i, m, dir) =>
    {
        foreach (var shard in Directory.GetFiles(seeds.ShardedDirectory, "model-*.safetensors"))
            File.CreateSymbolicLink(Path.Combine(dir, Path.GetFileName(shard)), shard);
        File.Copy(Path.Combine(seeds.ShardedDirectory, "config.json"), Path.Combine(dir, "config.json"));
        File.WriteAllBytes(Path.Combine(dir, CheckpointFolder.IndexFileName), m.Next(5) == 0 ? m.MutateBytes(seeds.Index) : m.MutateJson(seeds.Index));
        return () =>
        {
            using var ckpt = CheckpointFolder.Open(dir);
            DecoderLowering.Lower(ckpt);
        };
    }, output);

    public static TheoryData<string> Families => new(FamilyData.Names);

    /// <summary>Config of one family: parse, schema, spec, then the lowering over that family's weights.</summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void ConfigJson(string family)
    {
        var seed = seeds.Configs.First(c => c.Name == family);
        using var ckpt = CheckpointFolder.Open(seed.Directory);
        var extra = seeds.Configs.Where(c => c.Name != family).Select(c => c.Json).ToList();
        FuzzRunner.Run($"config.json ({family})", Cases, 4_000_000 + FamilyData.Names.ToList().IndexOf(family) * 10_000, UserError, (i, m, dir) =>
        {
            // Mostly this family's config; now and then another family's config over these weights.
            var json = i % 10 == 9 ? extra[i % extra.Count] : seed.Json;
            var text = Encoding.UTF8.GetString(m.Next(8) == 0 ? m.MutateBytes(json) : m.MutateJson(json));
            return () =>
            {
                var config = HfConfig.Parse(text, Path.Combine(seed.Directory, "config.json"));
                var spec = ModelFamilies.ForConfig(config).ReadSpec(config);
                DecoderLowering.Lower(ckpt, spec, new LoweringOptions());
            };
        }, output);
    }

    [Fact]
    public void TokenizerJson() => FuzzRunner.Run("tokenizer.json", Cases, 5_000_000, [typeof(InvalidDataException)], (i, m, dir) =>
    {
        var seed = seeds.Tokenizers[i % seeds.Tokenizers.Count];
        var text = Encoding.UTF8.GetString(m.Next(8) == 0 ? m.MutateBytes(seed) : m.MutateJson(seed));
        return () =>
        {
            var tokenizer = Tokenizer.FromJson(text, "tokenizer.json");
            var ids = tokenizer.Encode("In the beginning God created the heaven and the earth. 123 <s>");
            tokenizer.Decode(ids);
        };
    }, output);

    [Fact]
    public void GenAiAndGenerationConfig() => FuzzRunner.Run("genai_config.json / generation_config.json", Cases, 6_000_000, UserError, (i, m, dir) =>
    {
        bool genai = i % 3 != 2;
        var seed = genai ? seeds.GenAiConfigs[i % seeds.GenAiConfigs.Count] : seeds.GenerationConfigs[i % seeds.GenerationConfigs.Count];
        string path = Path.Combine(dir, genai ? "genai_config.json" : "generation_config.json");
        File.WriteAllBytes(path, m.Next(8) == 0 ? m.MutateBytes(seed) : m.MutateJson(seed));
        return genai ? () => GenAiConfig.Load(path) : () => GenerationConfig.Load(path);
    }, output);

    private static readonly string[] RecipeTokens =
    [
        "-1", "0", "1", "3", "99", "999999999999", "25%", "150%", "-5%", "abc", "null", "~", "[]", "{}", "''", "1e999", "NaN", ".inf",
        "drop-blocks", "drop-moe-layers", "prune-experts", "quantize-int4", "cleanup", "n", "blocks", "keep", "mode", "method", "awq",
        "rtn", "block-size", "3,7", "samples", "seq-len", "text", "default", "pipeline", "calibration", "name", "&a", "*a", "!!binary",
        "|", ">", "- x", "? k", "true", "no", "0x10", "1:0", "/etc/passwd", "../../x.txt",
    ];

    [Fact]
    public void RecipeYaml()
    {
        var registry = PassRegistry.CreateDefault();
        var yamls = BuiltinRecipes.Names.Select(BuiltinRecipes.GetYaml).ToList();
        FuzzRunner.Run("recipe YAML", Cases, 7_000_000, UserError, (i, m, dir) =>
        {
            var text = m.MutateText(yamls[i % yamls.Count], RecipeTokens);
            return () => RecipeLoader.Parse(text, "fuzz.yaml", registry, dir);
        }, output);
    }

    private static readonly string[] TaskTokens =
    [
        "-1", "0", "1", "99", "null", "~", "[]", "{}", "''", "1e999", "NaN", "multiple_choice", "generate_until", "loglikelihood", "json",
        "test", "validation", "train", "{{context}}", "{{choices}}", "{{ choices[answer] }}", "{{ missing }}", "{{", "}}", "{%", "%}",
        "{{ choices.index(answer) }}", "answer", "context", "choices", "!function utils.process", "num_fewshot", "target_delimiter",
    ];

    /// <summary>Task YAML and its JSONL data (the built-in tasks as seeds): resolved, loaded and every document's requests built.</summary>
    [Fact]
    public void TaskYamlAndJsonl()
    {
        var root = Path.Combine(AwqTestModelsRepo(), "models", "data", "tasks");
        var tasks = Directory.GetDirectories(root).Order(StringComparer.Ordinal).ToList();
        FuzzRunner.Run("task YAML and JSONL", Cases, 9_000_000, UserError, (i, m, dir) =>
        {
            var source = tasks[i % tasks.Count];
            var name = Path.GetFileName(source);
            var target = Path.Combine(dir, name);
            Directory.CreateDirectory(target);
            foreach (var f in Directory.GetFiles(source)) File.Copy(f, Path.Combine(target, Path.GetFileName(f)));
            string yaml = Path.Combine(target, name + ".yaml");
            switch (m.Next(3))
            {
                case 0:
                    File.WriteAllText(yaml, m.MutateText(File.ReadAllText(yaml), TaskTokens));
                    break;
                case 1:
                {
                    var data = Path.Combine(target, "test.jsonl");
                    var lines = File.ReadLines(data).Take(40).ToList();
                    int k = m.Next(lines.Count);
                    lines[k] = Encoding.UTF8.GetString(m.MutateJson(Encoding.UTF8.GetBytes(lines[k])));
                    File.WriteAllLines(data, lines);
                    break;
                }
                default:
                {
                    var data = Path.Combine(target, "test.jsonl");
                    File.WriteAllBytes(data, m.MutateBytes(File.ReadAllBytes(data).Take(8192).ToArray()));
                    break;
                }
            }
            return () =>
            {
                foreach (var task in new OnnxMoe.Inference.Evaluation.Tasks.TaskCatalog([dir]).Resolve([yaml]).Tasks)
                    task.BuildRequests(task.NumFewshot, limit: 20);
            };
        }, output);
    }

    private static string AwqTestModelsRepo() => Awq.AwqTestModels.Repo;

    private static readonly string[] Pipelines =
    [
        "drop-blocks{blocks=3,7},quantize-int4{block-size=128}",
        "drop-blocks{n=25%},quantize-int4{method=awq,block-size=128},cleanup",
        "prune-experts{keep=6,mode=global},cleanup",
        "prune-experts{experts=1:0,2:3}",
        "drop-moe-layers{layers=1,2,norm=false}",
        "quantize-int4{method=rtn,block-size=32,symmetric=true},remove-unused{inputs=true},topo-sort",
        "dedupe-constants",
    ];

    [Fact]
    public void PipelineStrings()
    {
        var registry = PassRegistry.CreateDefault();
        FuzzRunner.Run("pipeline strings", Cases, 8_000_000, UserError, (i, m, dir) =>
        {
            var text = m.MutateText(Pipelines[i % Pipelines.Length], RecipeTokens);
            return () =>
            {
                var pipeline = PassPipeline.Parse(text, registry);
                // What a parsed pipeline prints must parse back to the same text.
                Assert.Equal(pipeline.ToString(), PassPipeline.Parse(pipeline.ToString(), registry).ToString());
            };
        }, output);
    }

    [Fact]
    public void OnnxWithExternalData() => FuzzRunner.Run(".onnx with external data", Cases, 9_000_000, [typeof(OnnxFormatException)], (i, m, dir) =>
    {
        string model = Path.Combine(dir, "model.onnx"), data = Path.Combine(dir, "model.onnx.data");
        if (m.Next(4) == 0)
        {
            // A damaged data file under an intact model.
            File.WriteAllBytes(model, seeds.OnnxModel);
            File.WriteAllBytes(data, m.MutateBytes(seeds.OnnxData));
        }
        else
        {
            File.WriteAllBytes(model, m.MutateBytes(seeds.OnnxModel));
            File.CreateSymbolicLink(data, Path.Combine(seeds.OnnxDirectory, "model.onnx.data"));
        }
        return () =>
        {
            var read = OnnxReader.Read(model);
            foreach (var v in read.Graph.Initializers) _ = v.ConstValue?.GetBytes().Length;
        };
    }, output);

    private static void ReadAll(string path)
    {
        using var f = SafetensorsFile.Open(path);
        foreach (var name in f.TensorNames) _ = f[name].GetBytes().Length;
    }

    private static byte[] Rejoin(byte[] seed, byte[] header, int headerEnd) =>
        // Keep the original length prefix: the header no longer matches it (truncated or padded reads).
        [.. header, .. seed.AsSpan(headerEnd)];

    private static byte[] RewriteLength(byte[] header, byte[] data) =>
        [.. BitConverter.GetBytes((ulong)header.Length), .. header, .. data];
}
