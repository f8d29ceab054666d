using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Ir;

/// <summary>A use of a value: <see cref="Node"/> reads it at input <see cref="Index"/>.</summary>
public readonly record struct Use(Node Node, int Index);

/// <summary>
/// An SSA value: a graph input, an initializer (<see cref="ConstValue"/> set), or a node output.
/// Values are linked by identity; <see cref="Name"/> is for people and selection, never for linking.
/// </summary>
public sealed class Value
{
    internal readonly List<Use> UsesList = new();

    public Value(string name = "", ValueType? type = null, Tensor? constValue = null)
    {
        Name = name;
        Type = type;
        ConstValue = constValue;
        if (constValue != null && type == null)
            Type = new TensorType(constValue.DataType, constValue.Shape.Select(d => new Dim(d)).ToArray());
    }

    public string Name { get; set; }
    public ValueType? Type { get; set; }
    public string? DocString { get; set; }
    public Dictionary<string, string>? MetadataProps { get; set; }

    /// <summary>Opaque data a serializer attaches to reproduce the original encoding exactly; never interpreted by passes.</summary>
    public object? SerializationHint { get; set; }
    /// <summary>Initializer data (graph initializers) or null.</summary>
    public Tensor? ConstValue { get; set; }

    /// <summary>Node that produces this value, or null for graph inputs and initializers.</summary>
    public Node? Producer { get; internal set; }
    public int OutputIndex { get; internal set; } = -1;

    /// <summary>Every (node, input index) reading this value, in insertion order.</summary>
    public IReadOnlyList<Use> Uses => UsesList;

    /// <summary>True when the value is a graph output of <see cref="Graph.Outputs"/> of any graph (set by the graph).</summary>
    public bool IsGraphOutput => GraphOutputOf.Count > 0;
    internal List<Graph> GraphOutputOf { get; } = new();

    public TensorType? TensorType => Type as TensorType;
    public DataType? ElementType => (Type as TensorType)?.ElementType;
    public IReadOnlyList<Dim>? Shape => (Type as TensorType)?.Shape;

    /// <summary>Points every use of this value (node inputs and graph outputs) at <paramref name="replacement"/>.</summary>
    public void ReplaceAllUsesWith(Value replacement, bool replaceGraphOutputs = true)
    {
        if (ReferenceEquals(replacement, this)) return;
        foreach (var use in UsesList.ToArray()) use.Node.SetInput(use.Index, replacement);
        if (replaceGraphOutputs)
            foreach (var g in GraphOutputOf.ToArray())
                for (int i = 0; i < g.Outputs.Count; i++)
                    if (ReferenceEquals(g.Outputs[i], this)) g.Outputs[i] = replacement;
    }

    public override string ToString() => $"%{Name}";
}
