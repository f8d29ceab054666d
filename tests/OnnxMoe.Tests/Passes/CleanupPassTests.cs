using OnnxMoe.Ir;
using Attribute = OnnxMoe.Ir.Attribute;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Passes;
using OnnxMoe.Passes.Cleanup;

namespace OnnxMoe.Tests.Passes;

public class CleanupPassTests
{
    private static PassResult Run(Pass pass, Model m)
    {
        var r = pass.Run(m, new PassContext());
        Assert.Empty(new IrVerifier().Check(m));
        return r;
    }

    private static RemoveUnusedPass RemoveUnused(bool inputs = false) =>
        new(PassOptions.Defaults(RemoveUnusedPass.Info).With(RemoveUnusedPass.Inputs, inputs));

    [Fact]
    public void Remove_unused_drops_dead_chains_and_unused_initializers_only()
    {
        var m = TestGraphs.WithDeadCode(out var x, out var add, out var relu);
        var g = m.Graph;
        var w = g.FindInitializer("w")!;
        var r = Run(RemoveUnused(), m);

        Assert.True(r.Changed);
        Assert.Equal(2, r.Counters["nodes-removed"]);
        Assert.Equal(2, r.Counters["initializers-removed"]);
        Assert.Equal([add, relu], g.Nodes);
        Assert.Same(w, g.Initializers.Single());
        Assert.Same(x, add.Inputs[0]);
        Assert.Same(add.Outputs[0], relu.Inputs[0]);
        Assert.Equal([new Use(relu, 0)], add.Outputs[0].Uses); // the removed Mul's use is gone
        Assert.Equal(["x", "unused_input"], g.Inputs.Select(v => v.Name)); // inputs kept by default

        Assert.False(Run(RemoveUnused(), m).Changed);
        var withInputs = Run(RemoveUnused(inputs: true), m);
        Assert.True(withInputs.Changed);
        Assert.Equal(1, withInputs.Counters["inputs-removed"]);
        Assert.Same(x, g.Inputs.Single());
        Assert.False(Run(RemoveUnused(inputs: true), m).Changed);
    }

    [Fact]
    public void Remove_unused_keeps_graph_outputs_and_nodes_feeding_them()
    {
        var g = new Graph("main");
        var x = new Value("x", TestGraphs.F32(2));
        g.Inputs.Add(x);
        var c = TestGraphs.Init(g, "c", 1, 1);
        var a = TestGraphs.Op(g, "Neg", "/a/Neg", x);
        g.Outputs.Add(a.Outputs[0]);
        g.Outputs.Add(c); // an initializer that is a graph output stays
        var m = new Model(g);
        Assert.False(Run(RemoveUnused(inputs: true), m).Changed);
        Assert.Equal([a], g.Nodes);
        Assert.Same(c, g.Initializers.Single());
    }

    [Fact]
    public void Remove_unused_releases_uses_held_by_subgraphs_of_removed_nodes()
    {
        var g = new Graph("main");
        var x = new Value("x", TestGraphs.F32(2));
        var cond = new Value("cond", new TensorType(DataType.Bool, []));
        g.Inputs.Add(x);
        g.Inputs.Add(cond);
        var keep = TestGraphs.Op(g, "Relu", "/keep/Relu", x);
        g.Outputs.Add(keep.Outputs[0]);

        var then = new Graph("then");
        var inner = then.Append(new Node("", "Neg", [x], [new Value("inner_out")], "/if/then/Neg")); // captures x
        then.Outputs.Add(inner.Outputs[0]);
        var els = new Graph("else");
        var inner2 = els.Append(new Node("", "Abs", [x], [new Value("inner2_out")], "/if/else/Abs"));
        els.Outputs.Add(inner2.Outputs[0]);
        var iff = g.Append(new Node("", "If", [cond], [new Value("if_out")], "/if/If"));
        iff.SetAttribute(Attribute.GraphValue("then_branch", then));
        iff.SetAttribute(Attribute.GraphValue("else_branch", els));
        then.ParentNode = iff;
        els.ParentNode = iff;
        var m = new Model(g);
        Assert.Empty(new IrVerifier().Check(m));
        Assert.Equal(3, x.Uses.Count);

        var r = Run(RemoveUnused(), m);
        Assert.Equal(1, r.Counters["nodes-removed"]);
        Assert.Equal([new Use(keep, 0)], x.Uses);
        Assert.Empty(cond.Uses);
    }

    [Fact]
    public void Remove_unused_drops_value_info_of_removed_values()
    {
        var m = TestGraphs.WithDeadCode(out _, out var add, out _);
        var deadMul = m.Graph.Nodes.Single(n => n.OpType == "Mul");
        m.Graph.ValueInfos.Add(deadMul.Outputs[0]);
        m.Graph.ValueInfos.Add(add.Outputs[0]);
        var r = Run(RemoveUnused(), m);
        Assert.Equal(1, r.Counters["value-infos-removed"]);
        Assert.Same(add.Outputs[0], m.Graph.ValueInfos.Single());
    }

