using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Passes.Quantization;

namespace OnnxMoe.Tests.Quantization;

public class QuantizeInt4RewriteTests
{
    private const int Hidden = 40; // not a multiple of the block sizes used: the last block is padded

    /// <summary>Counts how often its bytes are read, to prove quantization is deferred to the writer.</summary>
    private sealed class CountingTensor(InMemoryTensor inner) : Tensor(inner.DataType, inner.Shape)
    {
        public int Reads;
        public override bool IsMaterialized => true;
        public override ReadOnlySpan<byte> GetBytes()
        {
            Reads++;
            return inner.GetBytes();
        }
        public override void WriteTo(Stream destination)
        {
            Reads++;
            // Odd chunks so that elements and rows straddle writes.
            var bytes = inner.GetBytes().ToArray();
            for (int i = 0; i < bytes.Length; i += 7) destination.Write(bytes, i, Math.Min(7, bytes.Length - i));
        }
    }

    private sealed record Fixture(Model Model, Dictionary<string, Node> Nodes, Dictionary<string, CountingTensor> Weights, Dictionary<string, float[]> WeightData, Node Consumer);

    /// <summary>
    /// x [1, 3, 40] feeding decoder-named MatMuls (attention, router, expert, shared expert, dense MLP,
    /// lm_head) whose outputs are summed into the graph output.
    /// </summary>
    private static Fixture Build(DataType type = DataType.Float, int outWidth = 7)
    {
        var g = new Graph("decoder");
        var x = new Value("x", new TensorType(type, [1, 3, Hidden]));
        g.Inputs.Add(x);
        string[] names =
        [
            "/model/layers.0/attn/q_proj/MatMul",
            "/model/layers.0/moe/router/MatMul",
            "/model/layers.0/moe/experts.0/w1/MatMul",
            "/model/layers.0/moe/shared_experts/w2/MatMul",
            "/model/layers.1/mlp/w3/MatMul",
            "/lm_head/MatMul",
        ];
        var rng = new Random(11);
        var nodes = new Dictionary<string, Node>();
        var weights = new Dictionary<string, CountingTensor>();
        var data = new Dictionary<string, float[]>();
        Value? sum = null;
        foreach (var name in names)
        {
            string wName = name.Replace("/MatMul", ".weight").TrimStart('/').Replace('/', '.');
            var w = ScalarReference.RandomWeight(rng, Hidden, outWidth);
            data[wName] = w;
            var raw = type == DataType.Float16
                ? InMemoryTensor.FromHalves([Hidden, outWidth], w.Select(v => (Half)v).ToArray())
                : InMemoryTensor.FromFloats([Hidden, outWidth], w);
            var t = new CountingTensor(raw) { Name = wName };
            weights[wName] = t;
            var wv = g.AddInitializer(new Value(wName, null, t));
            var y = new Value(name + "_output_0", new TensorType(type, [1, 3, outWidth]));
            nodes[name] = g.Append(new Node("", "MatMul", [x, wv], [y], name));
            if (sum == null) sum = y;
            else
            {
                var s = new Value($"sum{nodes.Count}", new TensorType(type, [1, 3, outWidth]));
                g.Append(new Node("", "Add", [sum, y], [s], $"/sum{nodes.Count}/Add"));
                sum = s;
            }
        }
        g.Outputs.Add(sum!);
        var model = new Model(g);
        model.SetOpset("", 21);
        var consumer = g.Nodes.First(n => n.OpType == "Add");
        return new Fixture(model, nodes, weights, data, consumer);
    }

    private static Node NodeNamed(Model m, string name) => m.Graph.Nodes.Single(n => n.Name == name);

