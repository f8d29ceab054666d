using System.Runtime.InteropServices;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Ir.Building;

/// <summary>
/// Typed builder appending nodes to a <see cref="Graph"/>: one method per operator returning its
/// output values. Nodes are named from a scope stack (<c>/model/layers.3/attn/</c> + op type, made
/// unique with _1, _2 ...), outputs <c>{node}/output_{k}</c>. Small constants are initializers
/// created and deduplicated by content. Element types are tracked on outputs (shape left unknown)
/// so <see cref="Cast"/> to the same type is a no-op.
/// </summary>
public sealed class GraphBuilder
{
    private readonly List<string> _scopes = new();
    private readonly Dictionary<string, Value> _constants = new(StringComparer.Ordinal);

    public GraphBuilder(Graph graph, NameAuthority? names = null)
    {
        Graph = graph;
        Names = names ?? NameAuthority.ForGraph(graph);
    }

    public Graph Graph { get; }
    public NameAuthority Names { get; }

    /// <summary>Current node-name prefix, always ending in '/': "/" at the root.</summary>
    public string Scope => "/" + string.Concat(_scopes.Select(s => s + "/"));

    /// <summary>Pushes a name segment (may contain '/'); dispose the handle to pop it.</summary>
    public IDisposable PushScope(string segment)
    {
        segment = segment.Trim('/');
        _scopes.Add(segment);
        return new ScopeHandle(this, _scopes.Count);
    }

    private sealed class ScopeHandle(GraphBuilder owner, int depth) : IDisposable
    {
        private bool _done;
        public void Dispose()
        {
            if (_done) return;
            _done = true;
            if (owner._scopes.Count != depth) throw new InvalidOperationException("scopes must be popped in reverse order");
            owner._scopes.RemoveAt(depth - 1);
        }
    }

    // ---- graph boundary -------------------------------------------------------------------------

    public Value AddInput(string name, DataType type, params Dim[] shape)
    {
        Reserve(name);
        var v = new Value(name, new TensorType(type, shape));
        Graph.Inputs.Add(v);
        return v;
    }

    /// <summary>Makes <paramref name="value"/> a graph output called <paramref name="name"/>, renaming it
    /// (or inserting an Identity when it is a graph input, initializer or already an output).</summary>
    public Value AddOutput(Value value, string name, params Dim[] shape)
    {
        if (value.Producer == null || value.IsGraphOutput)
            value = Op("Identity", [value], 1)[0];
        Names.Reserve(name);
        value.Name = name;
        var elem = value.ElementType ?? DataType.Undefined;
        value.Type = new TensorType(elem, shape.Length == 0 ? null : shape);
        Graph.Outputs.Add(value);
        return value;
    }

    /// <summary>Adds an initializer with exactly <paramref name="name"/> (which must be free).</summary>
    public Value AddInitializer(string name, Tensor tensor)
    {
        Reserve(name);
        return AddReservedInitializer(name, tensor);
    }

    private Value AddReservedInitializer(string name, Tensor tensor)
    {
        tensor.Name ??= name;
        var v = new Value(name, constValue: tensor);
        Graph.AddInitializer(v);
        return v;
    }

    private void Reserve(string name)
    {
        if (Names.Unique(name) != name) throw new InvalidOperationException($"name '{name}' is already used in graph {Graph.Name}");
    }

    // ---- constants --------------------------------------------------------------------------------

    /// <summary>A constant initializer, shared with any earlier constant of identical type, shape and bytes.</summary>
    public Value Constant(Tensor tensor)
    {
        var bytes = tensor.GetBytes();
        string key = $"{tensor.DataType.Name()}|{string.Join(",", tensor.Shape)}|{Convert.ToBase64String(bytes)}";
        if (_constants.TryGetValue(key, out var existing)) return existing;
        string shape = $"[{string.Join(",", tensor.Shape)}]";
        string values = tensor.ElementCount <= 8 && tensor.DataType is DataType.Int64 ? string.Join("_", tensor.GetSpan<long>().ToArray())
            : tensor.ElementCount <= 8 && tensor.DataType is DataType.Float ? string.Join("_", tensor.GetSpan<float>().ToArray().Select(f => f.ToString("R", System.Globalization.CultureInfo.InvariantCulture)))
            : $"c{_constants.Count}";
        var v = AddReservedInitializer(Names.Unique($"/constants/{tensor.DataType.Name()}/{shape}/{values}"), tensor);
        _constants[key] = v;
        return v;
    }

