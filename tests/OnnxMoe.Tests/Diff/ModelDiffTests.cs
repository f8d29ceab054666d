using OnnxMoe.Compiler.Diff;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Passes;
using OnnxMoe.Tests.Snapshots;
using Attribute = OnnxMoe.Ir.Attribute;

namespace OnnxMoe.Tests.Diff;

public class ModelDiffTests
{
    /// <summary>A toy decoder: per layer a q/k projection and two experts, hierarchical names as in docs/graph-conventions.</summary>
    private static Model Decoder(int layers = 3, bool shuffled = false)
    {
        var g = new Graph("main");
        var h = new Value("input_ids", new TensorType(DataType.Float, [new Dim(null, "batch"), new Dim(4)]));
        g.Inputs.Add(h);
        var nodes = new List<Node>();
        Value x = h;
        for (int i = 0; i < layers; i++)
        {
            Value Weight(string name, float seed)
            {
                var v = new Value(name, null, InMemoryTensor.FromFloats([4, 4], Enumerable.Range(0, 16).Select(k => seed + k).ToArray()));
                g.AddInitializer(v);
                return v;
            }
            Node Mat(string path, Value input, Value w)
            {
                var n = new Node("", "MatMul", [input, w], [new Value($"{path.TrimStart('/').Replace('/', '.')}.out")], path);
                nodes.Add(n);
                return n;
            }
            var q = Mat($"/model/layers.{i}/attn/q_proj/MatMul", x, Weight($"model.layers.{i}.attn.q_proj.weight", i * 100));
            var k = Mat($"/model/layers.{i}/attn/k_proj/MatMul", x, Weight($"model.layers.{i}.attn.k_proj.weight", i * 100 + 20));
            var add = new Node("", "Add", [q.Outputs[0], k.Outputs[0]], [new Value($"model.layers.{i}.attn.out")], $"/model/layers.{i}/attn/Add");
            nodes.Add(add);
            var e0 = Mat($"/model/layers.{i}/moe/experts.0/w1/MatMul", add.Outputs[0], Weight($"model.layers.{i}.moe.experts.0.w1.weight", i * 100 + 40));
            var e1 = Mat($"/model/layers.{i}/moe/experts.1/w1/MatMul", add.Outputs[0], Weight($"model.layers.{i}.moe.experts.1.w1.weight", i * 100 + 60));
            var sum = new Node("", "Sum", [e0.Outputs[0], e1.Outputs[0], add.Outputs[0]], [new Value($"model.layers.{i}.out")], $"/model/layers.{i}/Sum");
            nodes.Add(sum);
            x = sum.Outputs[0];
        }
        var norm = new Node("", "LayerNormalization", [x], [new Value("model.norm.out")], "/model/norm/LayerNormalization");
        norm.SetAttribute(Attribute.Float("epsilon", 1e-5f));
        norm.SetAttribute(Attribute.Int("axis", -1));
        nodes.Add(norm);
        var unnamed = new Node("", "Identity", [norm.Outputs[0]], [new Value("logits", new TensorType(DataType.Float, [new Dim(null, "batch"), new Dim(4)]))]);
        nodes.Add(unnamed);
        if (shuffled) nodes.Reverse();
        foreach (var n in nodes) g.Append(n);
        if (shuffled) g.SortTopologically();
        g.Outputs.Add(unnamed.Outputs[0]);
        var m = new Model(g) { ProducerName = "onnxmoe" };
        m.SetOpset("", 17);
        m.SetMetadata("onnxmoe.structure", "{\"layers\":" + layers + "}");
        return m;
    }

    [Fact]
    public void Equal_models_give_an_empty_diff_whatever_the_node_order()
    {
        var d = ModelDiff.Compute(Decoder(), Decoder(shuffled: true));
        Assert.True(d.IsEmpty);
        Assert.Equal("", d.ToText());
        Assert.Equal("{\n  \"equal\": true,\n  \"sections\": []\n}\n", d.ToJson());
    }