    [Fact]
    public void Default_options_quantize_decoder_linears_and_keep_router_and_lm_head()
    {
        var f = Build();
        var result = new QuantizeInt4Rewrite(new QuantizeInt4Options()).Apply(f.Model);

        Assert.True(result.Changed);
        Assert.Equal(4, result.MatMulsQuantized);
        Assert.Empty(result.Skipped);
        var ops = f.Model.Graph.Nodes.Where(n => n.OpType is "MatMul" or "MatMulNBits").Select(n => n.Name).OrderBy(s => s, StringComparer.Ordinal);
        Assert.Equal(new[]
        {
            "/lm_head/MatMul",
            "/model/layers.0/attn/q_proj/MatMulNBits",
            "/model/layers.0/moe/experts.0/w1/MatMulNBits",
            "/model/layers.0/moe/router/MatMul",
            "/model/layers.0/moe/shared_experts/w2/MatMulNBits",
            "/model/layers.1/mlp/w3/MatMulNBits",
        }, ops);
        Assert.All(f.Model.Graph.Nodes.Where(n => n.OpType == "MatMulNBits"), n => Assert.Equal(4, n.GetInt("accuracy_level", -1)));   // int8 activations on CPU
        Assert.Equal(1, f.Model.GetOpset("com.microsoft"));
        Assert.Equal(21, f.Model.GetOpset(""));
    }

    [Fact]
    public void Rewired_node_has_MatMulNBits_inputs_attributes_and_keeps_the_output_name()
    {
        var f = Build();
        var oldNode = f.Nodes["/model/layers.0/moe/experts.0/w1/MatMul"];
        var oldOutput = oldNode.Outputs[0];
        var reader = oldOutput.Uses.Single().Node;
        new QuantizeInt4Rewrite(new QuantizeInt4Options { BlockSize = 16, AccuracyLevel = 1 }).Apply(f.Model);

        var n = NodeNamed(f.Model, "/model/layers.0/moe/experts.0/w1/MatMulNBits");
        Assert.Equal("com.microsoft", n.Domain);
        Assert.Same(f.Model.Graph.Inputs[0], n.Inputs[0]);
        Assert.Equal(4, n.Inputs.Count);
        Assert.Equal(Hidden, n.GetInt("K", -1));
        Assert.Equal(7, n.GetInt("N", -1));
        Assert.Equal(4, n.GetInt("bits", -1));
        Assert.Equal(16, n.GetInt("block_size", -1));
        Assert.Equal(1, n.GetInt("accuracy_level", -1));
        Assert.Equal(new long[] { 7, 3, 8 }, n.Inputs[1]!.ConstValue!.Shape);
        Assert.Equal(DataType.UInt8, n.Inputs[1]!.ConstValue!.DataType);
        Assert.Equal(new long[] { 7, 3 }, n.Inputs[2]!.ConstValue!.Shape);
        Assert.Equal(DataType.Float, n.Inputs[2]!.ConstValue!.DataType);
        Assert.Equal(new long[] { 7, 2 }, n.Inputs[3]!.ConstValue!.Shape);
        // The reader of the old output now reads the new node's output, by identity; name and type are kept.
        Assert.Null(oldNode.Graph);
        Assert.Same(n.Outputs[0], reader.Inputs.Single(v => v!.Producer == n));
        Assert.Equal(oldOutput.Name, n.Outputs[0].Name);
        Assert.Equal(oldOutput.Type, n.Outputs[0].Type);
        // The float weight is gone; the packed ones sit where it was.
        Assert.Null(f.Model.Graph.FindInitializer("model.layers.0.moe.experts.0.w1.weight"));
        Assert.Contains(n.Inputs[1]!, f.Model.Graph.Initializers);
        Assert.Equal("model.layers.0.moe.experts.0.w1.weight.q4", n.Inputs[1]!.Name);
        Assert.Equal("model.layers.0.moe.experts.0.w1.weight.scales", n.Inputs[2]!.Name);
        Assert.Equal("model.layers.0.moe.experts.0.w1.weight.zero_points", n.Inputs[3]!.Name);
    }

    [Fact]
    public void Weights_are_read_only_when_the_packed_tensors_are_asked_for_and_match_the_quantizer()
    {
        var f = Build();
        var format = new BlockQuantFormat(4, 32);
        new QuantizeInt4Rewrite(new QuantizeInt4Options { BlockSize = 32 }).Apply(f.Model);
        Assert.All(f.Weights.Values, w => Assert.Equal(0, w.Reads));

        const string wName = "model.layers.1.mlp.w3.weight";
        var n = NodeNamed(f.Model, "/model/layers.1/mlp/w3/MatMulNBits");
        var expected = BlockQuantizer.Quantize(ScalarReference.Transpose(f.WeightData[wName], Hidden, 7), 7, Hidden, format);
        Assert.Equal(expected.PackedCodes, n.Inputs[1]!.ConstValue!.GetBytes().ToArray());
        Assert.Equal(expected.ScaleBytes(), n.Inputs[2]!.ConstValue!.GetBytes().ToArray());
        Assert.Equal(expected.PackedZeroPoints, n.Inputs[3]!.ConstValue!.GetBytes().ToArray());
        // One read served all three tensors.
        Assert.Equal(1, f.Weights[wName].Reads);
    }

