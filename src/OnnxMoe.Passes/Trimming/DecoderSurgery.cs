using System.Globalization;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Passes.Cleanup;
using OnnxMoe.Structure;

namespace OnnxMoe.Passes.Trimming;

/// <summary>
/// Structural edits of a lowered decoder, driven by its <see cref="DecoderStructure"/> metadata: remove an
/// MoE sub-layer, a whole block (with its KV cache), or routed experts. Each edit rewires by value identity,
/// removes what became dead (nodes, then initializers nobody reads) and keeps the structure record current;
/// <see cref="Commit"/> writes it back. Counters: nodes-removed, initializers-removed, parameters-removed.
/// </summary>
internal sealed class DecoderSurgery
{
    private readonly string _passName;
    private Dictionary<string, Node>? _nodes;
    private Dictionary<string, Value>? _values;

    public DecoderSurgery(Model model, string passName, CounterSet counters)
    {
        Model = model;
        _passName = passName;
        Counters = counters;
        try
        {
            Structure = DecoderStructure.Read(model);
        }
        catch (InvalidDataException e)
        {
            throw new PassException(passName, e.Message);
        }
    }

    public Model Model { get; }
    public Graph Graph => Model.Graph;
    public DecoderStructure Structure { get; }
    public CounterSet Counters { get; }

    /// <summary>Writes the structure back into the model metadata.</summary>
    public void Commit() => Structure.WriteTo(Model);

    // ---- lookups --------------------------------------------------------------------------------

    public BlockStructure Block(int index) =>
        Structure.Blocks.FirstOrDefault(b => b.Index == index) ?? throw new PassException(_passName, $"layer {index} does not exist; valid layers: {DescribeIndices(Structure.Blocks.Select(b => b.Index))}");

    public IEnumerable<BlockStructure> MoeBlocks => Structure.Blocks.Where(b => b.Ffn is { Kind: FfnKind.Moe });

    /// <summary>"0..31", or a list when there are gaps (after blocks were dropped): "0..2, 5, 7..9".</summary>
    public static string DescribeIndices(IEnumerable<int> indices)
    {
        var sorted = indices.Distinct().Order().ToList();
        if (sorted.Count == 0) return "none";
        var parts = new List<string>();
        int start = sorted[0], prev = sorted[0];
        foreach (var i in sorted.Skip(1).Append(int.MinValue))
        {
            if (i == prev + 1) { prev = i; continue; }
            parts.Add(start == prev ? start.ToString(CultureInfo.InvariantCulture)
                : $"{start.ToString(CultureInfo.InvariantCulture)}..{prev.ToString(CultureInfo.InvariantCulture)}");
            start = prev = i;
        }
        return string.Join(", ", parts);
    }

    public Node NodeNamed(string name)
    {
        if (_nodes == null || !_nodes.TryGetValue(name, out var n) || !ReferenceEquals(n.Graph, Graph))
        {
            _nodes = new Dictionary<string, Node>(StringComparer.Ordinal);
            foreach (var node in Graph.Nodes) if (node.Name.Length > 0) _nodes.TryAdd(node.Name, node);
            if (!_nodes.TryGetValue(name, out n))
                throw new PassException(_passName, $"the model's structure metadata names node '{name}', which the graph does not have");
        }
        return n;
    }

    /// <summary>Forgets the name lookups (after renaming values or nodes).</summary>
    public void InvalidateNames()
    {
        _nodes = null;
        _values = null;
    }

    /// <summary>Adds <paramref name="tensor"/> as an initializer just before <paramref name="anchor"/> in the initializer
    /// list (the writer streams initializers in list order).</summary>
    public Value AddInitializerBefore(Value anchor, Tensor tensor)
    {
        var v = new Value(tensor.Name!, null, tensor);
        int at = Graph.Initializers.IndexOf(anchor);
        Graph.Initializers.Insert(at < 0 ? Graph.Initializers.Count : at, v);
        _values = null;
        return v;
    }

