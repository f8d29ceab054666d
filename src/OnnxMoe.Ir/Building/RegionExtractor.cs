namespace OnnxMoe.Ir.Building;

/// <summary>
/// Copies the region of a model's main graph that computes some values into a new, standalone
/// <see cref="Model"/>: the cut values become graph inputs, the requested values its outputs, and
/// chosen weight initializers become inputs too (so trial weights can be fed at run time). Other
/// graph inputs the region reads stay inputs; other initializers are shared (same tensor objects,
/// no copy). The source model is not modified. Calibration runs decoder blocks, AWQ modules and
/// probes through it, so what it runs is exactly the graph that ships.
/// </summary>
public static class RegionExtractor
{
    /// <summary>The nodes computing <paramref name="outputs"/> from <paramref name="cut"/>, graph inputs and initializers, and the values the region reads
    /// from outside (cut values, graph inputs, initializers).</summary>
    public static (HashSet<Node> Nodes, HashSet<Value> Leaves) Collect(IReadOnlyList<Value> cut, IReadOnlyList<Value> outputs)
    {
        var cutSet = new HashSet<Value>(cut, ReferenceEqualityComparer.Instance);
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
        return (needed, leaves);
    }

    /// <param name="cut">Values whose producers are not copied; each becomes a graph input of the same name.</param>
    /// <param name="outputs">Values to compute; each becomes a graph output of the same name (in this order).</param>
    /// <param name="weightsAsInputs">Initializers turned into graph inputs (same name and type).</param>
    /// <param name="replacements">Initializers whose tensor the region holds instead of the source's (same type and shape).</param>
    public static Model Extract(Model source, IReadOnlyList<Value> cut, IReadOnlyList<Value> outputs, IReadOnlyCollection<Value>? weightsAsInputs = null,
        IReadOnlyDictionary<Value, Tensors.Tensor>? replacements = null)
    {
        var graph = source.Graph;
        var asInputs = new HashSet<Value>(weightsAsInputs ?? [], ReferenceEqualityComparer.Instance);
        var (needed, leaves) = Collect(cut, outputs);

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
                var tensor = replacements != null && replacements.TryGetValue(v, out var r) ? r : v.ConstValue;
                if (tensor != null && v.ConstValue != null && (tensor.DataType != v.ConstValue.DataType || !tensor.Shape.SequenceEqual(v.ConstValue.Shape)))
                    throw new ArgumentException($"replacement for {v.Name} has another type or shape");
                map[v] = new Value(v.Name, v.Type, tensor);
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
