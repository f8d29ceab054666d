using System.Globalization;
using Google.Protobuf;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx.Proto;
using Attribute = OnnxMoe.Ir.Attribute;
using ValueType = OnnxMoe.Ir.ValueType;

namespace OnnxMoe.Onnx;

/// <summary>
/// ModelProto -> IR. Names are resolved once, here, into value identities: each graph has a scope
/// (inputs, initializers, every node output) whose parent is the enclosing graph's scope, so
/// subgraphs capture outer values; functions start a scope of their own.
/// </summary>
internal sealed class ModelDecoder
{
    private readonly string _sourcePath;
    private readonly string _baseDirectory;
    private readonly Dictionary<string, SharedFile> _dataFiles = new(StringComparer.Ordinal);
    private readonly HashSet<Value> _infoApplied = new(ReferenceEqualityComparer.Instance);

    public ModelDecoder(string sourcePath, string baseDirectory)
    {
        _sourcePath = sourcePath;
        _baseDirectory = baseDirectory;
    }

    private sealed class Scope
    {
        private readonly Dictionary<string, Value> _names = new(StringComparer.Ordinal);
        public Scope(Scope? parent) => Parent = parent;
        public Scope? Parent { get; }
        public void Define(string name, Value v) { if (name.Length > 0) _names[name] = v; }
        public bool TryLocal(string name, out Value v) => _names.TryGetValue(name, out v!);
        public Value? Lookup(string name)
        {
            for (var s = this; s != null; s = s.Parent)
                if (s._names.TryGetValue(name, out var v)) return v;
            return null;
        }
    }

    private OnnxFormatException Error(string what) => new($"{_sourcePath}: {what}");

    public Model DecodeModel(ModelProto p)
    {
        if (p.Graph == null) throw Error("not an ONNX model (no graph; the file may be truncated or not a model)");
        if (p.OpsetImport.Count == 0) throw Error("not a valid ONNX model (no opset_import; the file may be truncated)");
        var hint = new ModelHint { IrVersionAbsent = !p.HasIrVersion };
        var graph = DecodeGraph(p.Graph, null, "graph");
        var model = new Model(graph)
        {
            IrVersion = p.IrVersion,
            ProducerName = p.HasProducerName ? p.ProducerName : null,
            ProducerVersion = p.HasProducerVersion ? p.ProducerVersion : null,
            Domain = p.HasDomain ? p.Domain : null,
            ModelVersion = p.HasModelVersion ? p.ModelVersion : null,
            DocString = p.HasDocString ? p.DocString : null,
            SerializationHint = hint,
        };
        foreach (var o in p.OpsetImport) model.OpsetImports.Add(DecodeOpset(o, hint.Opsets));
        foreach (var kv in p.MetadataProps) model.MetadataProps.Add(new(kv.Key, kv.Value));
        foreach (var f in p.Functions) model.Functions.Add(DecodeFunction(f));
        // Training info and multi-device configurations are carried verbatim (not part of the IR's semantics).
        foreach (var t in p.TrainingInfo) hint.TrainingInfo.Add(t.ToByteArray());
        foreach (var c in p.Configuration) hint.Configuration.Add(c.ToByteArray());
        return model;
    }

    private static OpsetImport DecodeOpset(OperatorSetIdProto o, OpsetHints hints)
    {
        var op = new OpsetImport(NormalizeDomain(o.HasDomain ? o.Domain : null), o.Version);
        var raw = new OpsetRaw(o.HasDomain ? o.Domain : null, !o.HasVersion);
        if (raw != new OpsetRaw(op.Domain, false)) hints.Raw[op] = raw;
        return op;
    }

    public static string NormalizeDomain(string? d) => d is null or "ai.onnx" ? "" : d;

