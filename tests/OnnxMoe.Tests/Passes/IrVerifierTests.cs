using OnnxMoe.Ir;
using Attribute = OnnxMoe.Ir.Attribute;
using OnnxMoe.Passes;

namespace OnnxMoe.Tests.Passes;

public class IrVerifierTests
{
    private static IReadOnlyList<string> Check(Model m) => new IrVerifier().Check(m);

    [Fact]
    public void Valid_model_has_no_problems()
    {
        Assert.Empty(Check(TestGraphs.WithDeadCode(out _, out _, out _)));
    }

    [Fact]
    public void Duplicate_value_and_node_names_are_reported()
    {
        var m = TestGraphs.WithDeadCode(out _, out var add, out var relu);
        relu.Outputs[0].Name = add.Outputs[0].Name;
        relu.Name = add.Name;
        var p = Check(m);
        Assert.Contains(p, s => s.Contains($"value name '{add.Outputs[0].Name}' is used by two different values"));
        Assert.Contains(p, s => s.Contains($"node name '{add.Name}' is used twice"));
    }

    [Fact]
    public void Reading_a_value_of_a_removed_node_is_reported()
    {
        var m = TestGraphs.WithDeadCode(out _, out var add, out var relu);
        var g = m.Graph;
        // Unsafe removal leaves relu reading add's output.
        g.Remove(add, safe: false);
        var p = Check(m);
        Assert.Contains(p, s => s.Contains("node /model/relu/Relu (Relu) reads model_add_Add, produced by node /model/add/Add (Add) which is no longer in the model"));
        Assert.Contains(p, s => s.Contains("value x lists a use by node /model/add/Add (Add) which is no longer in the model"));
    }

    [Fact]
    public void Use_list_mismatch_is_reported()
    {
        var m = TestGraphs.WithDeadCode(out var x, out var add, out _);
        // A second node reading x through the proper API, then removed unsafely from the list but left attached.
        var extra = m.Graph.Append(new Node("", "Neg", [x], [new Value("neg_out")], "/extra/Neg"));
        m.Graph.Remove(extra, safe: false);
        Assert.Contains(Check(m), s => s.Contains("value x lists a use by node /extra/Neg (Neg) which is no longer in the model"));
    }

    [Fact]
    public void Undefined_graph_output_and_missing_initializer_data_are_reported()
    {
        var m = TestGraphs.WithDeadCode(out _, out _, out _);
        m.Graph.Outputs.Add(new Value("ghost"));
        m.Graph.Initializers.Add(new Value("empty_init", TestGraphs.F32(1)));
        var p = Check(m);
        Assert.Contains(p, s => s == "main graph: graph output ghost is not defined in this graph");
        Assert.Contains(p, s => s == "main graph: initializer empty_init has no data");
    }

    [Fact]
    public void Subgraphs_may_read_outer_values_but_not_later_ones()
    {
        var g = new Graph("main");
        var x = new Value("x", TestGraphs.F32(2));
        var cond = new Value("cond", new TensorType(DataType.Bool, []));
        g.Inputs.Add(x);
        g.Inputs.Add(cond);
        var body = new Graph("then");
        var later = new Value("later_out");
        var inner = body.Append(new Node("", "Add", [x, later], [new Value("inner_out")], "/if/then/Add"));
        body.Outputs.Add(inner.Outputs[0]);
        var iff = g.Append(new Node("", "If", [cond], [new Value("if_out")], "/if/If"));
        iff.SetAttribute(Attribute.GraphValue("then_branch", body));
        var after = g.Append(new Node("", "Neg", [x], [later], "/later/Neg"));
        g.Outputs.Add(iff.Outputs[0]);
        g.Outputs.Add(after.Outputs[0]);
        var p = Check(new Model(g));
        Assert.Equal(["main graph > node /if/If (If) attribute then_branch: node /if/then/Add (Add) reads later_out, which is not defined in this graph or an enclosing one"], p);
    }

    [Fact]
    public void Problem_count_is_capped()
    {
        var g = new Graph("main");
        for (int i = 0; i < 50; i++) g.Outputs.Add(new Value($"ghost{i}"));
        Assert.Equal(5, new IrVerifier { MaxProblems = 5 }.Check(new Model(g)).Count);
    }
}
