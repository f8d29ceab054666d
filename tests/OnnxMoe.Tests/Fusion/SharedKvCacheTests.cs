using OnnxMoe.Inference.Generation;
using OnnxMoe.Onnx;
using OnnxMoe.Runtime;
using OnnxMoe.Tests.Lowering;
using OnnxMoe.Tests.Trimming;
using static OnnxMoe.Tests.Trimming.TrimmingFixture;

namespace OnnxMoe.Tests.Fusion;

/// <summary>
/// OrtDecoder's shared KV buffer (GroupQueryAttention writing the new positions into the buffer it reads the past from)
/// against the same fused graph run with a fresh present per step, on the five random family checkpoints: a batch of two,
/// the second row left-padded, prefilled and decoded past the buffer's first capacity (so it grows once), then branched
/// into three rows (SelectRows) that take a three-token continuation (the row-by-row path) and one more step.
/// The logits must agree within 1e-5 (max abs); the two modes run the same kernels on the same values.
/// </summary>
public sealed class SharedKvCacheTests
{
    private const double Tolerance = 1e-5;

    public static TheoryData<string> Families => new(FamilyData.Names);

    [Theory]
    [MemberData(nameof(Families))]
    public void Shared_buffer_decodes_as_fresh_presents_do(string family)
    {
        using var checkpoint = new LoweredCheckpoint(FamilyData.Dir(family));
        RunPipeline(checkpoint.Model, "fuse");
        var dir = Directory.CreateTempSubdirectory("onnxmoe-kv-").FullName;
        try
        {
            var path = Path.Combine(dir, "model.onnx");
            OnnxWriter.Write(checkpoint.Model, path);
            using var session = new InferenceSession(path);
            using var concat = new OrtDecoder(session, kvCache: KvCacheMode.Concat);
            using var shared = new OrtDecoder(session);
            Assert.Equal(KvCacheMode.Shared, shared.KvCache);
            var expected = Decode(concat);
            var actual = Decode(shared);
            Assert.Equal(expected.Count, actual.Count);
            double worst = expected.Zip(actual).Max(p => MaxAbsDiff(p.First, p.Second));
            Assert.True(worst <= Tolerance, $"{family}: max abs logit difference {worst:E3}");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Standard_attention_keeps_concatenated_presents_and_refuses_a_shared_buffer()
    {
        using var checkpoint = new LoweredCheckpoint(FamilyData.Dir(FamilyData.Names.First()));
        var dir = Directory.CreateTempSubdirectory("onnxmoe-kv-").FullName;
        try
        {
            var path = Path.Combine(dir, "model.onnx");
            OnnxWriter.Write(checkpoint.Model, path);
            using var session = new InferenceSession(path);
            using (var auto = new OrtDecoder(session)) Assert.Equal(KvCacheMode.Concat, auto.KvCache);
            var e = Assert.Throws<ArgumentException>(() => new OrtDecoder(session, kvCache: KvCacheMode.Shared));
            Assert.Contains("every attention fused", e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>Row 0: all real tokens; row 1: left-padded by 5. Prefill 70, then 130 single steps (past the first capacity,
    /// 192 positions), then rows [1, 0, 1] take 3 tokens and 1 more. Returns the logits of every real position in order.</summary>
    private static List<float[]> Decode(OrtDecoder decoder)
    {
        int vocab = decoder.VocabSize, pad = 5, prefill = 70, steps = 130;
        var rng = new Random(17);
        var results = new List<float[]>();
        using var state = decoder.CreateState(2);
        var mask = new List<long>[] { [], [] };
        int[] position = [0, 0];

        void Step(IDecoderState st, int[] rows, int len, List<long>[] masks, int[] positions)
        {
            int b = rows.Length;
            var ids = new long[b * len];
            var pos = new long[b * len];
            for (int r = 0; r < b; r++)
                for (int t = 0; t < len; t++)
                {
                    bool padded = rows[r] == 1 && masks[r].Count < pad;
                    ids[r * len + t] = padded ? 0 : rng.Next(vocab);
                    masks[r].Add(padded ? 0 : 1);
                    pos[r * len + t] = padded ? 0 : positions[r]++;
                }
            var flatMask = masks.SelectMany(m => m).ToArray();
            var logits = st.Forward(ids, len, flatMask, pos);
            for (int r = 0; r < b; r++)
                for (int t = 0; t < len; t++)
                    if (masks[r][masks[r].Count - len + t] == 1) results.Add(logits.Slice((r * len + t) * vocab, vocab).ToArray());
        }

        Step(state, [0, 1], prefill, mask, position);
        for (int i = 0; i < steps; i++) Step(state, [0, 1], 1, mask, position);
        using var branched = state.SelectRows([1, 0, 1]);
        var masks = new[] { new List<long>(mask[1]), new List<long>(mask[0]), new List<long>(mask[1]) };
        int[] positions = [position[1], position[0], position[1]];
        Step(branched, [1, 0, 1], 3, masks, positions);
        Step(branched, [1, 0, 1], 1, masks, positions);
        return results;
    }
}