    [Fact]
    public void Fp16_activations_get_fp16_scales_symmetric_gets_no_zero_points()
    {
        var f = Build(DataType.Float16);
        var result = new QuantizeInt4Rewrite(new QuantizeInt4Options { Symmetric = true, Bits = 8, BlockSize = 16 }).Apply(f.Model);
        var n = NodeNamed(f.Model, "/model/layers.0/attn/q_proj/MatMulNBits");
        Assert.Equal(3, n.Inputs.Count);
        Assert.Equal(8, n.GetInt("bits", -1));
        var scales = n.Inputs[2]!.ConstValue!;
        Assert.Equal(DataType.Float16, scales.DataType);
        Assert.Equal(new long[] { 7, 3, 16 }, n.Inputs[1]!.ConstValue!.Shape);

        // Dequantized through the scalar reference, every weight is within half a (stored) scale.
        const string wName = "model.layers.0.attn.q_proj.weight";
        var stored = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(scales.GetBytes()).ToArray().Select(h => (float)h).ToArray();
        var back = ScalarReference.Dequantize(n.Inputs[1]!.ConstValue!.GetBytes().ToArray(), stored, null, Hidden, 7, 8, 16);
        var w = f.WeightData[wName].Select(v => (float)(Half)v).ToArray();
        for (int i = 0; i < w.Length; i++)
            Assert.True(Math.Abs(w[i] - back[i]) <= stored[(i % 7) * 3 + (i / 7) / 16] / 2 * 1.000001f + 1e-6f * Math.Abs(w[i]), $"element {i}");
        // Counters: f16 weights 40x7x2 bytes each; 8-bit codes 7x3x16 plus f16 scales 7x3x2.
        Assert.Equal(4 * Hidden * 7 * 2, result.BytesBefore);
        Assert.Equal(4 * (7 * 3 * 16 + 7 * 3 * 2), result.BytesAfter);
    }

    [Fact]
    public void Targets_select_by_node_name()
    {
        var f = Build();
        var r = new QuantizeInt4Rewrite(new QuantizeInt4Options { Targets = QuantizeTargets.Experts }).Apply(f.Model);
        Assert.Equal(2, r.MatMulsQuantized);
        Assert.Equal(2, f.Model.Graph.Nodes.Count(n => n.OpType == "MatMulNBits" && n.Name.Contains("experts")));

        var g = Build();
        var a = new QuantizeInt4Rewrite(new QuantizeInt4Options { Targets = QuantizeInt4Options.ParseTargets("attention,mlp") }).Apply(g.Model);
        Assert.Equal(4, a.MatMulsQuantized);
    }

    [Fact]
    public void Exclude_globs_replace_the_defaults()
    {
        var f = Build();
        var r = new QuantizeInt4Rewrite(new QuantizeInt4Options { Exclude = ["/model/layers.0/*", "/lm_head/"] }).Apply(f.Model);
        // Only layer 1's MLP is left; the router is no longer excluded but lies in layer 0.
        Assert.Equal(1, r.MatMulsQuantized);
        Assert.Single(f.Model.Graph.Nodes, n => n.OpType == "MatMulNBits" && n.Name == "/model/layers.1/mlp/w3/MatMulNBits");

        var g = Build();
        Assert.Equal(6, new QuantizeInt4Rewrite(new QuantizeInt4Options { Exclude = [] }).Apply(g.Model).MatMulsQuantized);
    }