    private Function DecodeFunction(FunctionProto f)
    {
        var scope = new Scope(null);
        var body = new Graph(f.Name);
        var hint = new FunctionHint
        {
            Name = f.HasName ? f.Name : null,
            Domain = f.HasDomain ? f.Domain : null,
            Overload = f.HasOverload ? f.Overload : null,
        };
        foreach (var name in f.Input)
        {
            var v = new Value(name);
            body.Inputs.Add(v);
            scope.Define(name, v);
        }
        DecodeNodes(f.Node, body, scope, $"function {f.Domain}::{f.Name}");
        foreach (var name in f.Output) body.Outputs.Add(Resolve(name, scope));
        foreach (var vi in f.ValueInfo) body.ValueInfos.Add(ApplyValueInfo(vi, scope, ValueInfoRole.ValueInfo));
        var fn = new Function(f.Domain, f.Name, body)
        {
            Overload = f.Overload,
            DocString = f.HasDocString ? f.DocString : null,
            MetadataProps = DecodeMetadata(f.MetadataProps),
            SerializationHint = hint,
        };
        fn.AttributeNames.AddRange(f.Attribute);
        foreach (var a in f.AttributeProto) fn.AttributeDefaults.Add(DecodeAttribute(a, scope, null, $"function {f.Name}"));
        foreach (var o in f.OpsetImport) fn.OpsetImports.Add(DecodeOpset(o, hint.Opsets));
        return fn;
    }

    private Graph DecodeGraph(GraphProto gp, Scope? parent, string where)
    {
        var scope = new Scope(parent);
        var graph = new Graph(gp.Name)
        {
            DocString = gp.HasDocString ? gp.DocString : null,
            MetadataProps = DecodeMetadata(gp.MetadataProps),
            SerializationHint = new GraphHint { Name = gp.HasName ? gp.Name : null },
        };
        where = $"{where} '{gp.Name}'";
        foreach (var t in gp.Initializer)
        {
            var tensor = DecodeTensor(t, $"initializer '{t.Name}' of {where}");
            var v = new Value(t.Name, null, tensor);
            graph.Initializers.Add(v);
            scope.Define(t.Name, v);
        }
        foreach (var s in gp.SparseInitializer)
        {
            var sparse = DecodeSparse(s, $"sparse initializer of {where}");
            string name = sparse.Values.Name ?? "";
            graph.SparseInitializers.Add(new SparseInitializer(name, sparse));
            // Nodes may read a sparse initializer by name; it gets a value of its own to link to.
            scope.Define(name, new Value(name, new SparseTensorType(sparse.Values.DataType, sparse.Dims.Select(d => new Dim(d)).ToArray())));
        }
        foreach (var vi in gp.Input)
        {
            Value v;
            if (scope.TryLocal(vi.Name, out var init) && init.ConstValue != null && !_infoApplied.Contains(init))
            {
                // An input with a default (IR < 4 style): the input and the initializer are one value.
                v = init;
                v.Type = null;
                ApplyInfo(v, vi, ValueInfoRole.Input);
            }
            else
            {
                v = new Value(vi.Name);
                ApplyInfo(v, vi, ValueInfoRole.Input);
                scope.Define(vi.Name, v);
            }
            graph.Inputs.Add(v);
        }
        DecodeNodes(gp.Node, graph, scope, where);
        foreach (var vi in gp.Output) graph.Outputs.Add(ApplyValueInfo(vi, scope, ValueInfoRole.Output));
        foreach (var vi in gp.ValueInfo) graph.ValueInfos.Add(ApplyValueInfo(vi, scope, ValueInfoRole.ValueInfo));
        foreach (var qa in gp.QuantizationAnnotation)
            graph.Extras.Add(new TensorAnnotation(qa.HasTensorName ? qa.TensorName : null,
                qa.QuantParameterTensorNames.Select(kv => new KeyValuePair<string, string>(kv.Key, kv.Value)).ToArray()));
        return graph;
    }