    public Value ValueNamed(string name)
    {
        if (_values == null || !_values.TryGetValue(name, out var v) || v.Name != name)
        {
            _values = new Dictionary<string, Value>(StringComparer.Ordinal);
            foreach (var x in Graph.Inputs) _values.TryAdd(x.Name, x);
            foreach (var x in Graph.Initializers) _values.TryAdd(x.Name, x);
            foreach (var node in Graph.Nodes)
                foreach (var o in node.Outputs) if (o.Name.Length > 0) _values.TryAdd(o.Name, o);
            if (!_values.TryGetValue(name, out v))
                throw new PassException(_passName, $"the model's structure metadata names value '{name}', which the graph does not have");
        }
        return v;
    }

    /// <summary>The one node whose name starts with <paramref name="prefix"/> and has op <paramref name="opType"/>.</summary>
    public Node NodeWithPrefix(string prefix, string opType)
    {
        var found = Graph.Nodes.Where(n => n.OpType == opType && n.Name.StartsWith(prefix, StringComparison.Ordinal)).ToList();
        if (found.Count != 1)
            throw new PassException(_passName, $"expected one {opType} node under {prefix}, found {found.Count}: the graph does not follow the onnxmoe decoder conventions");
        return found[0];
    }

    // ---- generic removal ------------------------------------------------------------------------

    /// <summary>Removes <paramref name="roots"/> when unused, then every producer and initializer that becomes unused through them.</summary>
    public void RemoveDead(IEnumerable<Node?> roots)
    {
        var work = new Stack<Node>(roots.Where(n => n != null).Cast<Node>());
        var initializers = new HashSet<Value>(ReferenceEqualityComparer.Instance);
        while (work.Count > 0)
        {
            var n = work.Pop();
            if (!ReferenceEquals(n.Graph, Graph) || n.Outputs.Any(o => o.Uses.Count > 0 || o.IsGraphOutput)) continue;
            var inputs = n.Inputs.Where(v => v != null).Cast<Value>().Distinct(ReferenceEqualityComparer.Instance).Cast<Value>().ToList();
            RemoveUnusedPass.RemoveDeep(Graph, n);
            Counters.Add("nodes-removed");
            foreach (var v in inputs)
            {
                if (v.Uses.Count > 0 || v.IsGraphOutput) continue;
                if (v.Producer is { } p) work.Push(p);
                else if (v.ConstValue != null) initializers.Add(v);
            }
        }
        if (initializers.Count == 0) return;
        var inputs2 = new HashSet<Value>(Graph.Inputs, ReferenceEqualityComparer.Instance);
        int before = Graph.Initializers.Count;
        foreach (var v in Graph.Initializers)
            if (initializers.Contains(v) && !inputs2.Contains(v)) Counters.Add("parameters-removed", v.ConstValue!.ElementCount);
        Graph.Initializers.RemoveAll(v => initializers.Contains(v) && !inputs2.Contains(v));
        Counters.Add("initializers-removed", before - Graph.Initializers.Count);
    }

    // ---- MoE sub-layer --------------------------------------------------------------------------

    /// <summary>Removes the MoE sub-layer of <paramref name="block"/> with its post-attention norm; the residual passes through.</summary>
    public void RemoveMoeLayer(BlockStructure block)
    {
        var ffn = block.Ffn ?? throw new InvalidOperationException($"layer {block.Index} has no FFN");
        var add = NodeNamed(ffn.ResidualAdd);
        var h = ValueNamed(block.Attention.Output);
        add.Outputs[0].ReplaceAllUsesWith(h);
        RemoveDead([add]);
        ReplaceBlockOutput(block, h.Name);
        block.Ffn = null;
        Counters.Add("moe-layers-removed");
    }

    /// <summary>The block's output is now <paramref name="newOutput"/>: the next block reads it.</summary>
    private void ReplaceBlockOutput(BlockStructure block, string newOutput)
    {
        int i = Structure.Blocks.IndexOf(block);
        if (i + 1 < Structure.Blocks.Count) Structure.Blocks[i + 1].Input = newOutput;
        block.Output = newOutput;
    }

