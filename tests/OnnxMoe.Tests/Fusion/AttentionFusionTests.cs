using OnnxMoe.Ir;
using OnnxMoe.Onnx;
using OnnxMoe.Runtime;
using OnnxMoe.Structure;
using OnnxMoe.Tests.Lowering;
using OnnxMoe.Tests.Trimming;
using static OnnxMoe.Tests.Trimming.TrimmingFixture;

namespace OnnxMoe.Tests.Fusion;

/// <summary>
/// Pass fuse (attention and MoE together) against the standard form, both through ORT on the five random family
/// checkpoints: a batch of two prompts, the second left-padded, prefilled in one run and then decoded token by token
/// with the KV cache. Every real (unpadded) position's fp32 logits must agree within 1e-4 (max abs).
/// </summary>
public sealed class AttentionFusionTests
{
    private const double Tolerance = 1e-4;

    public static TheoryData<string> Families => new(FamilyData.Names);

    [Theory]
    [MemberData(nameof(Families))]
    public void Fused_decoder_equals_the_standard_form_with_left_padding_and_kv_cache(string family)
    {
        using var standard = new LoweredCheckpoint(FamilyData.Dir(family));
        using var fused = new LoweredCheckpoint(FamilyData.Dir(family));
        var report = RunPipeline(fused.Model, "fuse");
        var s = fused.Structure;
        Assert.Equal(s.NumLayers, report.Counters.GetValueOrDefault("attention-fused"));
        Assert.All(s.Blocks, b => Assert.NotNull(b.Attention.FusedNode));
        Assert.DoesNotContain(fused.Model.Graph.Nodes, n => n.OpType == "Concat" && n.Name.Contains("/kv_cache/", StringComparison.Ordinal));
        // RoPE runs inside GroupQueryAttention (do_rotary), from the shared cos/sin caches.
        Assert.DoesNotContain(fused.Model.Graph.Nodes, n => n.OpType == "RotaryEmbedding");
        Assert.All(fused.Model.Graph.Nodes.Where(n => n.OpType == "GroupQueryAttention"), n =>
        {
            Assert.Equal(1, n.GetInt("do_rotary", 0));
            Assert.Equal(["/model/rotary_emb/cos_cache", "/model/rotary_emb/sin_cache"], n.Inputs.Skip(7).Take(2).Select(v => v?.Name));
        });
        // The projections feed GroupQueryAttention (RoPE inside) as they are; only Qwen3's per-head q/k norm needs
        // [B,S,H,D] and back (two reshapes each for q and k).
        int reshapes = fused.Model.Graph.Nodes.Count(n => n.OpType == "Reshape" && n.Name.Contains("/attn/", StringComparison.Ordinal));
        Assert.Equal(family == "qwen3_moe" ? 4 * s.NumLayers : 0, reshapes);

        var expected = Decode(standard.Model);
        var actual = Decode(fused.Model);
        Assert.Equal(expected.Count, actual.Count);
        double worst = 0;
        for (int i = 0; i < expected.Count; i++) worst = Math.Max(worst, MaxAbsDiff(expected[i], actual[i]));
        Assert.True(worst <= Tolerance, $"{family}: max abs logit difference {worst:E3}");
    }

    /// <summary>Block Drop and Layer Drop remove fused nodes and their KV cache as they remove standard ones: dropping after fuse equals
    /// dropping before it, the first, a middle and the last block, MoE layers before and after them (each residual Add a skip norm
    /// holds is split out for the pass and folded again after it: the skip norms are the same as fusing after the drops gives).
    /// Passes that need the standard form refuse a fused model in one line naming pass fuse.</summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void Dropping_after_fuse_equals_dropping_before(string family)
    {
        using var standard = new LoweredCheckpoint(FamilyData.Dir(family));
        var s = standard.Structure;
        var moeLayers = s.Blocks.Where(b => b.Ffn is { Kind: FfnKind.Moe }).Select(b => b.Index).ToList();
        var drops = new List<string>
        {
            $"drop-blocks{{blocks={s.Blocks[0].Index}}},drop-moe-layers{{layers={moeLayers[^1]}}}",
            $"drop-moe-layers{{layers={moeLayers[0]}}},drop-blocks{{blocks={s.Blocks[^1].Index}}}",
        };
        if (s.NumLayers > 2) drops.Add($"drop-blocks{{blocks={s.Blocks[1].Index}}}");
        foreach (var drop in drops)
        {
            using var before = new LoweredCheckpoint(FamilyData.Dir(family));
            using var after = new LoweredCheckpoint(FamilyData.Dir(family));
            RunPipeline(before.Model, drop + ",fuse");
            RunPipeline(after.Model, "fuse," + drop);
            var left = after.Structure;
            Assert.Equal(s.NumLayers - 1, left.NumLayers);
            Assert.All(left.Blocks, b => Assert.NotNull(b.Attention.FusedNode));
            Assert.Equal(before.Structure.ToJson(), left.ToJson());
            Assert.Equal(SkipNorms(before.Model), SkipNorms(after.Model));
            Assert.Equal(left.Blocks.Count(b => b.Ffn != null) + left.NumLayers, SkipNorms(after.Model).Count);
            var expected = Decode(before.Model);
            var actual = Decode(after.Model);
            double worst = expected.Zip(actual).Max(p => MaxAbsDiff(p.First, p.Second));
            Assert.True(worst <= Tolerance, $"{family}, {drop}: max abs logit difference {worst:E3}");
        }

        using var fused = new LoweredCheckpoint(FamilyData.Dir(family));
        RunPipeline(fused.Model, "fuse{moe=all}");
        var e = Assert.Throws<OnnxMoe.Passes.PassException>(() => RunPipeline(fused.Model, "prune-experts{keep=1}"));
        Assert.Contains("run prune-experts before fuse", e.Message);
        e = Assert.Throws<OnnxMoe.Passes.PassException>(() => RunPipeline(fused.Model, "quantize-int4"));
        Assert.Contains("run quantize-int4 before fuse", e.Message);
    }