    private void DecodeNodes(IList<NodeProto> protos, Graph graph, Scope scope, string where)
    {
        // Outputs first, so that a node may read a value produced later in the list (files are not
        // always sorted) and subgraphs may capture any value of this graph.
        var nodes = new Node[protos.Count];
        for (int i = 0; i < protos.Count; i++)
        {
            var np = protos[i];
            var outputs = np.Output.Select(n => new Value(n)).ToArray();
            nodes[i] = new Node(NormalizeDomain(np.HasDomain ? np.Domain : null), np.OpType, [], outputs, np.Name)
            {
                Overload = np.Overload,
                DocString = np.HasDocString ? np.DocString : null,
                MetadataProps = DecodeMetadata(np.MetadataProps),
                SerializationHint = new NodeHint
                {
                    Name = np.HasName ? np.Name : null,
                    OpType = np.HasOpType ? np.OpType : null,
                    Domain = np.HasDomain ? np.Domain : null,
                    Overload = np.HasOverload ? np.Overload : null,
                    DeviceConfigurations = np.DeviceConfigurations.Count == 0 ? null : np.DeviceConfigurations.Select(d => d.ToByteArray()).ToList(),
                },
            };
            foreach (var o in outputs) scope.Define(o.Name, o);
        }
        for (int i = 0; i < protos.Count; i++)
        {
            var np = protos[i];
            var node = nodes[i];
            string nodeWhere = $"node '{np.Name}' ({np.OpType}) of {where}";
            foreach (var a in np.Attribute) node.Attributes.Add(DecodeAttribute(a, scope, node, nodeWhere));
            foreach (var name in np.Input) node.AppendInput(name.Length == 0 ? null : Resolve(name, scope));
            graph.Append(node);
        }
    }

    /// <summary>The value a name denotes in scope; an undefined name (invalid model, or a function body
    /// reading an outer name) gets a producer-less value so the name survives a round trip.</summary>
    private static Value Resolve(string name, Scope scope)
    {
        var v = scope.Lookup(name);
        if (v != null) return v;
        v = new Value(name);
        scope.Define(name, v);
        return v;
    }

    private Value ApplyValueInfo(ValueInfoProto vi, Scope scope, ValueInfoRole role)
    {
        var v = Resolve(vi.Name, scope);
        ApplyInfo(v, vi, role);
        return v;
    }

    /// <summary>The first appearance of a value sets its type and docs; a later appearance that says
    /// something else (e.g. value_info disagreeing with an output) is kept as an override.</summary>
    private void ApplyInfo(Value v, ValueInfoProto vi, ValueInfoRole role)
    {
        var data = new ValueInfoData(vi.HasName ? vi.Name : null, vi.Type == null ? null : DecodeType(vi.Type),
            vi.HasDocString ? vi.DocString : null,
            vi.MetadataProps.Count == 0 ? null : vi.MetadataProps.Select(kv => new KeyValuePair<string, string>(kv.Key, kv.Value)).ToArray());
        if (_infoApplied.Add(v))
        {
            v.Type = data.Type;
            v.DocString = data.DocString;
            v.MetadataProps = DecodeMetadata(vi.MetadataProps);
            if (data.Name == null) (v.SerializationHint as ValueHint ?? Hint(v)).Primary = data;
            return;
        }
        var hint = Hint(v);
        hint.Primary ??= new ValueInfoData(v.Name, v.Type, v.DocString, v.MetadataProps?.ToArray());
        if (!data.SameAs(hint.Primary)) (hint.Overrides ??= new())[role] = data;
    }

    private static ValueHint Hint(Value v) => (ValueHint)(v.SerializationHint ??= new ValueHint());

