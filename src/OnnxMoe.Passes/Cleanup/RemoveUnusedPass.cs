using OnnxMoe.Ir;

namespace OnnxMoe.Passes.Cleanup;

/// <summary>
/// Removes nodes none of whose outputs is read or is a graph output (repeatedly, so dead chains go),
/// then initializers nobody reads, in the main graph, subgraphs and function bodies; main-graph inputs
/// nobody reads only with <c>inputs=true</c> (a decoder's KV-cache inputs are part of its interface).
/// Also drops value_info annotations of values that no longer exist.
/// </summary>
public sealed class RemoveUnusedPass : Pass
{
    public static readonly PassOption<bool> Inputs = PassOption.Bool("inputs", false, "also remove main-graph inputs that nothing reads");

    public static readonly PassInfo Info = new("remove-unused",
        "Removes dead nodes and unused initializers (and unused graph inputs with inputs=true).", Inputs);

    public RemoveUnusedPass(PassOptions options) : base(Info, options)
    {
    }

    public override PassResult Run(Model model, PassContext context)
    {
        var counters = new CounterSet();
        Clean(model.Graph, Options.Get(Inputs), counters);
        foreach (var f in model.Functions) Clean(f.Body, removeInputs: false, counters);
        return PassResult.From(counters.Any, counters);
    }

    private static void Clean(Graph g, bool removeInputs, CounterSet counters)
    {
        // Inner graphs first: what they stop reading may free values of this graph.
        foreach (var n in g.Nodes)
            foreach (var a in n.Attributes)
                foreach (var sub in a.Subgraphs)
                    Clean(sub, removeInputs: false, counters);

        bool removed;
        do
        {
            removed = false;
            // Reverse list order removes a whole dead chain in one sweep when the order is topological.
            foreach (var n in g.Nodes.Reverse().ToList())
            {
                if (n.Outputs.Any(o => o.Uses.Count > 0 || o.IsGraphOutput)) continue;
                RemoveDeep(g, n);
                counters.Add("nodes-removed");
                removed = true;
            }
        } while (removed);

        var inputs = new HashSet<Value>(g.Inputs, ReferenceEqualityComparer.Instance);
        int before = g.Initializers.Count;
        g.Initializers.RemoveAll(v => v.Uses.Count == 0 && !v.IsGraphOutput && (removeInputs || !inputs.Contains(v)));
        counters.Add("initializers-removed", before - g.Initializers.Count);

        if (removeInputs)
        {
            before = g.Inputs.Count;
            g.Inputs.RemoveAll(v => v.Uses.Count == 0 && !v.IsGraphOutput);
            counters.Add("inputs-removed", before - g.Inputs.Count);
        }

        var live = new HashSet<Value>(g.Inputs, ReferenceEqualityComparer.Instance);
        live.UnionWith(g.Initializers);
        before = g.ValueInfos.Count;
        g.ValueInfos.RemoveAll(v => !live.Contains(v) && !ReferenceEquals(v.Producer?.Graph, g));
        counters.Add("value-infos-removed", before - g.ValueInfos.Count);
    }

    /// <summary>Removes a node, first releasing what its subgraphs read so no use list points into the removed subtree.</summary>
    internal static void RemoveDeep(Graph g, Node n)
    {
        foreach (var a in n.Attributes)
            foreach (var sub in a.Subgraphs)
                foreach (var inner in sub.AllNodes())
                    inner.ClearInputs();
        g.Remove(n);
    }
}
