using OnnxMoe.Ir;

namespace OnnxMoe.Passes.Cleanup;

/// <summary>Stable topological sort of the main graph, its subgraphs and function bodies (<see cref="Graph.SortTopologically"/>).</summary>
public sealed class TopoSortPass : Pass
{
    public static readonly PassInfo Info = new("topo-sort",
        "Sorts nodes topologically, keeping the current order where dependencies allow.");

    public TopoSortPass(PassOptions options) : base(Info, options)
    {
    }

    public override PassResult Run(Model model, PassContext context)
    {
        var counters = new CounterSet();
        Sort(model.Graph, counters);
        foreach (var f in model.Functions) Sort(f.Body, counters);
        return PassResult.From(counters.Any, counters);
    }

    private static void Sort(Graph g, CounterSet counters)
    {
        var before = g.Nodes.ToList();
        g.SortTopologically();
        int moved = before.Zip(g.Nodes).Count(p => !ReferenceEquals(p.First, p.Second));
        counters.Add("nodes-moved", moved);
        foreach (var n in g.Nodes)
            foreach (var a in n.Attributes)
                foreach (var sub in a.Subgraphs)
                    Sort(sub, counters);
    }
}