    private static Dictionary<string, string>? DecodeMetadata(IList<StringStringEntryProto> entries)
    {
        if (entries.Count == 0) return null;
        var d = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var kv in entries) d[kv.Key] = kv.Value;
        return d;
    }

    private Attribute DecodeAttribute(AttributeProto a, Scope scope, Node? owner, string where)
    {
        var type = (AttributeType)a.Type;
        bool absent = false;
        object? value;
        switch (type)
        {
            case AttributeType.Float: value = a.F; absent = !a.HasF; break;
            case AttributeType.Int: value = a.I; absent = !a.HasI; break;
            case AttributeType.String: value = a.S.ToByteArray(); absent = !a.HasS; break;
            case AttributeType.Tensor: value = a.T == null ? null : DecodeTensor(a.T, $"attribute '{a.Name}' of {where}"); break;
            case AttributeType.Graph: value = a.G == null ? null : Subgraph(a.G, scope, owner, where); break;
            case AttributeType.SparseTensor: value = a.SparseTensor == null ? null : DecodeSparse(a.SparseTensor, $"attribute '{a.Name}' of {where}"); break;
            case AttributeType.TypeProto: value = a.Tp == null ? null : DecodeType(a.Tp); break;
            case AttributeType.Floats: value = a.Floats.ToArray(); break;
            case AttributeType.Ints: value = a.Ints.ToArray(); break;
            case AttributeType.Strings: value = a.Strings.Select(s => s.ToByteArray()).ToArray(); break;
            case AttributeType.Tensors: value = a.Tensors.Select(t => DecodeTensor(t, $"attribute '{a.Name}' of {where}")).ToArray(); break;
            case AttributeType.Graphs: value = a.Graphs.Select(g => Subgraph(g, scope, owner, where)).ToArray(); break;
            case AttributeType.SparseTensors: value = a.SparseTensors.Select(s => DecodeSparse(s, $"attribute '{a.Name}' of {where}")).ToArray(); break;
            case AttributeType.TypeProtos: value = a.TypeProtos.Select(DecodeType).ToArray(); break;
            default: value = null; break;
        }
        var attr = new Attribute(a.Name, type, value)
        {
            RefAttrName = a.HasRefAttrName ? a.RefAttrName : null,
            DocString = a.HasDocString ? a.DocString : null,
        };
        if (!a.HasName || !a.HasType || absent)
            attr.SerializationHint = new AttributeHint { Name = a.HasName ? a.Name : null, TypeAbsent = !a.HasType, ValueAbsent = absent };
        return attr;
    }

    private Graph Subgraph(GraphProto g, Scope scope, Node? owner, string where)
    {
        var graph = DecodeGraph(g, scope, $"subgraph of {where}");
        graph.ParentNode = owner;
        return graph;
    }

    private SparseTensor DecodeSparse(SparseTensorProto s, string where)
    {
        if (s.Values == null || s.Indices == null) throw Error($"{where}: sparse tensor without values or indices");
        return new SparseTensor(DecodeTensor(s.Values, where + " (values)"), DecodeTensor(s.Indices, where + " (indices)"), s.Dims.ToArray());
    }

    public static ValueType DecodeType(TypeProto t)
    {
        ValueType result = t.ValueCase switch
        {
            TypeProto.ValueOneofCase.TensorType => new TensorType(t.TensorType.HasElemType ? (DataType)t.TensorType.ElemType : MissingElementType, DecodeShape(t.TensorType.Shape)),
            TypeProto.ValueOneofCase.SparseTensorType => new SparseTensorType(t.SparseTensorType.HasElemType ? (DataType)t.SparseTensorType.ElemType : MissingElementType, DecodeShape(t.SparseTensorType.Shape)),
            TypeProto.ValueOneofCase.SequenceType => new SequenceType(t.SequenceType.ElemType == null ? null : DecodeType(t.SequenceType.ElemType)),
            TypeProto.ValueOneofCase.MapType => new MapType(t.MapType.HasKeyType ? (DataType)t.MapType.KeyType : MissingElementType, t.MapType.ValueType == null ? null : DecodeType(t.MapType.ValueType)),
            TypeProto.ValueOneofCase.OptionalType => new OptionalType(t.OptionalType.ElemType == null ? null : DecodeType(t.OptionalType.ElemType)),
            TypeProto.ValueOneofCase.OpaqueType => new OpaqueType(t.OpaqueType.HasDomain ? t.OpaqueType.Domain : null, t.OpaqueType.HasName ? t.OpaqueType.Name : null),
            _ => new UnsetType(),
        };
        return t.HasDenotation ? result with { Denotation = t.Denotation } : result;
    }

    /// <summary>Stands for an element/key type field that is absent in the file (distinct from an explicit UNDEFINED = 0).</summary>
    public const DataType MissingElementType = (DataType)int.MinValue;

    private static IReadOnlyList<Dim>? DecodeShape(TensorShapeProto? s) =>
        s?.Dim.Select(d => new Dim(d.HasDimValue ? d.DimValue : null, d.HasDimParam ? d.DimParam : null, d.HasDenotation ? d.Denotation : null)).ToArray();

    public Tensor DecodeTensor(TensorProto p, string where)
    {
        var dtype = (DataType)p.DataType;
        where = $"tensor '{p.Name}' ({where})";
        var shape = p.Dims.ToArray();
        foreach (var d in shape)
            if (d < 0) throw Error($"{where}: negative dimension {d}");
        long elements;
        try
        {
            elements = 1;
            foreach (var d in shape) elements = checked(elements * d);
        }
        catch (OverflowException) { throw Error($"{where}: element count overflows"); }

        var hint = new TensorHint
        {
            DataTypeAbsent = !p.HasDataType,
            NameAbsent = !p.HasName,
            DataLocation = p.HasDataLocation ? p.DataLocation : null,
            HasSegment = p.Segment != null,
            SegmentBegin = p.Segment is { HasBegin: true } ? p.Segment.Begin : null,
            SegmentEnd = p.Segment is { HasEnd: true } ? p.Segment.End : null,
            MetadataProps = p.MetadataProps.Count == 0 ? null : p.MetadataProps.Select(kv => new KeyValuePair<string, string>(kv.Key, kv.Value)).ToList(),
        };
        Tensor tensor;
        if (p.HasDataLocation && p.DataLocation == 1)
        {
            hint.Encoding = TensorEncoding.External;
            tensor = DecodeExternal(p, dtype, shape, where);
        }
        else
        {
            var field = TensorCodec.FieldInUse(p);
            hint.Encoding = field;
            tensor = DecodeEmbedded(p, field, dtype, shape, elements, where);
        }
        tensor.Name = p.HasName ? p.Name : null;
        tensor.DocString = p.HasDocString ? p.DocString : null;
        tensor.SerializationHint = hint;
        return tensor;
    }

    private Tensor DecodeEmbedded(TensorProto p, TensorEncoding field, DataType dtype, long[] shape, long elements, string where)
    {
        if (dtype == DataType.String)
        {
            if (field is not (TensorEncoding.StringData or TensorEncoding.None))
                throw Error($"{where}: string tensor stored in {TensorCodec.FieldName(field)}");
            if (p.StringData.Count != elements)
                throw Error($"{where}: shape [{string.Join(",", shape)}] needs {elements} strings, string_data has {p.StringData.Count}");
            return new StringTensor(shape, p.StringData.Select(s => s.ToByteArray()).ToArray());
        }
        if (dtype.BitWidth() == 0)
        {
            // Unknown or undefined element type: only raw bytes can be kept.
            if (field is not (TensorEncoding.Raw or TensorEncoding.None))
                throw Error($"{where}: data type code {(int)dtype} is unknown, cannot interpret {TensorCodec.FieldName(field)}");
            return new UnknownTypeTensor(dtype, shape, p.RawData.ToByteArray());
        }
        long expected = dtype.ByteCount(elements);
        byte[] raw;
        if (field == TensorEncoding.Raw)
        {
            if (p.RawData.Length != expected)
                throw Error($"{where}: {dtype.Name()}[{string.Join(",", shape)}] needs {expected} bytes, raw_data has {p.RawData.Length}");
            raw = p.RawData.ToByteArray();
        }
        else if (field == TensorEncoding.None)
        {
            if (elements != 0) throw Error($"{where}: {dtype.Name()}[{string.Join(",", shape)}] has no data");
            raw = [];
        }
        else
        {
            if (!TensorCodec.Allows(field, dtype)) throw Error($"{where}: {TensorCodec.FieldName(field)} cannot hold {dtype.Name()} elements");
            long entries = field switch
            {
                TensorEncoding.FloatData => p.FloatData.Count,
                TensorEncoding.Int32Data => p.Int32Data.Count,
                TensorEncoding.Int64Data => p.Int64Data.Count,
                TensorEncoding.DoubleData => p.DoubleData.Count,
                TensorEncoding.UInt64Data => p.Uint64Data.Count,
                _ => p.StringData.Count,
            };
            long want = TensorCodec.EntryCount(field, dtype, elements);
            if (entries != want)
                throw Error($"{where}: {dtype.Name()}[{string.Join(",", shape)}] needs {want} entries, {TensorCodec.FieldName(field)} has {entries}");
            raw = TensorCodec.Decode(p, field, dtype);
        }
        return new InMemoryTensor(dtype, shape, raw);
    }

    private Tensor DecodeExternal(TensorProto p, DataType dtype, long[] shape, string where)
    {
        string? location = null;
        long offset = 0;
        long? length = null;
        foreach (var kv in p.ExternalData)
        {
            switch (kv.Key)
            {
                case "location": location = kv.Value; break;
                case "offset":
                    if (!long.TryParse(kv.Value, NumberStyles.None, CultureInfo.InvariantCulture, out offset))
                        throw Error($"{where}: external data offset '{kv.Value}' is not a non-negative integer");
                    break;
                case "length":
                    if (!long.TryParse(kv.Value, NumberStyles.None, CultureInfo.InvariantCulture, out long len))
                        throw Error($"{where}: external data length '{kv.Value}' is not a non-negative integer");
                    length = len;
                    break;
            }
        }
        if (string.IsNullOrEmpty(location)) throw Error($"{where}: external data without a location");
        if (dtype == DataType.String) throw Error($"{where}: string tensors cannot use external data");
        if (Path.IsPathRooted(location) || location.Split('/', '\\').Contains(".."))
            throw Error($"{where}: external data location '{location}' must be a relative path inside the model's folder");
        var file = OpenDataFile(location, where);
        long expected = dtype.BitWidth() == 0 ? (length ?? file.Length - offset) : dtype.ByteCount(shape.Aggregate(1L, (a, d) => checked(a * d)));
        long len2 = length ?? expected;
        if (len2 != expected)
            throw Error($"{where}: {dtype.Name()}[{string.Join(",", shape)}] needs {expected} bytes, external data says length {len2} (file '{location}', offset {offset})");
        if (offset > file.Length || len2 > file.Length - offset)
            throw Error($"{where}: external data range offset {offset} length {len2} lies outside '{location}' ({file.Length} bytes)");
        if (dtype.BitWidth() == 0)
        {
            var bytes = new byte[len2];
            file.ReadExactly(offset, bytes);
            return new UnknownTypeTensor(dtype, shape, bytes);
        }
        return new FileTensor(dtype, shape, file, offset, len2);
    }

    private SharedFile OpenDataFile(string location, string where)
    {
        string full = Path.GetFullPath(Path.Combine(_baseDirectory, location));
        if (_dataFiles.TryGetValue(full, out var f)) return f;
        if (!File.Exists(full)) throw Error($"{where}: external data file '{location}' not found (looked for {full})");
        try
        {
            f = new SharedFile(full);
        }
        catch (IOException e) { throw Error($"{where}: cannot open external data file '{location}': {e.Message}"); }
        catch (UnauthorizedAccessException e) { throw Error($"{where}: cannot open external data file '{location}': {e.Message}"); }
        _dataFiles[full] = f;
        return f;
    }
}
