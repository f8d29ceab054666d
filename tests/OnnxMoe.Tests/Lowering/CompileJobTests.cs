using System.Text.Json.Nodes;
using OnnxMoe.Checkpoints;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Runtime;
using OnnxMoe.Structure;

namespace OnnxMoe.Tests.Lowering;

/// <summary>
/// End to end through ONNX Runtime: compile each family under tests/data/families, run the artifact,
/// compare with the torch reference's golden logits. Tolerances: fp32 max abs diff 1e-4; fp16 artifact
/// (f16 weights and activations, norms/softmax/RoPE in f32) max abs diff 0.02 on logits of std ~2 (measured 4.2e-3).
/// </summary>
public sealed class CompileJobTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-compile-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static TheoryData<string> Families => new(FamilyData.Names.Concat(FamilyData.TrainedModels));

    private sealed class Decoder(InferenceSession session, DecoderStructure s, DataType kvType)
    {
        /// <summary>Runs one step; <paramref name="past"/> (owned by the caller) null means an empty cache.</summary>
        public RunResult Step(long[][] ids, long[][] mask, long[][] positions, RunResult? past)
        {
            int batch = ids.Length;
            var owned = new List<OrtValue>();
            OrtValue Make(long[][] rows)
            {
                var v = OrtValue.CreateTensor<long>(rows.SelectMany(r => r).ToArray(), [batch, rows[0].Length]);
                owned.Add(v);
                return v;
            }
            var feeds = new List<KeyValuePair<string, OrtValue>>
            {
                new("input_ids", Make(ids)), new("attention_mask", Make(mask)), new("position_ids", Make(positions)),
            };
            foreach (var b in s.Blocks)
            {
                foreach (var (pastName, presentName) in new[] { (b.Attention.PastKey, b.Attention.PresentKey), (b.Attention.PastValue, b.Attention.PresentValue) })
                {
                    OrtValue v;
                    if (past != null) v = past[presentName];
                    else { v = OrtValue.Allocate(kvType, [batch, s.NumKeyValueHeads, 0, s.HeadDim]); owned.Add(v); }
                    feeds.Add(new(pastName, v));
                }
            }
            try { return session.Run(feeds); }
            finally { foreach (var v in owned) v.Dispose(); }
        }
    }

    private string Compile(string family, DataType type = DataType.Float)
    {
        string output = Path.Combine(_dir, family + "-" + type.Name());
        var report = CompileJob.Run(new CompileRequest { Checkpoint = FamilyData.Dir(family), Output = output, WeightType = type });
        Assert.True(report.Parameters.Total > 0);
        return output;
    }

    private static double MaxDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        Assert.Equal(a.Length, b.Length);
        double m = 0;
        for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs(a[i] - b[i]));
        return m;
    }

    private static long[] Ones(int n) => Enumerable.Repeat(1L, n).ToArray();
    private static long[] Range(int from, int to) => Enumerable.Range(from, to - from).Select(i => (long)i).ToArray();

    [Theory]
    [MemberData(nameof(Families))]
    public void CompiledModelMatchesGoldenLogitsIncrementallyAndWithLeftPadding(string family)
    {
        string output = Compile(family);
        foreach (var f in new[] { "model.onnx", "model.onnx.data", "genai_config.json", "compile_report.json" })
            Assert.True(File.Exists(Path.Combine(output, f)), $"{f} missing");
        Assert.Empty(Directory.GetDirectories(_dir, ".*"));
        var report = CompileReport.FromJson(File.ReadAllText(Path.Combine(output, "compile_report.json")));
        // The default compile ends with pass fuse (fused MoE and attention ops), so the golden check below covers the fused form.
        Assert.Equal("fuse{moe=quantized,attention=true,norm=true,skip-norm=true}", report.Pipeline);
        Assert.Equal(report.Parameters.Total, report.Parameters.Embedding + report.Parameters.Attention + report.Parameters.Norms + report.Parameters.Router
            + report.Parameters.RoutedExperts + report.Parameters.SharedExperts + report.Parameters.DenseMlp + report.Parameters.LmHead);
        Assert.True(report.Parameters.RoutedExperts > 0);
        var genai = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "genai_config.json")))!;
        Assert.Equal("model.onnx", (string)genai["model"]!["decoder"]!["filename"]!);
        Assert.Equal("decoder", (string)genai["model"]!["type"]!);
        Assert.True((bool)genai["search"]!["past_present_share_buffer"]!);
        Assert.Equal(0, (int)genai["model"]!["decoder"]!["session_options"]!["intra_op_num_threads"]!);
        // Reading and writing are one class: what compile wrote reads back and writes out unchanged.
        string written = File.ReadAllText(Path.Combine(output, "genai_config.json"));
        Assert.Equal(written, OnnxMoe.Inference.Models.GenAiConfig.Load(Path.Combine(output, "genai_config.json")).ToJson() + "\n");

        var model = Onnx.OnnxReader.Read(Path.Combine(output, "model.onnx"));
        var s = DecoderStructure.Read(model);
        using var session = new InferenceSession(Path.Combine(output, "model.onnx"));
        var dec = new Decoder(session, s, DataType.Float);
        var prompts = FamilyData.Prompts(family);
        foreach (var (ids, golden, _) in prompts)
        {
            using var r = dec.Step([ids], [Ones(ids.Length)], [Range(0, ids.Length)], null);
            double d = MaxDiff(r["logits"].GetSpan<float>(), golden);
            Assert.True(d <= 1e-4, $"{family}: ORT logits differ from golden by {d:E3} on a {ids.Length}-token prompt");
        }

        // Incremental decoding with the KV cache equals the full-sequence logits.
        var (pIds, pGolden, vocab) = prompts[^1];
        int n = pIds.Length, split = n / 2;
        var step = dec.Step([pIds[..split]], [Ones(split)], [Range(0, split)], null);
        for (int t = split; t < n; t++)
        {
            var next = dec.Step([[pIds[t]]], [Ones(t + 1)], [[t]], step);
            step.Dispose();
            step = next;
            double d = MaxDiff(step["logits"].GetSpan<float>(), pGolden.AsSpan(t * (int)vocab, (int)vocab));
            Assert.True(d <= 1e-4, $"{family}: token {t} decoded with the KV cache differs by {d:E3}");
        }
        step.Dispose();

        // Batch with left padding equals the unpadded runs.
        var (aIds, aGolden, _) = prompts[^1];
        var (bIds, bGolden, _) = prompts[0];
        int len = aIds.Length, pad = len - bIds.Length;
        var padded = Enumerable.Repeat(0L, pad).Concat(bIds).ToArray();
        var mask = Enumerable.Range(0, len).Select(i => i < pad ? 0L : 1L).ToArray();
        var pos = Enumerable.Range(0, len).Select(i => (long)Math.Max(0, i - pad)).ToArray();
        using (var r = dec.Step([aIds, padded], [Ones(len), mask], [Range(0, len), pos], null))
        {
            var all = r["logits"].GetSpan<float>();
            int row = len * (int)vocab;
            Assert.True(MaxDiff(all[..row], aGolden) <= 1e-4, $"{family}: unpadded row of the batch differs");
            double d = MaxDiff(all.Slice(row + pad * (int)vocab, bIds.Length * (int)vocab), bGolden);
            Assert.True(d <= 1e-4, $"{family}: left-padded row differs from its unpadded run by {d:E3}");
        }
    }

    [Theory]
    [InlineData("mixtral")]
    [InlineData("qwen2_moe")]
    public void Fp16ArtifactIsCloseToGolden(string family)
    {
        string output = Compile(family, DataType.Float16);
        var model = Onnx.OnnxReader.Read(Path.Combine(output, "model.onnx"));
        var s = DecoderStructure.Read(model);
        Assert.Equal("f16", s.ComputeType);
        using var session = new InferenceSession(Path.Combine(output, "model.onnx"));
        var dec = new Decoder(session, s, DataType.Float16);
        foreach (var (ids, golden, _) in FamilyData.Prompts(family))
        {
            using var r = dec.Step([ids], [Ones(ids.Length)], [Range(0, ids.Length)], null);
            double d = MaxDiff(r["logits"].GetSpan<float>(), golden);
            Assert.True(d <= 0.02, $"{family} fp16: logits differ from golden by {d:E3} (tolerance 0.02; measured about 4e-3)");
        }
    }

    private string CopyFamily(string family)
    {
        string dir = Path.Combine(_dir, "src-" + family);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(FamilyData.Dir(family))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    private void AssertFailsCleanly(string source, string expectedInMessage)
    {
        string output = Path.Combine(_dir, "out");
        var e = Assert.ThrowsAny<UserErrorException>(() => CompileJob.Run(new CompileRequest { Checkpoint = source, Output = output }));
        Assert.Contains(expectedInMessage, e.Message);
        Assert.False(Directory.Exists(output), "a failed compile left an output folder");
        Assert.Empty(Directory.GetDirectories(_dir, ".out*"));
    }

    [Fact]
    public void MalformedCheckpointsGiveClearErrorsAndNoOutputFolder()
    {
        // Truncated safetensors.
        string src = CopyFamily("olmoe");
        string st = Path.Combine(src, "model.safetensors");
        var bytes = File.ReadAllBytes(st);
        File.WriteAllBytes(st, bytes[..^10]);
        AssertFailsCleanly(src, "model.safetensors");

        // Bad header (length prefix pointing past the file).
        bytes.CopyTo(bytes, 0);
        var bad = (byte[])bytes.Clone();
        BitConverter.GetBytes((ulong)bytes.Length * 2).CopyTo(bad, 0);
        File.WriteAllBytes(st, bad);
        AssertFailsCleanly(src, "header");

        // Missing tensor.
        List<KeyValuePair<string, Tensor>> kept;
        File.WriteAllBytes(st, bytes);
        using (var f = SafetensorsFile.Open(st))
            kept = f.TensorNames.Where(n => n != "model.layers.1.mlp.experts.3.down_proj.weight")
                .Select(n => new KeyValuePair<string, Tensor>(n, new InMemoryTensor(f[n].DataType, f[n].Shape, f[n].GetBytes().ToArray()))).ToList();
        SafetensorsWriter.Write(st, kept);
        AssertFailsCleanly(src, "model.layers.1.mlp.experts.3.down_proj.weight");

        // Wrong shape (config disagrees with the weights).
        File.WriteAllBytes(st, bytes);
        string cfg = Path.Combine(src, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(cfg))!;
        json["num_key_value_heads"] = 1;
        File.WriteAllText(cfg, json.ToJsonString());
        AssertFailsCleanly(src, "k_proj.weight");

        // Unknown family.
        json = JsonNode.Parse(File.ReadAllText(Path.Combine(FamilyData.Dir("olmoe"), "config.json")))!;
        json["architectures"] = new JsonArray("GPT2LMHeadModel");
        File.WriteAllText(cfg, json.ToJsonString());
        AssertFailsCleanly(src, "MixtralForCausalLM");
    }

    [Fact]
    public void ExistingOutputIsKeptUnlessOverwriting()
    {
        string output = Path.Combine(_dir, "existing");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "keep.txt"), "x");
        Assert.ThrowsAny<UserErrorException>(() => CompileJob.Run(new CompileRequest { Checkpoint = FamilyData.Dir("mixtral"), Output = output }));
        Assert.True(File.Exists(Path.Combine(output, "keep.txt")));
        CompileJob.Run(new CompileRequest { Checkpoint = FamilyData.Dir("mixtral"), Output = output, Overwrite = true });
        Assert.False(File.Exists(Path.Combine(output, "keep.txt")));
        Assert.True(File.Exists(Path.Combine(output, "model.onnx")));
    }
}
