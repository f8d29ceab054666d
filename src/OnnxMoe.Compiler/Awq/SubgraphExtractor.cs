using OnnxMoe.Ir;

namespace OnnxMoe.Compiler.Awq;

/// <summary>
/// Copies the region of a model's main graph that computes some values into a new, standalone
/// <see cref="Model"/>: the cut values become graph inputs, the requested values its outputs, and
/// chosen weight initializers become inputs too (so trial weights can be fed at run time). Other
/// graph inputs the region reads stay inputs; other initializers are shared (same tensor objects,
/// no copy). The source model is not modified. This is the generic "run part of the model, or the
/// model with extra outputs" helper of the AWQ stage.
/// </summary>
public static class SubgraphExtractor
{
    /// <param name="cut">Values whose producers are not copied; each becomes a graph input of the same name.</param>
    /// <param name="outputs">Values to compute; each becomes a graph output of the same name (in this order).</param>
    /// <param name="weightsAsInputs">Initializers turned into graph inputs (same name and type).</param>
    public static Model Extract(Model source, IReadOnlyList<Value> cut, IReadOnlyList<Value> outputs, IReadOnlyCollection<Value>? weightsAsInputs = null)
    {
        var graph = source.Graph;
        var cutSet = new HashSet<Value>(cut, ReferenceEqualityComparer.Instance);
        var asInputs = new HashSet<Value>(weightsAsInputs ?? [], ReferenceEqualityComparer.Instance);
        var needed = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        var leaves = new HashSet<Value>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<Value>(outputs);
        while (stack.Count > 0)
        {
            var v = stack.Pop();
            if (cutSet.Contains(v) || v.Producer == null)
            {
                leaves.Add(v);
                continue;
            }
            if (!needed.Add(v.Producer)) continue;
            if (v.Producer.Attributes.Any(a => a.Subgraphs.Any()))
                throw new NotSupportedException($"node {v.Producer} has a subgraph; extraction does not copy control flow");
            foreach (var input in v.Producer.Inputs)
                if (input != null) stack.Push(input);
        }

        var result = new Graph(graph.Name + "_region");
        var map = new Dictionary<Value, Value>(ReferenceEqualityComparer.Instance);
        Value Copy(Value v) => new(v.Name, v.Type);
        // Inputs: cut values first (caller's order), then original graph inputs, then weights, all in a stable order.
        foreach (var v in cut)
            if (!map.ContainsKey(v))
            {
                map[v] = Copy(v);
                result.Inputs.Add(map[v]);
            }
        foreach (var v in graph.Inputs)
            if (leaves.Contains(v) && !map.ContainsKey(v))
            {
                map[v] = Copy(v);
                result.Inputs.Add(map[v]);
            }
        foreach (var v in graph.Initializers)
        {
            if (!leaves.Contains(v) || map.ContainsKey(v)) continue;
            if (asInputs.Contains(v))
            {
                map[v] = Copy(v);
                result.Inputs.Add(map[v]);
            }
            else
            {
                map[v] = new Value(v.Name, v.Type, v.ConstValue);
                result.Initializers.Add(map[v]);
            }
        }
        foreach (var v in leaves)
            if (!map.ContainsKey(v))
                throw new InvalidOperationException($"value {v.Name} is read by the region but is neither a cut value, a graph input nor an initializer");

        foreach (var node in graph.Nodes)
        {
            if (!needed.Contains(node)) continue;
            var outs = node.Outputs.Select(o => map[o] = Copy(o)).ToList();
            var copy = new Node(node.Domain, node.OpType, node.Inputs.Select(i => i == null ? null : map[i]), outs, node.Name);
            foreach (var a in node.Attributes) copy.SetAttribute(a);
            result.Append(copy);
        }
        foreach (var o in outputs) result.Outputs.Add(map[o]);

        var model = new Model(result) { IrVersion = source.IrVersion, ProducerName = source.ProducerName };
        foreach (var op in source.OpsetImports) model.SetOpset(op.Domain, op.Version);
        return model;
    }
}
