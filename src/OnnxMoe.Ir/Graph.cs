namespace OnnxMoe.Ir;

/// <summary>
/// A graph: inputs, outputs, initializers and an ordered node list that is safe to mutate while
/// iterating (removed nodes are skipped, inserted nodes after the cursor are visited).
/// Order is not kept topological on edits: call <see cref="SortTopologically"/>.
/// </summary>
public sealed class Graph
{
    private Node? _first, _last;
    private int _count;

    public Graph(string name = "")
    {
        Name = name;
        Outputs = new OutputList(this);
    }

    public string Name { get; set; }
    public string? DocString { get; set; }
    public Dictionary<string, string>? MetadataProps { get; set; }

    /// <summary>Opaque data a serializer attaches to reproduce the original encoding exactly; never interpreted by passes.</summary>
    public object? SerializationHint { get; set; }
    public List<Value> Inputs { get; } = new();
    public OutputList Outputs { get; }
    /// <summary>Initializers by insertion order; each has <see cref="Value.ConstValue"/>.</summary>
    public List<Value> Initializers { get; } = new();
    public List<SparseInitializer> SparseInitializers { get; } = new();
    /// <summary>Intermediate values that carry a value_info annotation, in file order.</summary>
    public List<Value> ValueInfos { get; } = new();
    /// <summary>Opaque items a serializer keeps for exact round trips (e.g. quantization annotations).</summary>
    public List<object> Extras { get; } = new();

    /// <summary>The node owning this graph as an attribute, for subgraphs.</summary>
    public Node? ParentNode { get; set; }

    public int NodeCount => _count;

    /// <summary>Nodes in list order; tolerates removal and insertion during enumeration.</summary>
    public IEnumerable<Node> Nodes
    {
        get
        {
            var n = _first;
            while (n != null)
            {
                if (!n.Removed) yield return n;
                var next = n.Next;
                // A removed node keeps its Next so a cursor on it can continue; skip chains of removed nodes.
                while (next != null && next.Removed) next = next.Next;
                n = next;
            }
        }
    }

    public Node Append(Node node) => InsertAfter(_last, node);

    public Node InsertBefore(Node? anchor, Node node)
    {
        if (anchor == null) return Append(node);
        return InsertAfter(anchor.Prev, node, anchor);
    }

    /// <summary>Inserts after <paramref name="anchor"/> (null = at the front when a list exists, else append).</summary>
    public Node InsertAfter(Node? anchor, Node node) => InsertAfter(anchor, node, anchor == null ? _first : anchor.Next);

    private Node InsertAfter(Node? prev, Node node, Node? next)
    {
        if (node.Graph != null) throw new InvalidOperationException($"node {node} already belongs to a graph");
        node.Graph = this;
        node.Removed = false;
        node.Prev = prev;
        node.Next = next;
        if (prev != null) prev.Next = node; else _first = node;
        if (next != null) next.Prev = node; else _last = node;
        _count++;
        return node;
    }

    /// <summary>Detaches a node. With <paramref name="safe"/> its outputs must be unused and its inputs are released.</summary>
    public void Remove(Node node, bool safe = true)
    {
        if (node.Graph != this) throw new InvalidOperationException($"node {node} is not in graph {Name}");
        if (safe)
        {
            foreach (var o in node.Outputs)
                if (o.Uses.Count > 0 || o.IsGraphOutput)
                    throw new InvalidOperationException($"cannot remove {node}: output {o.Name} is still used");
            node.ClearInputs();
        }
        if (node.Prev != null) node.Prev.Next = node.Next; else _first = node.Next;
        if (node.Next != null) node.Next.Prev = node.Prev; else _last = node.Prev;
        node.Removed = true;
        node.Graph = null;
        _count--;
        // Prev/Next stay so that an enumerator positioned on this node can move on.
    }