    [Theory]
    [InlineData("/model/layers.0/*", "/model/layers.0/attn/q_proj/MatMul", true)]
    [InlineData("/model/layers.0/*", "/model/layers.10/attn/q_proj/MatMul", false)]
    [InlineData("*/experts.?/w2/*", "/model/layers.3/moe/experts.5/w2/MatMul", true)]
    [InlineData("*/experts.?/w2/*", "/model/layers.3/moe/experts.15/w2/MatMul", false)]
    [InlineData("/moe/router/", "/model/layers.3/moe/router/MatMul", true)]
    [InlineData("*router", "/model/layers.3/moe/router/MatMul", false)]
    public void Globs_match_whole_names_plain_patterns_match_substrings(string pattern, string name, bool expected) =>
        Assert.Equal(expected, NameGlob.Matches(pattern, name));

    [Fact]
    public void Quantizing_twice_is_a_clear_error_and_nothing_to_do_is_no_change()
    {
        var f = Build();
        var rewrite = new QuantizeInt4Rewrite(new QuantizeInt4Options());
        rewrite.Apply(f.Model);
        var e = Assert.Throws<InvalidDataException>(() => rewrite.Apply(f.Model));
        Assert.Equal("model is already quantized: it has 4 MatMulNBits nodes and no target MatMul with a constant weight left to quantize", e.Message);

        // Quantizing the attention after the experts is allowed (targets remain).
        var g = Build();
        new QuantizeInt4Rewrite(new QuantizeInt4Options { Targets = QuantizeTargets.Experts }).Apply(g.Model);
        Assert.Equal(1, new QuantizeInt4Rewrite(new QuantizeInt4Options { Targets = QuantizeTargets.Attention }).Apply(g.Model).MatMulsQuantized);

        var empty = new Model(new Graph("g"));
        Assert.False(rewrite.Apply(empty).Changed);
    }

    [Fact]
    public void Non_constant_weights_are_skipped_with_a_reason()
    {
        var g = new Graph("g");
        var x = new Value("x", new TensorType(DataType.Float, [2, 32]));
        var w = new Value("w_in", new TensorType(DataType.Float, [32, 4]));
        g.Inputs.Add(x);
        g.Inputs.Add(w);
        var y = new Value("y", new TensorType(DataType.Float, [2, 4]));
        g.Append(new Node("", "MatMul", [x, w], [y], "/model/layers.0/attn/o_proj/MatMul"));
        g.Outputs.Add(y);
        var r = new QuantizeInt4Rewrite(new QuantizeInt4Options()).Apply(new Model(g));
        Assert.False(r.Changed);
        Assert.Equal("weight w_in is not an initializer", Assert.Single(r.Skipped).Reason);
    }

    [Fact]
    public void Shared_weight_is_quantized_once()
    {
        var g = new Graph("g");
        var x = new Value("x", new TensorType(DataType.Float, [2, 32]));
        g.Inputs.Add(x);
        var w = g.AddInitializer(new Value("w", null, InMemoryTensor.FromFloats([32, 4], new float[128])));
        var y1 = new Value("y1", new TensorType(DataType.Float, [2, 4]));
        var y2 = new Value("y2", new TensorType(DataType.Float, [2, 4]));
        g.Append(new Node("", "MatMul", [x, w], [y1], "/model/layers.0/mlp/w1/MatMul"));
        g.Append(new Node("", "MatMul", [x, w], [y2], "/model/layers.0/mlp/w3/MatMul"));
        g.Outputs.Add(y1);
        g.Outputs.Add(y2);
        var r = new QuantizeInt4Rewrite(new QuantizeInt4Options { BlockSize = 32 }).Apply(new Model(g));
        Assert.Equal(2, r.MatMulsQuantized);
        Assert.Equal(1, r.WeightsQuantized);
        var nb = g.Nodes.Where(n => n.OpType == "MatMulNBits").ToList();
        Assert.Same(nb[0].Inputs[1], nb[1].Inputs[1]);
        Assert.Equal(3, g.Initializers.Count);
        Assert.Same(nb[0].Outputs[0], g.Outputs[0]);
    }