    private static Model Edited()
    {
        var b = Decoder();
        var g = b.Graph;
        // Drop layer 1: route layer 0's output to layer 2 and let remove-unused delete the rest.
        var l0 = g.Nodes.Single(n => n.Name == "/model/layers.0/Sum").Outputs[0];
        g.Nodes.Single(n => n.Name == "/model/layers.1/Sum").Outputs[0].ReplaceAllUsesWith(l0);
        new OnnxMoe.Passes.Cleanup.RemoveUnusedPass(PassOptions.Defaults(OnnxMoe.Passes.Cleanup.RemoveUnusedPass.Info)).Run(b, new PassContext());
        // Quantize-like edit of one node: new op, new input, new attribute.
        var k = g.Nodes.Single(n => n.Name == "/model/layers.2/attn/k_proj/MatMul");
        k.Domain = "com.microsoft";
        k.OpType = "MatMulNBits";
        k.SetAttribute(Attribute.Int("block_size", 32));
        var scales = g.AddInitializer(new Value("model.layers.2.attn.k_proj.scales", null, InMemoryTensor.FromHalves([4], [(Half)1, (Half)2, (Half)3, (Half)4])));
        k.AppendInput(scales);
        g.Nodes.Single(n => n.Name == "/model/norm/LayerNormalization").SetAttribute(Attribute.Float("epsilon", 1e-6f));
        // Same layout, other bytes.
        var q2 = g.FindInitializer("model.layers.2.attn.q_proj.weight")!;
        q2.ConstValue = InMemoryTensor.FromFloats([4, 4], new float[16]);
        // Other dtype.
        var e = g.FindInitializer("model.layers.0.moe.experts.1.w1.weight")!;
        e.ConstValue = new InMemoryTensor(DataType.Float16, [4, 4], new byte[32]);
        e.Type = new TensorType(DataType.Float16, [new Dim(4), new Dim(4)]);
        g.Inputs.Add(new Value("attention_mask", new TensorType(DataType.Int64, [new Dim(null, "batch"), new Dim(null, "total_seq")])));
        b.SetOpset("com.microsoft", 1);
        b.SetOpset("", 18);
        b.SetMetadata("onnxmoe.structure", "{\"layers\":2}");
        b.SetMetadata(PassManager.PipelineMetadataKey, "drop-blocks{blocks=1}," + new string('x', 200));
        return b;
    }

    [Fact]
    public void Diff_text_matches_snapshot()
    {
        var d = ModelDiff.Compute(Decoder(), Edited());
        Assert.False(d.IsEmpty);
        Snapshot.Match(d.ToText(), "diff-toy-decoder");
        Assert.Equal(d.ToText(), ModelDiff.Compute(Decoder(), Edited()).ToText());
    }

    [Fact]
    public void Diff_json_matches_snapshot()
    {
        var json = ModelDiff.Compute(Decoder(), Edited()).ToJson();
        using var doc = System.Text.Json.JsonDocument.Parse(json); // well-formed
        Assert.False(doc.RootElement.GetProperty("equal").GetBoolean());
        Snapshot.Match(json, "diff-toy-decoder-json");
    }

    [Fact]
    public void Whole_removed_subtrees_are_summarised_by_prefix()
    {
        var d = ModelDiff.Compute(Decoder(), Edited());
        var nodes = d.Sections.Single(s => s.Name == "nodes");
        var removed = nodes.Entries.Where(e => e.Kind == DiffKind.Removed).ToList();
        var group = Assert.Single(removed);
        Assert.Equal("/model/layers.1/", group.Name);
        Assert.Equal(6, group.Count);
        Assert.Equal(6, nodes.CountOf(DiffKind.Removed));
        Assert.Equal(4, d.Sections.Single(s => s.Name == "initializers").CountOf(DiffKind.Removed));
    }

    [Fact]
    public void Reverse_diff_mirrors_the_forward_one()
    {
        var forward = ModelDiff.Compute(Decoder(), Edited());
        var backward = ModelDiff.Compute(Edited(), Decoder());
        foreach (var (f, b) in forward.Sections.Zip(backward.Sections))
        {
            Assert.Equal(f.Name, b.Name);
            Assert.Equal(f.CountOf(DiffKind.Removed), b.CountOf(DiffKind.Added));
            Assert.Equal(f.CountOf(DiffKind.Added), b.CountOf(DiffKind.Removed));
            Assert.Equal(f.CountOf(DiffKind.Changed), b.CountOf(DiffKind.Changed));
        }
    }

    [Fact]
    public void Partially_removed_prefixes_are_listed_node_by_node()
    {
        var b = Decoder();
        var g = b.Graph;
        foreach (var name in new[] { "/model/layers.2/moe/experts.1/w1/MatMul", "/model/layers.2/moe/experts.0/w1/MatMul" })
        {
            var n = g.Nodes.Single(x => x.Name == name);
            var sum = n.Outputs[0].Uses.Single();
            sum.Node.SetInput(sum.Index, g.Nodes.Single(x => x.Name == "/model/layers.2/attn/Add").Outputs[0]);
            g.Remove(n);
        }
        var d = ModelDiff.Compute(Decoder(), b);
        // Both experts of layer 2 are gone: that is every node under /model/layers.2/moe/, so one summary line.
        Assert.Contains("  - 2 nodes under /model/layers.2/moe/\n", d.ToText());
        Assert.Contains("  ~ /model/layers.2/Sum\n      input 0: model.layers.2.moe.experts.0.w1.MatMul.out -> model.layers.2.attn.out\n", d.ToText());

        var c = Decoder();
        var only = c.Graph.Nodes.Single(x => x.Name == "/model/layers.2/moe/experts.1/w1/MatMul");
        var use = only.Outputs[0].Uses.Single();
        use.Node.SetInput(use.Index, c.Graph.Nodes.Single(x => x.Name == "/model/layers.2/attn/Add").Outputs[0]);
        c.Graph.Remove(only);
        Assert.Contains("  - /model/layers.2/moe/experts.1/w1/MatMul (MatMul)\n", ModelDiff.Compute(Decoder(), c).ToText());
    }
}
