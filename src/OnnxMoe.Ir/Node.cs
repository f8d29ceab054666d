namespace OnnxMoe.Ir;

/// <summary>
/// An operator application. Owns its output values; inputs are references to values (null for an
/// omitted optional input). Use <see cref="SetInput"/> and friends so use lists stay correct.
/// </summary>
public sealed class Node
{
    private readonly List<Value?> _inputs = new();
    private readonly List<Value> _outputs = new();

    public Node(string domain, string opType, IEnumerable<Value?> inputs, int outputCount = 1, string name = "")
        : this(domain, opType, inputs, Enumerable.Range(0, outputCount).Select(_ => new Value()), name)
    {
    }

    public Node(string domain, string opType, IEnumerable<Value?> inputs, IEnumerable<Value> outputs, string name = "")
    {
        Domain = domain;
        OpType = opType;
        Name = name;
        foreach (var v in inputs) AppendInput(v);
        foreach (var o in outputs) AppendOutput(o);
    }

    /// <summary>Operator domain; "" is the default ONNX domain ("ai.onnx" is normalised to "" by readers).</summary>
    public string Domain { get; set; }
    public string OpType { get; set; }
    public string Overload { get; set; } = "";
    public string Name { get; set; }
    public string? DocString { get; set; }
    public Dictionary<string, string>? MetadataProps { get; set; }

    /// <summary>Opaque data a serializer attaches to reproduce the original encoding exactly; never interpreted by passes.</summary>
    public object? SerializationHint { get; set; }
    /// <summary>Attributes in order; names are unique.</summary>
    public List<Attribute> Attributes { get; } = new();

    public IReadOnlyList<Value?> Inputs => _inputs;
    public IReadOnlyList<Value> Outputs => _outputs;

    /// <summary>The graph whose node list holds this node, or null when detached.</summary>
    public Graph? Graph { get; internal set; }
    internal Node? Prev, Next;
    internal bool Removed;

    public Attribute? GetAttribute(string name) => Attributes.FirstOrDefault(a => a.Name == name);

    public Node SetAttribute(Attribute attribute)
    {
        int i = Attributes.FindIndex(a => a.Name == attribute.Name);
        if (i >= 0) Attributes[i] = attribute; else Attributes.Add(attribute);
        return this;
    }

    public long GetInt(string name, long fallback) => GetAttribute(name) is { } a ? a.AsInt() : fallback;

    public void SetInput(int index, Value? value)
    {
        var old = _inputs[index];
        if (ReferenceEquals(old, value)) return;
        old?.UsesList.Remove(new Use(this, index));
        _inputs[index] = value;
        value?.UsesList.Add(new Use(this, index));
    }

    public void AppendInput(Value? value)
    {
        _inputs.Add(value);
        value?.UsesList.Add(new Use(this, _inputs.Count - 1));
    }

    /// <summary>Removes trailing inputs from <paramref name="count"/> on.</summary>
    public void TruncateInputs(int count)
    {
        for (int i = _inputs.Count - 1; i >= count; i--)
        {
            _inputs[i]?.UsesList.Remove(new Use(this, i));
            _inputs.RemoveAt(i);
        }
    }

    public void ClearInputs() => TruncateInputs(0);

    public Value AppendOutput(Value output)
    {
        if (output.Producer != null) throw new InvalidOperationException($"value {output.Name} already has a producer");
        output.Producer = this;
        output.OutputIndex = _outputs.Count;
        _outputs.Add(output);
        return output;
    }

    /// <summary>Removes trailing outputs from <paramref name="count"/> on; they must have no uses.</summary>
    public void TruncateOutputs(int count)
    {
        for (int i = _outputs.Count - 1; i >= count; i--)
        {
            var o = _outputs[i];
            if (o.Uses.Count > 0 || o.IsGraphOutput) throw new InvalidOperationException($"output {o.Name} of {this} is still used");
            o.Producer = null;
            o.OutputIndex = -1;
            _outputs.RemoveAt(i);
        }
    }

    public override string ToString() => string.IsNullOrEmpty(Name) ? $"{(Domain == "" ? "" : Domain + "::")}{OpType}" : Name;
}