    /// <summary>1-D int64 constant.</summary>
    public Value Int64s(params long[] values) => Constant(InMemoryTensor.FromInt64s([values.Length], values));
    public Value Int64Scalar(long value) => Constant(InMemoryTensor.FromInt64s([], [value]));

    /// <summary>Scalar float constant of element type <paramref name="type"/> (f32, f16 or bf16).</summary>
    public Value FloatScalar(float value, DataType type = DataType.Float) => Constant(FloatTensor(type, [], [value]));

    public static Tensor FloatTensor(DataType type, long[] shape, ReadOnlySpan<float> values) => new InMemoryTensor(type, shape, FloatBytes(type, values));

    /// <summary>The raw little-endian bytes of <paramref name="values"/> as f32, f16 or bf16 (both rounded to nearest even).</summary>
    public static byte[] FloatBytes(DataType type, ReadOnlySpan<float> values)
    {
        switch (type)
        {
            case DataType.Float: return MemoryMarshal.AsBytes(values).ToArray();
            case DataType.Float16:
                {
                    var bytes = new byte[values.Length * 2L];
                    System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(values, MemoryMarshal.Cast<byte, Half>(bytes.AsSpan()));
                    return bytes;
                }
            case DataType.BFloat16:
                {
                    var bytes = new byte[values.Length * 2L];
                    TensorKernels.SingleToBFloat16(values, MemoryMarshal.Cast<byte, ushort>(bytes.AsSpan()));
                    return bytes;
                }
            default: throw new ArgumentException($"{type.Name()} is not a float type");
        }
    }

    // ---- generic node -----------------------------------------------------------------------------

    /// <summary>Appends a node named Scope + <paramref name="opType"/> (unique) and returns its outputs.</summary>
    public Value[] Op(string opType, IReadOnlyList<Value?> inputs, int outputCount, IEnumerable<Attribute>? attributes = null,
        IReadOnlyList<DataType?>? outputTypes = null, string domain = "", string? name = null)
    {
        string nodeName = Names.Unique(Scope + (name ?? opType));
        var outputs = new Value[outputCount];
        for (int k = 0; k < outputCount; k++)
        {
            DataType? t = outputTypes != null && k < outputTypes.Count ? outputTypes[k]
                : inputs.Count > 0 ? inputs[0]?.ElementType : null;
            outputs[k] = new Value(Names.Unique($"{nodeName}/output_{k}"), t is { } et ? new TensorType(et, null) : null);
        }
        var node = new Node(domain, opType, inputs, outputs, nodeName);
        if (attributes != null) foreach (var a in attributes) node.SetAttribute(a);
        Graph.Append(node);
        return outputs;
    }

    private Value One(string op, IReadOnlyList<Value?> inputs, DataType? type = null, params Attribute[] attrs) =>
        Op(op, inputs, 1, attrs, type is { } t ? [t] : null)[0];

    // ---- operators (ONNX default domain, opset 21 semantics) ---------------------------------------

    public Value MatMul(Value a, Value b) => One("MatMul", [a, b]);
    public Value Add(Value a, Value b) => One("Add", [a, b]);
    public Value Sub(Value a, Value b) => One("Sub", [a, b]);
    public Value Mul(Value a, Value b) => One("Mul", [a, b]);
    public Value Div(Value a, Value b) => One("Div", [a, b]);
    public Value Pow(Value a, Value b) => One("Pow", [a, b]);
    public Value Neg(Value x) => One("Neg", [x]);
    public Value Sqrt(Value x) => One("Sqrt", [x]);
    public Value Reciprocal(Value x) => One("Reciprocal", [x]);
    public Value Sigmoid(Value x) => One("Sigmoid", [x]);
    public Value Cos(Value x) => One("Cos", [x]);
    public Value Sin(Value x) => One("Sin", [x]);
    public Value Identity(Value x) => One("Identity", [x]);

    /// <summary>Cast; returns <paramref name="x"/> itself when its element type is already <paramref name="to"/>.</summary>
    public Value Cast(Value x, DataType to) =>
        x.ElementType == to ? x : One("Cast", [x], to, Attribute.Int("to", (long)to));

