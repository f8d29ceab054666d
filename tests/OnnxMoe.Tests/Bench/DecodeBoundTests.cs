using System.Text.RegularExpressions;
using OnnxMoe.Compiler.Bench;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx;
using OnnxMoe.Structure;
using OnnxMoe.Tests.Lowering;

namespace OnnxMoe.Tests.Bench;

/// <summary>The decode bound's bytes (<see cref="DecodeTraffic"/>) and the read-bandwidth probe.</summary>
public sealed partial class DecodeBoundTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-bound-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [GeneratedRegex(@"\.experts\.\d+\.")]
    private static partial Regex RoutedExpertWeight();

    [Theory]
    [InlineData("mixtral", "")]
    [InlineData("mixtral", "quantize-int4{block-size=16}")]
    [InlineData("deepseek-moe", "")]
    [InlineData("deepseek-moe", "prune-experts{experts=1:0}")]
    public void Bytes_per_token_match_a_count_over_the_checkpoints_initializer_names(string family, string pipeline)
    {
        var options = TinyCheckpoints.Options(family);
        var checkpoint = TinyCheckpoints.Create(family);
        string output = Path.Combine(_dir, family + pipeline.Length);
        try
        {
            // The standard form (the reference below reads the checkpoint's tensor names; the fused form has its own test below).
            CompileJob.Run(new CompileRequest { Checkpoint = checkpoint, Output = output, Pipeline = pipeline, Fuse = false });
        }
        finally
        {
            Directory.Delete(checkpoint, recursive: true);
        }
        var model = OnnxReader.Read(Path.Combine(output, "model.onnx"));
        var traffic = DecodeTraffic.Of(model);

        // Reference from the initializers' names (the checkpoint's: ...experts.{e}.w1.weight and its .q4/.scales/.zero_points),
        // the config's top-k and the experts left per layer, not from the graph's nodes or metadata.
        int layers = options.NumLayers!.Value;
        double dense = 0, experts = 0;
        long row = 0;
        foreach (var init in model.Graph.Initializers.Where(v => v.Uses.Count > 0))
        {
            long bytes = init.ConstValue!.ByteLength;
            if (init.Name == "model.embed_tokens.weight") row = bytes / options.VocabSize;
            else if (RoutedExpertWeight().IsMatch(init.Name))
            {
                string layer = Regex.Match(init.Name, @"layers\.(\d+)\.").Groups[1].Value;
                int left = model.Graph.Initializers.Where(v => v.Name.StartsWith($"model.layers.{layer}.", StringComparison.Ordinal) && RoutedExpertWeight().IsMatch(v.Name))
                    .Select(v => RoutedExpertWeight().Match(v.Name).Value).Distinct().Count();
                experts += bytes * (double)Math.Min(options.TopK, left) / left;
            }
            else dense += bytes;
        }
        Assert.True(experts > 0 && row > 0);
        Assert.Equal(dense, traffic.DenseWeightBytes, 6);
        Assert.Equal(experts, traffic.ExpertWeightBytes, 6);
        Assert.Equal(row, traffic.EmbeddingRowBytes);
        int headDim = options.HiddenSize / options.NumAttentionHeads;
        Assert.Equal((long)layers * 2 * options.NumKeyValueHeads * headDim * sizeof(float), traffic.KvBytesPerPosition);
        Assert.Equal(dense + experts + 2 * (row + 40.0 * traffic.KvBytesPerPosition), traffic.BytesPerStep(contextLength: 40, batch: 2), 6);
    }

    [Fact]
    public void Stacked_inputs_of_a_fused_QMoE_count_k_over_E_and_a_shared_initializer_counts_once()
    {
        var g = new Graph("fused");
        var ids = new Value("input_ids", new TensorType(DataType.Int64, [1, 1]));
        var pastKey = new Value("past_key_values.0.key", new TensorType(DataType.Float16, [1, 2, new Dim(null, "past"), 8]));
        var pastValue = new Value("past_key_values.0.value", new TensorType(DataType.Float16, [1, 2, new Dim(null, "past"), 8]));
        g.Inputs.AddRange([ids, pastKey, pastValue]);
        Value Init(string name, DataType type, params long[] shape)
        {
            var v = new Value(name, null, new InMemoryTensor(type, shape, new byte[type.ByteCount(shape.Aggregate(1L, (a, b) => a * b))]));
            g.Initializers.Add(v);
            return v;
        }
        var table = Init("embed", DataType.Float, 100, 16);
        var fc1 = Init("fc1", DataType.UInt8, 6, 32, 8);
        var fc1Scales = Init("fc1_scales", DataType.Float, 6, 32, 1);
        var fc2 = Init("fc2", DataType.UInt8, 6, 16, 8);
        var fc2Scales = Init("fc2_scales", DataType.Float, 6, 16, 1);
        var router = Init("router", DataType.Float, 16, 6);
        var embed = g.Append(new Node("", "Gather", [table, ids], 1, "/model/embed_tokens/Gather"));
        var logits = g.Append(new Node("", "MatMul", [embed.Outputs[0], router], 1, "/model/layers.0/moe/router/MatMul"));
        var moe = g.Append(new Node("com.microsoft", "QMoE", [embed.Outputs[0], logits.Outputs[0], fc1, fc1Scales, null, fc2, fc2Scales], 1, "/model/layers.0/moe/QMoE"));
        moe.SetAttribute(Ir.Attribute.Int("k", 2));
        var head = g.Append(new Node("", "MatMul", [moe.Outputs[0], router], 1, "/lm_head/MatMul"));   // the router again: counted once
        g.Outputs.Add(head.Outputs[0]);
        var model = new Model(g);
        new DecoderStructure
        {
            Family = "mixtral", NumKeyValueHeads = 2, HeadDim = 8, EmbeddingOutput = embed.Outputs[0].Name,
            Blocks = [new BlockStructure { Index = 0, Attention = new AttentionStructure { PastKey = pastKey.Name, PastValue = pastValue.Name } }],
        }.WriteTo(model);

        var traffic = DecodeTraffic.Of(model);

        Assert.Equal(16 * 6 * 4, traffic.DenseWeightBytes);
        Assert.Equal((6 * 32 * 8 + 6 * 32 * 4 + 6 * 16 * 8 + 6 * 16 * 4) * 2.0 / 6, traffic.ExpertWeightBytes, 9);
        Assert.Equal(6 * 32 * 8 + 6 * 32 * 4 + 6 * 16 * 8 + 6 * 16 * 4, traffic.ExpertWeightBytesStored);
        Assert.Equal(16 * 4, traffic.EmbeddingRowBytes);
        Assert.Equal(2 * 2 * 8 * 2, traffic.KvBytesPerPosition);
    }

    [Fact]
    public void A_graph_without_structure_metadata_is_refused() =>
        Assert.Throws<InvalidDataException>(() => DecodeTraffic.Of(new Model(new Graph("bare"))));

    [Fact]
    public void Bandwidth_probe_reads_the_whole_buffer_with_the_threads_asked_for()
    {
        var b = ReadBandwidth.Measure(32L << 20, threads: 2, passes: 2);
        Assert.Equal(2, b.Threads);
        Assert.True(b.BufferBytes > (31L << 20) && b.BufferBytes <= 32L << 20, $"buffer {b.BufferBytes}");
        Assert.InRange(b.BytesPerSecond, 1e8, 1e13);
    }
}