    [Fact]
    public void Dedupe_constants_rewires_readers_to_the_first_identical_initializer()
    {
        var g = new Graph("main");
        var x = new Value("x", TestGraphs.F32(2));
        g.Inputs.Add(x);
        var a = TestGraphs.Init(g, "a", 1, 2);
        var b = TestGraphs.Init(g, "b", 1, 2);               // duplicate of a
        var c = TestGraphs.Init(g, "c", 1, 3);               // same shape, other bytes
        var d = g.AddInitializer(new Value("d", null, InMemoryTensor.FromInt32s([2], [1065353216, 1073741824]))); // same bytes as a, other dtype
        var e = g.AddInitializer(new Value("e", null, InMemoryTensor.FromFloats([1, 2], [1, 2])));                  // same bytes as a, other shape
        var big1 = g.AddInitializer(new Value("big1", null, InMemoryTensor.FromFloats([2048], Enumerable.Range(0, 2048).Select(i => (float)i).ToArray())));
        var tail = Enumerable.Range(0, 2048).Select(i => (float)i).ToArray();
        tail[^1] = -1; // same 4 KiB prefix as big1, different tail
        var big2 = g.AddInitializer(new Value("big2", null, InMemoryTensor.FromFloats([2048], tail)));
        var big3 = g.AddInitializer(new Value("big3", null, InMemoryTensor.FromFloats([2048], Enumerable.Range(0, 2048).Select(i => (float)i).ToArray())));
        var nodes = new[] { a, b, c, d, e, big1, big2, big3 }.Select(v => TestGraphs.Op(g, "Identity", $"/id_{v.Name}/Identity", v)).ToArray();
        foreach (var n in nodes) g.Outputs.Add(n.Outputs[0]);
        var m = new Model(g);

        var pass = new DedupeConstantsPass(PassOptions.Defaults(DedupeConstantsPass.Info));
        var r = Run(pass, m);
        Assert.True(r.Changed);
        Assert.Equal(2, r.Counters["initializers-deduplicated"]);
        Assert.Equal(8 + 2048 * 4, r.Counters["bytes-saved"]);
        Assert.Equal([a, c, d, e, big1, big2], g.Initializers);
        Assert.Same(a, nodes[1].Inputs[0]);
        Assert.Same(big1, nodes[7].Inputs[0]);
        Assert.Same(big2, nodes[6].Inputs[0]);
        Assert.Equal(2, a.Uses.Count);
        Assert.Empty(b.Uses);
        Assert.False(Run(pass, m).Changed);
    }

    [Fact]
    public void Dedupe_constants_leaves_inputs_outputs_and_uncomputed_lazy_tensors_alone()
    {
        var g = new Graph("main");
        var a = TestGraphs.Init(g, "a", 1, 2);
        var overridable = TestGraphs.Init(g, "overridable", 1, 2);
        g.Inputs.Add(overridable);
        var exposed = TestGraphs.Init(g, "exposed", 1, 2);
        g.Outputs.Add(exposed);
        int computed = 0;
        var lazy1 = g.AddInitializer(new Value("lazy1", null, new LazyTensor(DataType.Float, [2], () => { computed++; return new byte[8]; })));
        var lazy2 = g.AddInitializer(new Value("lazy2", null, new LazyTensor(DataType.Float, [2], () => { computed++; return new byte[8]; })));
        foreach (var v in new[] { a, overridable, lazy1, lazy2 }) g.Outputs.Add(TestGraphs.Op(g, "Identity", $"/{v.Name}/Identity", v).Outputs[0]);
        var m = new Model(g);
        var r = Run(new DedupeConstantsPass(PassOptions.Defaults(DedupeConstantsPass.Info)), m);
        Assert.False(r.Changed);
        Assert.Equal(0, computed);
        Assert.Equal(5, g.Initializers.Count);
    }

    [Fact]
    public void Topo_sort_orders_nodes_and_reports_change_once()
    {
        var g = new Graph("main");
        var x = new Value("x", TestGraphs.F32(2));
        g.Inputs.Add(x);
        var first = TestGraphs.Op(g, "Neg", "/first/Neg", x);
        var second = TestGraphs.Op(g, "Abs", "/second/Abs", first.Outputs[0]);
        var third = TestGraphs.Op(g, "Relu", "/third/Relu", second.Outputs[0]);
        g.Outputs.Add(third.Outputs[0]);
        // Move the first node to the end: the list is no longer topological.
        g.Remove(first, safe: false);
        g.Append(first);
        var m = new Model(g);
        Assert.NotEmpty(new IrVerifier().Check(m));
        Assert.Empty(new IrVerifier { RequireTopologicalOrder = false }.Check(m));

        var pass = new TopoSortPass(PassOptions.Defaults(TopoSortPass.Info));
        var r = Run(pass, m);
        Assert.True(r.Changed);
        Assert.Equal(3, r.Counters["nodes-moved"]);
        Assert.Equal([first, second, third], g.Nodes);
        Assert.False(Run(pass, m).Changed);
    }

    [Fact]
    public void Cleanup_alias_reaches_a_fixpoint()
    {
        var m = TestGraphs.WithDeadCode(out _, out _, out _);
        var registry = PassRegistry.CreateDefault();
        var pm = new PassManager();
        Assert.True(pm.Run(m, PassPipeline.Parse("cleanup", registry)).Changed);
        Assert.False(pm.Run(m, PassPipeline.Parse("cleanup", registry)).Changed);
    }
}
