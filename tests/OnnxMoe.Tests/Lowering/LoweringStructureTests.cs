using System.Text.Json.Nodes;
using OnnxMoe.Checkpoints;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Lowering;
using OnnxMoe.Lowering.Families;
using OnnxMoe.Structure;

namespace OnnxMoe.Tests.Lowering;

public sealed class LoweringStructureTests
{
    public static TheoryData<string> Families => new(ModelFamilies.All.Select(f => f.Name));

    [Theory]
    [MemberData(nameof(Families))]
    public void LowersEveryFamilyWithConventionalNamesAndMetadata(string family)
    {
        string dir = TinyCheckpoints.Create(family);
        try
        {
            using var ckpt = CheckpointFolder.Open(dir);
            var lowered = DecoderLowering.Lower(ckpt);
            var g = lowered.Model.Graph;
            var names = g.Nodes.Select(n => n.Name).ToHashSet();

            Assert.Equal(["input_ids", "attention_mask", "position_ids", "past_key_values.0.key", "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value"],
                g.Inputs.Select(v => v.Name));
            Assert.Equal(["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"], g.Outputs.Select(v => v.Name));
            Assert.Equal(g.NodeCount, names.Count); // node names unique

            // Topological order as built: every input is a graph input, initializer or an earlier output.
            var available = new HashSet<Value>(g.Inputs.Concat(g.Initializers), ReferenceEqualityComparer.Instance);
            foreach (var n in g.Nodes)
            {
                foreach (var v in n.Inputs) if (v != null) Assert.True(available.Contains(v), $"{n.Name} reads {v.Name} before it exists");
                foreach (var o in n.Outputs) available.Add(o);
            }

            var s = DecoderStructure.Read(lowered.Model);
            Assert.Equal(family, s.Family);
            Assert.Equal(2, s.NumLayers);
            foreach (var block in s.Blocks)
            {
                int i = block.Index;
                foreach (var p in "qkvo") Assert.Contains($"/model/layers.{i}/attn/{p}_proj/MatMul", names);
                Assert.Contains(block.Attention.ResidualAdd, names);
                Assert.Contains(block.Ffn!.ResidualAdd, names);
                Assert.Contains(g.Nodes, n => n.Outputs.Any(o => o.Name == block.Ffn.Input) && n.Name.StartsWith(block.Ffn.NormPrefix));
                if (block.Ffn.Kind == FfnKind.Moe)
                {
                    var moe = block.Ffn.Moe!;
                    Assert.Equal([0, 1, 2, 3], moe.ExpertIds);
                    Assert.Contains($"/model/layers.{i}/moe/router/MatMul", names);
                    Assert.Equal($"/model/layers.{i}/moe/router/MatMul", moe.RouterMatMul);
                    foreach (var e in moe.ExpertIds)
                        foreach (var w in new[] { "w1", "w3", "w2" })
                            Assert.Contains($"/model/layers.{i}/moe/experts.{e}/{w}/MatMul", names);
                    var router = g.Nodes.Single(n => n.Name == moe.RouterMatMul);
                    Assert.Equal([32L, 4], router.Inputs[1]!.ConstValue!.Shape); // [hidden, experts]: columns sliceable per expert
                    Assert.NotNull(g.FindInitializer(moe.ExpertIdTable));
                    Assert.Equal(family is "deepseek-moe" or "qwen2-moe", moe.SharedExpert != null);
                    if (moe.SharedExpert != null) Assert.Contains($"/model/layers.{i}/moe/shared_experts/w2/MatMul", names);
                    if (family == "qwen2-moe") Assert.Contains($"/model/layers.{i}/moe/shared_expert_gate/MatMul", names);
                    Assert.Equal(family is "mixtral" or "qwen3-moe", moe.NormTopKProb);
                }
                else
                {
                    Assert.Equal("deepseek-moe", family);
                    Assert.Equal(0, i); // first_k_dense_replace = 1
                    Assert.Contains($"/model/layers.{i}/mlp/w1/MatMul", names);
                }
            }
            Assert.Contains("/lm_head/MatMul", names);
            // Only selected experts' FLOPs: every expert MatMul reads a Gather of routed tokens, never the full token set.
            var expertW1 = g.Nodes.First(n => n.Name.EndsWith("/experts.0/w1/MatMul"));
            Assert.Equal("Gather", expertW1.Inputs[0]!.Producer!.OpType);
            Assert.Equal("NonZero", g.Nodes.First(n => n.Name.Contains("/experts.0/")
                && n.OpType == "NonZero").OpType);
            // Linear weights are [in, out].
            var q = g.Nodes.Single(n => n.Name == "/model/layers.1/attn/q_proj/MatMul");
            Assert.Equal([32L, 32], q.Inputs[1]!.ConstValue!.Shape);
            var k = g.Nodes.Single(n => n.Name == "/model/layers.1/attn/k_proj/MatMul");
            Assert.Equal([32L, 16], k.Inputs[1]!.ConstValue!.Shape);
            var down = g.Nodes.Single(n => n.Name == "/model/layers.1/moe/experts.2/w2/MatMul");
            Assert.Equal([16L, 32], down.Inputs[1]!.ConstValue!.Shape);
            Assert.Equal(family == "qwen2-moe", names.Contains("/model/layers.0/attn/q_proj/Add"));
            Assert.Equal(family is "qwen3-moe" or "olmoe", names.Any(n => n.StartsWith("/model/layers.0/attn/q_norm/")));

            var genai = JsonNode.Parse(GenAiConfigFactory.From(lowered.Spec, "model.onnx", lowered.Spec.NumLayers).ToJson())!;
            Assert.Equal(2, (int)genai["model"]!["decoder"]!["num_hidden_layers"]!);
            Assert.Equal("decoder", (string)genai["model"]!["type"]!);
            Assert.Equal("past_key_values.%d.key", (string)genai["model"]!["decoder"]!["inputs"]!["past_key_names"]!);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void WeightsStayLazyAndTransposeCorrectly()
    {
        string dir = TinyCheckpoints.Create("mixtral", DataType.BFloat16);
        try
        {
            using var ckpt = CheckpointFolder.Open(dir);
            var lowered = DecoderLowering.Lower(ckpt);
            var w = lowered.Model.Graph.FindInitializer("model.layers.0.block_sparse_moe.experts.1.w3.weight")!.ConstValue!;
            Assert.False(w.IsMaterialized);
            Assert.Equal(DataType.Float, w.DataType);
            var src = ckpt.GetTensor("model.layers.0.block_sparse_moe.experts.1.w3.weight").ToFloatArray(); // [16, 32]
            var dst = w.ToFloatArray(); // [32, 16]
            for (int o = 0; o < 16; o++)
                for (int i = 0; i < 32; i++)
                    Assert.Equal(src[o * 32 + i], dst[i * 16 + o]);

            var half = DecoderLowering.Lower(ckpt, new LoweringOptions { WeightType = DataType.Float16 });
            var wh = half.Model.Graph.FindInitializer("model.layers.0.block_sparse_moe.experts.1.w3.weight")!.ConstValue!;
            Assert.Equal(DataType.Float16, wh.DataType);
            Assert.Equal(dst, wh.ToFloatArray()); // bf16 values are exact in f16 at this scale
            Assert.Equal("f16", DecoderStructure.Read(half.Model).ComputeType);
            Assert.Equal(DataType.Float16, half.Model.Graph.Inputs.Single(v => v.Name == "past_key_values.0.key").ElementType);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void UnsupportedArchitectureListsSupportedOnes()
    {
        var e = Assert.Throws<CheckpointException>(() => ModelFamilies.ForConfig(HfConfig.Parse("{\"architectures\":[\"LlamaForCausalLM\"]}")));
        Assert.Contains("LlamaForCausalLM", e.Message);
        foreach (var f in ModelFamilies.All) Assert.Contains(f.Architecture, e.Message);
    }

    [Fact]
    public void MissingTensorAndWrongShapeAreClearErrors()
    {
        string dir = TinyCheckpoints.Create("olmoe");
        try
        {
            // Shrink a config dimension so a tensor no longer matches, then drop a tensor from the file.
            string cfg = Path.Combine(dir, "config.json");
            var json = JsonNode.Parse(File.ReadAllText(cfg))!;
            json["intermediate_size"] = 8;
            File.WriteAllText(cfg, json.ToJsonString());
            using (var ckpt = CheckpointFolder.Open(dir))
            {
                var e = Assert.Throws<CheckpointException>(() => DecoderLowering.Lower(ckpt));
                Assert.Contains("model.layers.0.mlp.experts.0.gate_proj.weight", e.Message);
                Assert.Contains("[16,32]", e.Message);
            }
            json["intermediate_size"] = 16;
            File.WriteAllText(cfg, json.ToJsonString());
            string st = Path.Combine(dir, "model.safetensors");
            List<KeyValuePair<string, Tensor>> kept;
            using (var f = SafetensorsFile.Open(st))
                kept = f.TensorNames.Where(n => n != "model.layers.1.self_attn.k_norm.weight")
                    .Select(n => new KeyValuePair<string, Tensor>(n, new InMemoryTensor(f[n].DataType, f[n].Shape, f[n].GetBytes().ToArray()))).ToList();
            SafetensorsWriter.Write(st, kept);
            using (var ckpt = CheckpointFolder.Open(dir))
                Assert.Contains("model.layers.1.self_attn.k_norm.weight", Assert.Throws<CheckpointException>(() => DecoderLowering.Lower(ckpt)).Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void StructureJsonRoundTripsAndRejectsBadSchema()
    {
        var s = new DecoderStructure { Family = "mixtral", HiddenSize = 8 };
        s.Blocks.Add(new BlockStructure { Index = 3, Ffn = new FfnStructure { Kind = FfnKind.Moe, Moe = new MoeStructure { ExpertIds = [0, 5], TopK = 2 } } });
        string json = s.ToJson();
        Assert.Contains("\"kind\":\"moe\"", json);
        Assert.Contains("\"expert_ids\":[0,5]", json);
        var back = DecoderStructure.FromJson(json);
        Assert.Equal(json, back.ToJson());
        Assert.Throws<InvalidDataException>(() => DecoderStructure.FromJson(json.Replace("\"top_k\":2", "\"top_k\":3")));
        Assert.Throws<InvalidDataException>(() => DecoderStructure.FromJson(json.Replace("\"schema_version\":1", "\"schema_version\":9")));
    }

    [Fact]
    public void GeneratorIsDeterministicAndShardsLargeCheckpoints()
    {
        string a = Directory.CreateTempSubdirectory("onnxmoe-gen-").FullName, b = Directory.CreateTempSubdirectory("onnxmoe-gen-").FullName;
        try
        {
            var o = TinyCheckpoints.Options("qwen2-moe", DataType.BFloat16) with { ShardBytes = 40_000 };
            RandomCheckpointGenerator.Generate(a, o);
            RandomCheckpointGenerator.Generate(b, o);
            var shards = Directory.GetFiles(a, "*.safetensors").Order().ToArray();
            Assert.True(shards.Length > 1);
            Assert.True(File.Exists(Path.Combine(a, CheckpointFolder.IndexFileName)));
            foreach (var s in shards) Assert.Equal(File.ReadAllBytes(s), File.ReadAllBytes(Path.Combine(b, Path.GetFileName(s))));
            using var ckpt = CheckpointFolder.Open(a);
            var spec = ModelFamilies.ForConfig(ckpt.Config).ReadSpec(ckpt.Config);
            Assert.Equal(CheckpointLayout.ParameterCount(spec) * 2, ckpt.TotalTensorBytes);

            var sized = RandomCheckpointGenerator.Config(new MixtralFamily(), o with { NumLayers = null }, 1);
            Assert.NotNull(sized);
        }
        finally { Directory.Delete(a, true); Directory.Delete(b, true); }
    }
}