    /// <summary>Each skip norm: its name, inputs and outputs by name.</summary>
    private static List<string> SkipNorms(Model model) => model.Graph.Nodes.Where(n => n.OpType == "SkipSimplifiedLayerNormalization")
        .Select(n => $"{n.Name}({string.Join(",", n.Inputs.Select(v => v?.Name))}) -> {string.Join(",", n.Outputs.Select(v => v.Name))}").Order(StringComparer.Ordinal).ToList();

    /// <summary>fp16 artifacts: the fused kernels (ORT's MoE runs its GEMMs in f16, attention in f32) against the standard form,
    /// both f16; measured max abs logit difference 2.8e-3 to 6.8e-3 on these models, tested at 2e-2 (the lowering's f16 tolerance).</summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void Fused_fp16_decoder_is_close_to_the_standard_fp16_form(string family)
    {
        var options = new OnnxMoe.Lowering.LoweringOptions { WeightType = DataType.Float16 };
        using var standard = new LoweredCheckpoint(FamilyData.Dir(family), options);
        using var fused = new LoweredCheckpoint(FamilyData.Dir(family), options);
        RunPipeline(fused.Model, "fuse");
        Assert.All(fused.Structure.Blocks, b => Assert.NotNull(b.Attention.FusedNode));
        var expected = Decode(standard.Model);
        var actual = Decode(fused.Model);
        double worst = expected.Zip(actual).Max(p => MaxAbsDiff(p.First, p.Second));
        Assert.True(worst <= 2e-2, $"{family}: max abs logit difference {worst:E3}");
    }

    /// <summary>Row 0: 9 tokens; row 1: 6 tokens left-padded by 3. Prefill of the first 6 columns, then 3 single-token steps.
    /// Returns the logits of every real position, in order (prefill row-major, then each step).</summary>
    internal static List<float[]> Decode(Model model)
    {
        var s = DecoderStructure.Read(model);
        int vocab = s.VocabSize, total = 9, prefill = 6, pad = 3;
        var rng = new Random(5);
        var ids = new long[2, total];
        for (int r = 0; r < 2; r++)
            for (int t = 0; t < total; t++) ids[r, t] = r == 1 && t < pad ? 0 : rng.Next(vocab);
        long Mask(int r, int t) => r == 1 && t < pad ? 0 : 1;
        long Position(int r, int t) => r == 1 ? Math.Max(0, t - pad) : t;

        var dir = Directory.CreateTempSubdirectory("onnxmoe-fuse-").FullName;
        var results = new List<float[]>();
        try
        {
            var path = Path.Combine(dir, "model.onnx");
            OnnxWriter.Write(model, path);
            using var session = new InferenceSession(path);
            var cacheType = s.ComputeType == "f16" ? DataType.Float16 : DataType.Float;
            var past = s.Blocks.SelectMany(b => new[] { b.Attention.PastKey, b.Attention.PastValue })
                .ToDictionary(n => n, _ => OrtValue.Allocate(cacheType, [2, s.NumKeyValueHeads, 0, s.HeadDim]));
            int done = 0;
            foreach (int len in new[] { prefill, 1, 1, 1 })
            {
                int end = done + len;
                var feeds = new List<KeyValuePair<string, OrtValue>>
                {
                    new("input_ids", Tensor2(ids, 0, done, len)),
                    new("attention_mask", Tensor2(Fill(total, Mask), 0, 0, end)),
                    new("position_ids", Tensor2(Fill(total, Position), 0, done, len)),
                };
                feeds.AddRange(past.Select(kv => new KeyValuePair<string, OrtValue>(kv.Key, kv.Value)));
                var names = new List<string> { "logits" };
                names.AddRange(s.Blocks.SelectMany(b => new[] { b.Attention.PresentKey, b.Attention.PresentValue }));
                using (var r = session.Run(feeds, names))
                {
                    var logits = r[0].ToFloatArray();
                    for (int row = 0; row < 2; row++)
                        for (int t = 0; t < len; t++)
                            if (Mask(row, done + t) == 1) results.Add(logits.AsSpan((row * len + t) * vocab, vocab).ToArray());
                    foreach (var v in feeds.Take(3)) v.Value.Dispose();
                    foreach (var v in past.Values) v.Dispose();
                    int k = 1;
                    foreach (var b in s.Blocks)
                    {
                        past[b.Attention.PastKey] = r.Detach(names[k++]);
                        past[b.Attention.PastValue] = r.Detach(names[k++]);
                    }
                }
                done = end;
            }
            foreach (var v in past.Values) v.Dispose();
        }
        finally
        {
            Directory.Delete(dir, true);
        }
        return results;
    }

    private static long[,] Fill(int total, Func<int, int, long> f)
    {
        var a = new long[2, total];
        for (int r = 0; r < 2; r++)
            for (int t = 0; t < total; t++) a[r, t] = f(r, t);
        return a;
    }

    private static OrtValue Tensor2(long[,] a, int row0, int col0, int cols)
    {
        var data = new long[2 * cols];
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < cols; c++) data[r * cols + c] = a[r + row0, col0 + c];
        return OrtValue.CreateTensor<long>(data.AsMemory(), [2, cols]);
    }
}