    // ---- whole block ----------------------------------------------------------------------------

    /// <summary>Removes a decoder block with its KV-cache inputs and outputs; call <see cref="RenumberKvCache"/> after the last removal.</summary>
    public void RemoveBlock(BlockStructure block)
    {
        if (Structure.Blocks.Count == 1) throw new PassException(_passName, $"cannot drop layer {block.Index}: it is the model's last remaining block");
        var input = ValueNamed(block.Input);
        var output = ValueNamed(block.Output);
        var presents = new List<Value>();
        foreach (var name in new[] { block.Attention.PresentKey, block.Attention.PresentValue })
        {
            int k = Graph.Outputs.ToList().FindIndex(v => v.Name == name);
            if (k < 0) throw new PassException(_passName, $"layer {block.Index}: graph output '{name}' named by the structure metadata does not exist");
            presents.Add(Graph.Outputs[k]);
            Graph.Outputs.RemoveAt(k);
        }
        output.ReplaceAllUsesWith(input);
        RemoveDead([output.Producer, .. presents.Select(p => p.Producer)]);
        foreach (var name in new[] { block.Attention.PastKey, block.Attention.PastValue })
        {
            var past = Graph.Inputs.FirstOrDefault(v => v.Name == name)
                ?? throw new PassException(_passName, $"layer {block.Index}: graph input '{name}' named by the structure metadata does not exist");
            if (past.Uses.Count > 0) throw new InvalidOperationException($"layer {block.Index}: {name} is still read by {past.Uses[0].Node} after removing the block");
            Graph.Inputs.Remove(past);
            Counters.Add("kv-inputs-removed");
        }
        int i = Structure.Blocks.IndexOf(block);
        if (i + 1 < Structure.Blocks.Count) Structure.Blocks[i + 1].Input = block.Input;
        Structure.Blocks.RemoveAt(i);
        Counters.Add("blocks-removed");
    }

    /// <summary>Renames KV-cache inputs/outputs to past_key_values.{j}.* / present.{j}.* for j = 0.. in block order,
    /// as ORT GenAI expects (num_hidden_layers = the number of blocks left).</summary>
    public void RenumberKvCache()
    {
        for (int j = 0; j < Structure.Blocks.Count; j++)
        {
            var a = Structure.Blocks[j].Attention;
            a.PastKey = Rename(Graph.Inputs, a.PastKey, $"past_key_values.{j}.key");
            a.PastValue = Rename(Graph.Inputs, a.PastValue, $"past_key_values.{j}.value");
            a.PresentKey = Rename(Graph.Outputs, a.PresentKey, $"present.{j}.key");
            a.PresentValue = Rename(Graph.Outputs, a.PresentValue, $"present.{j}.value");
        }
        _values = null;
    }

    private string Rename(IEnumerable<Value> values, string from, string to)
    {
        if (from == to) return to;
        var v = values.FirstOrDefault(x => x.Name == from) ?? throw new PassException(_passName, $"graph has no KV-cache value '{from}'");
        // Blocks are renamed in ascending order to lower or equal numbers, so the target name is free by now.
        v.Name = to;
        return to;
    }

    // ---- experts --------------------------------------------------------------------------------