    /// <summary>All nodes of this graph and of every nested subgraph, depth first.</summary>
    public IEnumerable<Node> AllNodes()
    {
        foreach (var n in Nodes)
        {
            yield return n;
            foreach (var a in n.Attributes)
                foreach (var g in a.Subgraphs)
                    foreach (var inner in g.AllNodes())
                        yield return inner;
        }
    }

    public Value? FindInitializer(string name) => Initializers.FirstOrDefault(v => v.Name == name);

    public Value AddInitializer(Value value)
    {
        if (value.ConstValue == null) throw new ArgumentException($"initializer {value.Name} has no data");
        Initializers.Add(value);
        return value;
    }

    /// <summary>
    /// Stable topological sort: nodes keep their current relative order unless a dependency forces
    /// otherwise. Values captured by subgraphs count as dependencies of the owning node.
    /// Throws on cycles.
    /// </summary>
    public void SortTopologically()
    {
        var nodes = Nodes.ToList();
        var index = new Dictionary<Node, int>(ReferenceEqualityComparer.Instance);
        for (int i = 0; i < nodes.Count; i++) index[nodes[i]] = i;
        var pending = new int[nodes.Count];
        var dependents = new List<int>[nodes.Count];
        for (int i = 0; i < nodes.Count; i++)
        {
            dependents[i] = new List<int>();
        }
        for (int i = 0; i < nodes.Count; i++)
        {
            var seen = new HashSet<int>();
            foreach (var v in ReadValues(nodes[i]))
            {
                // Walk up to the producer that lives in this graph.
                var p = v.Producer;
                while (p != null && p.Graph != this) p = p.Graph?.ParentNode;
                if (p != null && index.TryGetValue(p, out int j) && j != i && seen.Add(j))
                {
                    pending[i]++;
                    dependents[j].Add(i);
                }
            }
        }
        var ready = new PriorityQueue<int, int>();
        for (int i = 0; i < nodes.Count; i++) if (pending[i] == 0) ready.Enqueue(i, i);
        var order = new List<Node>(nodes.Count);
        while (ready.TryDequeue(out int i, out _))
        {
            order.Add(nodes[i]);
            foreach (int d in dependents[i]) if (--pending[d] == 0) ready.Enqueue(d, d);
        }
        if (order.Count != nodes.Count)
            throw new InvalidOperationException($"graph {Name} has a cycle through {nodes[Enumerable.Range(0, nodes.Count).First(i => pending[i] > 0)]}");
        foreach (var n in nodes) Remove(n, safe: false);
        foreach (var n in order) Append(n);
    }

    /// <summary>Values a node reads, including those its subgraphs capture from outside.</summary>
    private static IEnumerable<Value> ReadValues(Node node)
    {
        foreach (var v in node.Inputs) if (v != null) yield return v;
        foreach (var a in node.Attributes)
            foreach (var g in a.Subgraphs)
                foreach (var inner in g.AllNodes())
                    foreach (var v in inner.Inputs)
                        if (v != null) yield return v;
    }

    public override string ToString() => $"graph {Name} ({_count} nodes)";

    /// <summary>Graph outputs; keeps each value's "is a graph output" back-link current.</summary>
    public sealed class OutputList : System.Collections.ObjectModel.Collection<Value>
    {
        private readonly Graph _owner;
        internal OutputList(Graph owner) => _owner = owner;

        protected override void InsertItem(int index, Value item)
        {
            base.InsertItem(index, item);
            item.GraphOutputOf.Add(_owner);
        }

        protected override void SetItem(int index, Value item)
        {
            this[index].GraphOutputOf.Remove(_owner);
            base.SetItem(index, item);
            item.GraphOutputOf.Add(_owner);
        }

        protected override void RemoveItem(int index)
        {
            this[index].GraphOutputOf.Remove(_owner);
            base.RemoveItem(index);
        }

        protected override void ClearItems()
        {
            foreach (var v in this) v.GraphOutputOf.Remove(_owner);
            base.ClearItems();
        }
    }
}

/// <summary>A sparse initializer of a graph (GraphProto.sparse_initializer).</summary>
public sealed record SparseInitializer(string Name, SparseTensor Tensor);