    public Value Softmax(Value x, long axis = -1) => One("Softmax", [x], null, Attribute.Int("axis", axis));

    public Value Reshape(Value x, Value shape) => One("Reshape", [x, shape]);
    public Value Reshape(Value x, params long[] shape) => Reshape(x, Int64s(shape));
    public Value Transpose(Value x, params long[] perm) => One("Transpose", [x], null, Attribute.Ints("perm", perm));
    public Value Unsqueeze(Value x, params long[] axes) => One("Unsqueeze", [x, Int64s(axes)]);
    public Value Squeeze(Value x, params long[] axes) => One("Squeeze", [x, Int64s(axes)]);
    public Value Concat(long axis, params Value[] xs) => One("Concat", xs, null, Attribute.Int("axis", axis));
    public Value Expand(Value x, Value shape) => One("Expand", [x, shape]);

    /// <summary>Split into <paramref name="parts"/> equal parts along <paramref name="axis"/> (opset 18+ num_outputs).</summary>
    public Value[] Split(Value x, long axis, int parts) =>
        Op("Split", [x], parts, [Attribute.Int("axis", axis), Attribute.Int("num_outputs", parts)]);

    public Value Slice(Value x, long[] starts, long[] ends, long[] axes) =>
        One("Slice", [x, Int64s(starts), Int64s(ends), Int64s(axes)]);

    public Value Gather(Value data, Value indices, long axis = 0) => One("Gather", [data, indices], null, Attribute.Int("axis", axis));

    /// <summary>Shape of <paramref name="x"/>, optionally the [start, end) slice of it (opset 15+).</summary>
    public Value Shape(Value x, long? start = null, long? end = null)
    {
        var attrs = new List<Attribute>();
        if (start is { } s) attrs.Add(Attribute.Int("start", s));
        if (end is { } e) attrs.Add(Attribute.Int("end", e));
        return One("Shape", [x], DataType.Int64, attrs.ToArray());
    }

    public Value Range(Value start, Value limit, Value delta) => One("Range", [start, limit, delta]);
    public Value Equal(Value a, Value b) => One("Equal", [a, b], DataType.Bool);
    public Value LessOrEqual(Value a, Value b) => One("LessOrEqual", [a, b], DataType.Bool);
    public Value And(Value a, Value b) => One("And", [a, b], DataType.Bool);
    public Value Where(Value condition, Value x, Value y) => Op("Where", [condition, x, y], 1, null, [x.ElementType])[0];

    /// <summary>TopK along the last axis (largest, sorted); returns (values, int64 indices).</summary>
    public (Value Values, Value Indices) TopK(Value x, Value k)
    {
        var o = Op("TopK", [x, k], 2, [Attribute.Int("axis", -1), Attribute.Int("largest", 1), Attribute.Int("sorted", 1)],
            [x.ElementType, DataType.Int64]);
        return (o[0], o[1]);
    }

    public Value ReduceSum(Value x, long[] axes, bool keepDims) => One("ReduceSum", [x, Int64s(axes)], null, Attribute.Int("keepdims", keepDims ? 1 : 0));
    public Value ReduceMax(Value x, long[] axes, bool keepDims) => One("ReduceMax", [x, Int64s(axes)], null, Attribute.Int("keepdims", keepDims ? 1 : 0));
    public Value ReduceMean(Value x, long[] axes, bool keepDims) => One("ReduceMean", [x, Int64s(axes)], null, Attribute.Int("keepdims", keepDims ? 1 : 0));

    /// <summary>NonZero: int64 [rank, count].</summary>
    public Value NonZero(Value x) => One("NonZero", [x], DataType.Int64);

    /// <summary>ScatterND; <paramref name="reduction"/> "none", "add", "mul", "max" or "min".</summary>
    public Value ScatterND(Value data, Value indices, Value updates, string reduction = "none") =>
        One("ScatterND", [data, indices, updates], null, Attribute.String("reduction", reduction));

    /// <summary>Tensor of <paramref name="shape"/> filled with <paramref name="value"/> (a one-element tensor).</summary>
    public Value ConstantOfShape(Value shape, Tensor value) =>
        One("ConstantOfShape", [shape], value.DataType, Attribute.TensorValue("value", value));

    public Value Clip(Value x, Value? min, Value? max) => One("Clip", [x, min, max]);
}