    /// <summary>Removes routed experts (original ids) of an MoE layer with their router columns; top-k becomes min(k, remaining).</summary>
    public void RemoveExperts(BlockStructure block, IReadOnlyCollection<int> expertIds)
    {
        if (expertIds.Count == 0) return;
        var ffn = block.Ffn!;
        var moe = ffn.Moe!;
        var keepColumns = Enumerable.Range(0, moe.ExpertIds.Count).Where(c => !expertIds.Contains(moe.ExpertIds[c])).ToArray();
        if (keepColumns.Length == 0)
            throw new PassException(_passName, $"removing experts {string.Join(",", expertIds.Order())} would leave layer {block.Index} with no routed expert");

        // Router weight [hidden, experts]: keep the columns of the kept experts.
        var router = NodeNamed(moe.RouterMatMul);
        var w = router.Inputs[1];
        if (router.OpType != "MatMul" || w?.ConstValue is not { Shape.Length: 2 } wt || wt.Shape[1] != moe.ExpertIds.Count)
            throw new PassException(_passName, $"layer {block.Index}: router {moe.RouterMatMul} is not a MatMul by a [hidden, {moe.ExpertIds.Count}] initializer (prune experts before quantizing)");
        var sliced = SliceColumns(wt, keepColumns);
        Counters.Add("parameters-removed", wt.ElementCount - sliced.ElementCount);
        ReplaceConstant(router, 1, sliced);

        var keptIds = keepColumns.Select(c => moe.ExpertIds[c]).ToList();
        var tableNode = ValueNamed(moe.ExpertIdTable);
        foreach (var use in tableNode.Uses.ToList())
            ReplaceConstant(use.Node, use.Index, InMemoryTensor.FromInt64s([keptIds.Count], keptIds.Select(e => (long)e).ToArray()));

        int topK = Math.Min(moe.TopK, keptIds.Count);
        var topKNode = NodeNamed(moe.TopKNode);
        if (topK != moe.TopK) ReplaceConstant(topKNode, 1, InMemoryTensor.FromInt64s([1], [topK]));

        foreach (var e in expertIds.Order())
        {
            var scatter = NodeWithPrefix($"{ffn.Prefix}experts.{e.ToString(CultureInfo.InvariantCulture)}/", "ScatterND");
            scatter.Outputs[0].ReplaceAllUsesWith(scatter.Inputs[0]!);
            RemoveDead([scatter]);
            Counters.Add("experts-removed");
        }
        moe.ExpertIds = keptIds;
        moe.TopK = topK;
    }

    /// <summary>Points <paramref name="node"/>'s input at a constant holding <paramref name="tensor"/>: the old initializer is
    /// updated in place when this node is its only reader, else a new initializer is added.</summary>
    private void ReplaceConstant(Node node, int index, Tensor tensor)
    {
        var old = node.Inputs[index] ?? throw new InvalidOperationException($"{node} input {index} is empty");
        if (old.ConstValue == null) throw new PassException(_passName, $"{node} input {index} ({old.Name}) is not an initializer");
        var type = new TensorType(tensor.DataType, tensor.Shape.Select(d => new Dim(d)).ToArray());
        if (old.Uses.Count == 1 && !old.IsGraphOutput && !Graph.Inputs.Contains(old))
        {
            old.ConstValue = tensor;
            old.Type = type;
            return;
        }
        var names = NameAuthority.ForGraph(Graph);
        var fresh = new Value(names.Unique(old.Name + "_pruned"), type, tensor);
        Graph.AddInitializer(fresh);
        node.SetInput(index, fresh);
        _values = null;
    }

    /// <summary>Columns <paramref name="keep"/> of a 2-D tensor of any byte-aligned element type, computed when the bytes are needed.</summary>
    internal static Tensor SliceColumns(Tensor source, int[] keep)
    {
        long rows = source.Shape[0], cols = source.Shape[1];
        int width = source.DataType.BitWidth() / 8;
        if (width == 0) throw new InvalidOperationException($"cannot slice columns of a {source.DataType.Name()} tensor");
        return new LazyTensor(source.DataType, [rows, keep.Length], () =>
        {
            var src = source.GetBytes();
            var dst = new byte[rows * keep.Length * width];
            for (long r = 0; r < rows; r++)
                for (int c = 0; c < keep.Length; c++)
                    src.Slice((int)((r * cols + keep[c]) * width), width).CopyTo(dst.AsSpan((int)((r * keep.Length + c) * width), width));
            return dst;
        }) { Name = source.Name };
    }
}