    [Fact]
    public void Awq_scaling_quantizes_the_scaled_and_clipped_weight()
    {
        var f = Build();
        const string wName = "model.layers.0.moe.experts.0.w1.weight";
        var rng = new Random(5);
        var s = Enumerable.Range(0, Hidden).Select(_ => (float)(0.5 + rng.NextDouble())).ToArray();
        var format = new BlockQuantFormat(4, 16);
        var clip = Enumerable.Range(0, 7 * format.BlockCount(Hidden)).Select(_ => 0.5f).ToArray();
        var options = new QuantizeInt4Options
        {
            Method = QuantizationMethod.Awq,
            BlockSize = 16,
            AwqScaling = new Dictionary<string, AwqWeightScaling> { [wName] = new(s, clip) },
        };
        new QuantizeInt4Rewrite(options).Apply(f.Model);

        var scaled = f.WeightData[wName].ToArray();
        for (int k = 0; k < Hidden; k++)
            for (int n = 0; n < 7; n++) scaled[k * 7 + n] *= s[k];
        var expected = BlockQuantizer.Quantize(ScalarReference.Transpose(scaled, Hidden, 7), 7, Hidden, format, clipMax: clip);
        var node = NodeNamed(f.Model, "/model/layers.0/moe/experts.0/w1/MatMulNBits");
        Assert.Equal(expected.PackedCodes, node.Inputs[1]!.ConstValue!.GetBytes().ToArray());
        Assert.Equal(expected.ScaleBytes(), node.Inputs[2]!.ConstValue!.GetBytes().ToArray());
        // Weights without an entry are plain RTN.
        var other = NodeNamed(f.Model, "/model/layers.1/mlp/w3/MatMulNBits");
        var rtn = BlockQuantizer.Quantize(ScalarReference.Transpose(f.WeightData["model.layers.1.mlp.w3.weight"], Hidden, 7), 7, Hidden, format);
        Assert.Equal(rtn.PackedCodes, other.Inputs[1]!.ConstValue!.GetBytes().ToArray());
    }

    [Fact]
    public void Bad_awq_scaling_is_rejected()
    {
        var f = Build();
        var unknown = new QuantizeInt4Options
        {
            Method = QuantizationMethod.Awq,
            AwqScaling = new Dictionary<string, AwqWeightScaling> { ["model.layers.0.moe.router.weight"] = new(new float[Hidden]) },
        };
        var e = Assert.Throws<UserErrorException>(() => new QuantizeInt4Rewrite(unknown).Apply(f.Model));
        Assert.Equal("AWQ scales were given for weight 'model.layers.0.moe.router.weight', which is not a quantization target of this model", e.Message);

        var shortScales = unknown with { AwqScaling = new Dictionary<string, AwqWeightScaling> { ["model.layers.1.mlp.w3.weight"] = new(new float[3]) } };
        Assert.Equal("AWQ input scales for weight 'model.layers.1.mlp.w3.weight' hold 3 values, K is 40",
            Assert.Throws<UserErrorException>(() => new QuantizeInt4Rewrite(shortScales).Apply(f.Model)).Message);
        // Nothing was changed by the failed runs.
        Assert.Equal(0, f.Model.Graph.Nodes.Count(n => n.OpType == "MatMulNBits"));
    }

    [Fact]
    public void Bad_options_give_clear_errors()
    {
        string Message(QuantizeInt4Options o) => Assert.Throws<UserErrorException>(() => new QuantizeInt4Rewrite(o)).Message;
        Assert.Equal("block size 24 is not a power of two between 16 and 256", Message(new() { BlockSize = 24 }));
        Assert.Equal("bits 3 is not supported: use 4 or 8", Message(new() { Bits = 3 }));
        Assert.Equal("accuracy level 5 is out of range 0..4", Message(new() { AccuracyLevel = 5 }));
        Assert.Equal("method=awq needs per-channel scales from the AWQ calibration stage; none were given", Message(new() { Method = QuantizationMethod.Awq }));
        Assert.Equal("method 'gptq' is unknown: use rtn or awq", Assert.Throws<UserErrorException>(() => QuantizeInt4Options.ParseMethod("gptq")).Message);
        Assert.Equal("target 'router' is unknown: use experts, mlp, attention or all", Assert.Throws<UserErrorException>(() => QuantizeInt4Options.ParseTargets("experts,router")).Message);
    }
}
