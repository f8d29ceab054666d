using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Passes;

namespace OnnxMoe.Tests.Passes;

/// <summary>Stand-in passes declaring every option type, so the parser can be tested before the real passes exist.</summary>
public sealed class FakeDropBlocks : Pass
{
    public static readonly PassOption<int[]> Blocks = PassOption.IntList("blocks", "block indices");
    public static readonly PassOption<PassCount> N = PassOption.Count("n", null, "how many");
    public static readonly PassOption<string> Mode = PassOption.String("mode", "discrete", "selection", "discrete", "consecutive");
    public static readonly PassOption<bool> Norm = PassOption.Bool("norm", true, "use norm");

    public static readonly PassInfo Info = new("drop-blocks", "test stand-in", Blocks, N, Mode, Norm);

    public FakeDropBlocks(PassOptions options) : base(Info, options)
    {
    }

    public override PassResult Run(Model model, PassContext context) => PassResult.Unchanged;
}

public sealed class FakeQuantize : Pass
{
    public static readonly PassOption<int> BlockSize = PassOption.Int("block-size", 32, "elements per block");
    public static readonly PassOption<double> Ratio = PassOption.Float("ratio", 0.5, "a float");
    public static readonly PassOption<string> Label = PassOption.String("label", null, "free text");
    public static readonly PassOption<IntPair[]> Experts = PassOption.PairList("experts", "layer:expert pairs");

    public static readonly PassInfo Info = new("quantize-int4", "test stand-in", BlockSize, Ratio, Label, Experts);

    public FakeQuantize(PassOptions options) : base(Info, options)
    {
    }

    public override PassResult Run(Model model, PassContext context) => PassResult.Unchanged;
}

/// <summary>Appends an Identity after the graph output's producer and records the call order.</summary>
public sealed class AppendIdentity : Pass
{
    public static readonly PassOption<string> Tag = PassOption.String("tag", "x", "node name suffix");

    public static readonly PassInfo Info = new("append-identity", "test: adds a node", Tag);

    public AppendIdentity(PassOptions options) : base(Info, options)
    {
    }

    public override PassResult Run(Model model, PassContext context)
    {
        var g = model.Graph;
        var output = g.Outputs[0];
        var tag = Options.Get(Tag);
        var id = g.Append(new Node("", "Identity", [output], [new Value($"out_{tag}", output.Type)], $"/test/{tag}/Identity"));
        g.Outputs[0] = id.Outputs[0];
        if (context.TryGet<List<string>>(out var log)) log.Add(tag);
        var counters = new CounterSet();
        counters.Add("nodes-added");
        return PassResult.From(true, counters);
    }
}

/// <summary>Breaks the IR: a node reads a value that belongs to no graph.</summary>
public sealed class BreakIr : Pass
{
    public static readonly PassInfo Info = new("break-ir", "test: leaves a dangling input");

    public BreakIr(PassOptions options) : base(Info, options)
    {
    }

    public override PassResult Run(Model model, PassContext context)
    {
        var stray = new Value("stray", new TensorType(DataType.Float, [new Dim(2)]));
        model.Graph.Append(new Node("", "Relu", [stray], [new Value("dead_end")], "/test/Relu"));
        return new PassResult(true, new Dictionary<string, long>());
    }
}

internal static class TestGraphs
{
    /// <summary>The default registry's cleanup passes and alias only, so the stand-ins can take the names of the real
    /// trimming passes (which CreateDefault also registers).</summary>
    public static PassRegistry CoreRegistry()
    {
        var r = new PassRegistry();
        r.Register<OnnxMoe.Passes.Cleanup.RemoveUnusedPass>();
        r.Register<OnnxMoe.Passes.Cleanup.DedupeConstantsPass>();
        r.Register<OnnxMoe.Passes.Cleanup.TopoSortPass>();
        var cleanup = PassRegistry.CreateDefault().Find("cleanup")!;
        r.RegisterAlias(cleanup.Name, cleanup.Info.Summary, cleanup.Expansion!.ToString());
        return r;
    }

    public static PassRegistry Registry()
    {
        var r = CoreRegistry();
        r.Register<FakeDropBlocks>();
        r.Register<FakeQuantize>();
        r.Register<AppendIdentity>();
        r.Register<BreakIr>();
        return r;
    }

    public static TensorType F32(params long[] dims) => new(DataType.Float, dims.Select(d => new Dim(d)).ToArray());

    public static Value Init(Graph g, string name, params float[] values)
    {
        var v = new Value(name, null, InMemoryTensor.FromFloats([values.Length], values));
        return g.AddInitializer(v);
    }

    public static Node Op(Graph g, string op, string name, params Value?[] inputs) =>
        g.Append(new Node("", op, inputs, [new Value(name.TrimStart('/').Replace('/', '_'), null)], name));

    /// <summary>x -> Add(x, w) -> Relu -> y, plus a dead Mul chain and an unused initializer.</summary>
    public static Model WithDeadCode(out Value x, out Node add, out Node relu)
    {
        var g = new Graph("main");
        x = new Value("x", F32(2));
        g.Inputs.Add(x);
        g.Inputs.Add(new Value("unused_input", F32(2)));
        var w = Init(g, "w", 1, 2);
        Init(g, "unused_w", 3, 4);
        var dead_w = Init(g, "dead_w", 5, 6);
        add = Op(g, "Add", "/model/add/Add", x, w);
        var mul = Op(g, "Mul", "/model/dead/Mul", add.Outputs[0], dead_w);
        Op(g, "Neg", "/model/dead/Neg", mul.Outputs[0]);
        relu = Op(g, "Relu", "/model/relu/Relu", add.Outputs[0]);
        g.Outputs.Add(relu.Outputs[0]);
        var m = new Model(g);
        m.SetOpset("", 17);
        return m;
    }
}
