using System.Globalization;
using Google.Protobuf;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx.Proto;
using Attribute = OnnxMoe.Ir.Attribute;
using ValueType = OnnxMoe.Ir.ValueType;

namespace OnnxMoe.Onnx;

/// <summary>
/// IR -> ModelProto. Tensors chosen by <see cref="ExternalPlan"/> get external_data entries and no
/// bytes (the writer streams them to the data file afterwards), so the message stays small.
/// Values are written by name; the IR's identities become names again here.
/// </summary>
internal sealed class ModelEncoder
{
    private readonly ExternalPlan? _external;

    public ModelEncoder(ExternalPlan? external) => _external = external;

    /// <summary>Bytes of tensor data embedded in the message so far (to enforce the 2 GiB protobuf limit before allocating).</summary>
    public long EmbeddedBytes { get; private set; }

    public ModelProto EncodeModel(Model m)
    {
        var hint = m.SerializationHint as ModelHint;
        var p = new ModelProto();
        if (!(hint?.IrVersionAbsent == true && m.IrVersion == 0)) p.IrVersion = m.IrVersion;
        if (m.ProducerName != null) p.ProducerName = m.ProducerName;
        if (m.ProducerVersion != null) p.ProducerVersion = m.ProducerVersion;
        if (m.Domain != null) p.Domain = m.Domain;
        if (m.ModelVersion is long mv) p.ModelVersion = mv;
        if (m.DocString != null) p.DocString = m.DocString;
        p.Graph = EncodeGraph(m.Graph);
        foreach (var o in m.OpsetImports) p.OpsetImport.Add(EncodeOpset(o, hint?.Opsets));
        foreach (var kv in m.MetadataProps) p.MetadataProps.Add(Entry(kv.Key, kv.Value));
        if (hint != null)
        {
            foreach (var t in hint.TrainingInfo) p.TrainingInfo.Add(TrainingInfoProto.Parser.ParseFrom(t));
            foreach (var c in hint.Configuration) p.Configuration.Add(DeviceConfigurationProto.Parser.ParseFrom(c));
        }
        foreach (var f in m.Functions) p.Functions.Add(EncodeFunction(f));
        return p;
    }

    private static OperatorSetIdProto EncodeOpset(OpsetImport o, OpsetHints? hints)
    {
        var p = new OperatorSetIdProto();
        if (hints != null && hints.Raw.TryGetValue(o, out var raw))
        {
            if (raw.Domain != null) p.Domain = raw.Domain;
            if (!(raw.VersionAbsent && o.Version == 0)) p.Version = o.Version;
            return p;
        }
        p.Domain = o.Domain;
        p.Version = o.Version;
        return p;
    }

    private static StringStringEntryProto Entry(string k, string v) => new() { Key = k, Value = v };

    private static void AddMetadata(Google.Protobuf.Collections.RepeatedField<StringStringEntryProto> target, IEnumerable<KeyValuePair<string, string>>? props)
    {
        if (props == null) return;
        foreach (var kv in props) target.Add(Entry(kv.Key, kv.Value));
    }

    private FunctionProto EncodeFunction(Function f)
    {
        var hint = f.SerializationHint as FunctionHint;
        var p = new FunctionProto();
        if (HintText.Choose(f.Name, hint != null, hint?.Name) is { } name) p.Name = name;
        if (HintText.Choose(f.Domain, hint != null, hint?.Domain) is { } domain) p.Domain = domain;
        if (HintText.Choose(f.Overload, hint != null, hint?.Overload) is { } overload) p.Overload = overload;
        foreach (var v in f.Body.Inputs) p.Input.Add(v.Name);
        foreach (var v in f.Body.Outputs) p.Output.Add(v.Name);
        p.Attribute.AddRange(f.AttributeNames);
        foreach (var a in f.AttributeDefaults) p.AttributeProto.Add(EncodeAttribute(a));
        foreach (var n in f.Body.Nodes) p.Node.Add(EncodeNode(n));
        if (f.DocString != null) p.DocString = f.DocString;
        foreach (var o in f.OpsetImports) p.OpsetImport.Add(EncodeOpset(o, hint?.Opsets));
        foreach (var v in f.Body.ValueInfos) p.ValueInfo.Add(EncodeValueInfo(v, ValueInfoRole.ValueInfo));
        AddMetadata(p.MetadataProps, f.MetadataProps);
        return p;
    }

    private int _graphDepth;

    private GraphProto EncodeGraph(Graph g)
    {
        _graphDepth++;
        try
        {
            return EncodeGraphBody(g);
        }
        finally
        {
            _graphDepth--;
        }
    }

    private GraphProto EncodeGraphBody(Graph g)
    {
        var hint = g.SerializationHint as GraphHint;
        var p = new GraphProto();
        if (HintText.Choose(g.Name, hint != null, hint?.Name) is { } name) p.Name = name;
        if (g.DocString != null) p.DocString = g.DocString;
        foreach (var n in g.Nodes) p.Node.Add(EncodeNode(n));
        foreach (var v in g.Initializers)
        {
            if (v.ConstValue == null) throw new InvalidOperationException($"initializer {v.Name} of graph {g.Name} has no data");
            p.Initializer.Add(EncodeTensor(v.ConstValue, v.Name, initializer: true));
        }
        foreach (var s in g.SparseInitializers) p.SparseInitializer.Add(EncodeSparse(s.Tensor, s.Name));
        foreach (var v in g.Inputs) p.Input.Add(EncodeValueInfo(v, ValueInfoRole.Input));
        foreach (var v in g.Outputs) p.Output.Add(EncodeValueInfo(v, ValueInfoRole.Output));
        foreach (var v in g.ValueInfos) p.ValueInfo.Add(EncodeValueInfo(v, ValueInfoRole.ValueInfo));
        foreach (var qa in g.Extras.OfType<TensorAnnotation>())
        {
            var a = new Proto.TensorAnnotation();
            if (qa.TensorName != null) a.TensorName = qa.TensorName;
            AddMetadata(a.QuantParameterTensorNames, qa.QuantParameterTensorNames);
            p.QuantizationAnnotation.Add(a);
        }
        AddMetadata(p.MetadataProps, g.MetadataProps);
        return p;
    }

    private NodeProto EncodeNode(Node n)
    {
        var hint = n.SerializationHint as NodeHint;
        var p = new NodeProto();
        foreach (var v in n.Inputs) p.Input.Add(v?.Name ?? "");
        foreach (var v in n.Outputs) p.Output.Add(v.Name);
        if (HintText.Choose(n.Name, hint != null, hint?.Name) is { } name) p.Name = name;
        if (HintText.Choose(n.OpType, hint != null, hint?.OpType) is { } op) p.OpType = op;
        if (HintText.Choose(n.Domain, hint != null, hint?.Domain, ModelDecoder.NormalizeDomain) is { } domain) p.Domain = domain;
        if (HintText.Choose(n.Overload, hint != null, hint?.Overload) is { } overload) p.Overload = overload;
        if (n.DocString != null) p.DocString = n.DocString;
        foreach (var a in n.Attributes) p.Attribute.Add(EncodeAttribute(a));
        AddMetadata(p.MetadataProps, n.MetadataProps);
        if (hint?.DeviceConfigurations != null)
            foreach (var d in hint.DeviceConfigurations) p.DeviceConfigurations.Add(NodeDeviceConfigurationProto.Parser.ParseFrom(d));
        return p;
    }

    private ValueInfoProto EncodeValueInfo(Value v, ValueInfoRole role)
    {
        var hint = v.SerializationHint as ValueHint;
        var current = new ValueInfoData(v.Name, v.Type, v.DocString, v.MetadataProps?.ToArray());
        var data = current;
        if (hint?.Primary != null)
        {
            var primaryNamed = hint.Primary with { Name = hint.Primary.Name ?? "" };
            if (current.SameAs(primaryNamed))
                data = hint.Overrides != null && hint.Overrides.TryGetValue(role, out var o) ? o : hint.Primary;
        }
        var p = new ValueInfoProto();
        if (data.Name != null) p.Name = data.Name;
        if (data.Type != null) p.Type = EncodeType(data.Type);
        if (data.DocString != null) p.DocString = data.DocString;
        AddMetadata(p.MetadataProps, data.MetadataProps);
        return p;
    }

    public static TypeProto EncodeType(ValueType t)
    {
        var p = new TypeProto();
        switch (t)
        {
            case TensorType tt:
                p.TensorType = new TypeProto.Types.Tensor();
                if (tt.ElementType != ModelDecoder.MissingElementType) p.TensorType.ElemType = (int)tt.ElementType;
                if (tt.Shape != null) p.TensorType.Shape = EncodeShape(tt.Shape);
                break;
            case SparseTensorType st:
                p.SparseTensorType = new TypeProto.Types.SparseTensor();
                if (st.ElementType != ModelDecoder.MissingElementType) p.SparseTensorType.ElemType = (int)st.ElementType;
                if (st.Shape != null) p.SparseTensorType.Shape = EncodeShape(st.Shape);
                break;
            case SequenceType sq:
                p.SequenceType = new TypeProto.Types.Sequence();
                if (sq.ElementType != null) p.SequenceType.ElemType = EncodeType(sq.ElementType);
                break;
            case MapType mt:
                p.MapType = new TypeProto.Types.Map();
                if (mt.KeyType != ModelDecoder.MissingElementType) p.MapType.KeyType = (int)mt.KeyType;
                if (mt.ValueTypeOfMap != null) p.MapType.ValueType = EncodeType(mt.ValueTypeOfMap);
                break;
            case OptionalType ot:
                p.OptionalType = new TypeProto.Types.Optional();
                if (ot.ElementType != null) p.OptionalType.ElemType = EncodeType(ot.ElementType);
                break;
            case OpaqueType op:
                p.OpaqueType = new TypeProto.Types.Opaque();
                if (op.Domain != null) p.OpaqueType.Domain = op.Domain;
                if (op.Name != null) p.OpaqueType.Name = op.Name;
                break;
            case UnsetType:
                break;
            default: throw new InvalidOperationException($"cannot serialize type {t}");
        }
        if (t.Denotation != null) p.Denotation = t.Denotation;
        return p;
    }

    private static TensorShapeProto EncodeShape(IReadOnlyList<Dim> shape)
    {
        var s = new TensorShapeProto();
        foreach (var d in shape)
        {
            var dim = new TensorShapeProto.Types.Dimension();
            if (d.Value is long v) dim.DimValue = v;
            else if (d.Param != null) dim.DimParam = d.Param;
            if (d.Denotation != null) dim.Denotation = d.Denotation;
            s.Dim.Add(dim);
        }
        return s;
    }

    private AttributeProto EncodeAttribute(Attribute a)
    {
        var hint = a.SerializationHint as AttributeHint;
        var p = new AttributeProto();
        if (HintText.Choose(a.Name, hint != null, hint?.Name) is { } name) p.Name = name;
        if (!(hint?.TypeAbsent == true && a.Type == AttributeType.Undefined)) p.Type = (int)a.Type;
        if (a.RefAttrName != null) p.RefAttrName = a.RefAttrName;
        if (a.DocString != null) p.DocString = a.DocString;
        bool skipScalar = hint?.ValueAbsent == true;
        switch (a.Value)
        {
            case null: break;
            case float f: if (!(skipScalar && f == 0)) p.F = f; break;
            case long i: if (!(skipScalar && i == 0)) p.I = i; break;
            case byte[] s: if (!(skipScalar && s.Length == 0)) p.S = ByteString.CopyFrom(s); break;
            case Tensor t: p.T = EncodeTensor(t, null, initializer: false); break;
            case Graph g: p.G = EncodeGraph(g); break;
            case SparseTensor st: p.SparseTensor = EncodeSparse(st, null); break;
            case ValueType tp: p.Tp = EncodeType(tp); break;
            case float[] fs: p.Floats.AddRange(fs); break;
            case long[] ints: p.Ints.AddRange(ints); break;
            case byte[][] ss: foreach (var s in ss) p.Strings.Add(ByteString.CopyFrom(s)); break;
            case Tensor[] ts: foreach (var t in ts) p.Tensors.Add(EncodeTensor(t, null, initializer: false)); break;
            case Graph[] gs: foreach (var g in gs) p.Graphs.Add(EncodeGraph(g)); break;
            case SparseTensor[] sts: foreach (var st in sts) p.SparseTensors.Add(EncodeSparse(st, null)); break;
            case ValueType[] tps: foreach (var tp in tps) p.TypeProtos.Add(EncodeType(tp)); break;
            case int i32: p.I = i32; break;
            case double d: p.F = (float)d; break;
            case string str: p.S = ByteString.CopyFromUtf8(str); break;
            case int[] i32s: foreach (var i in i32s) p.Ints.Add(i); break;
            case string[] strs: foreach (var s in strs) p.Strings.Add(ByteString.CopyFromUtf8(s)); break;
            default: throw new InvalidOperationException($"attribute {a.Name}: cannot serialize a {a.Value.GetType().Name} value");
        }
        return p;
    }

    private SparseTensorProto EncodeSparse(SparseTensor s, string? name)
    {
        var p = new SparseTensorProto
        {
            Values = EncodeTensor(s.Values, name ?? s.Values.Name, initializer: false),
            Indices = EncodeTensor(s.Indices, null, initializer: false),
        };
        p.Dims.AddRange(s.Dims);
        return p;
    }

    /// <summary>Encodes one tensor. <paramref name="name"/> overrides the tensor's own name (initializers are named by their value).</summary>
    public TensorProto EncodeTensor(Tensor t, string? name, bool initializer)
    {
        var hint = t.SerializationHint as TensorHint;
        var p = new TensorProto();
        p.Dims.AddRange(t.Shape);
        if (!(hint?.DataTypeAbsent == true && t.DataType == DataType.Undefined)) p.DataType = (int)t.DataType;
        string? tensorName = name ?? t.Name;
        if (tensorName != null && !(hint?.NameAbsent == true && tensorName.Length == 0)) p.Name = tensorName;
        if (t.DocString != null) p.DocString = t.DocString;
        if (hint?.HasSegment == true)
        {
            p.Segment = new TensorProto.Types.Segment();
            if (hint.SegmentBegin is long b) p.Segment.Begin = b;
            if (hint.SegmentEnd is long e) p.Segment.End = e;
        }
        if (hint?.MetadataProps != null) AddMetadata(p.MetadataProps, hint.MetadataProps);

        if (initializer && _external != null && (!_external.TopLevelOnly || _graphDepth == 1) && _external.TryPlace(t, out long offset))
        {
            p.DataLocation = 1;
            p.ExternalData.Add(Entry("location", _external.Location));
            p.ExternalData.Add(Entry("offset", offset.ToString(CultureInfo.InvariantCulture)));
            p.ExternalData.Add(Entry("length", t.ByteLength.ToString(CultureInfo.InvariantCulture)));
            return p;
        }

        if (hint?.DataLocation is 0) p.DataLocation = 0;
        if (t is StringTensor st)
        {
            foreach (var s in st.Values) p.StringData.Add(ByteString.CopyFrom(s));
            EmbeddedBytes += st.ByteLength;
            return p;
        }
        long length = t.ByteLength;
        EmbeddedBytes += length;
        if (EmbeddedBytes > OnnxWriter.MaxEmbeddedBytes)
            throw new OnnxFormatException($"tensor data embedded in the model exceeds {OnnxWriter.MaxEmbeddedBytes} bytes at tensor '{tensorName}': " +
                "protobuf messages are limited to 2 GiB, write the model with external data");
        var encoding = hint?.Encoding ?? TensorEncoding.Raw;
        if (encoding == TensorEncoding.None && length == 0) return p;
        var raw = t.GetBytes();
        if (TensorCodec.Allows(encoding, t.DataType)) TensorCodec.Encode(p, encoding, t.DataType, raw);
        else p.RawData = ByteString.CopyFrom(raw);
        return p;
    }
}

/// <summary>
/// Decides which initializers go to the external data file and where: tensors of at least
/// <see cref="OnnxWriteOptions.ExternalThreshold"/> bytes, in the order the encoder meets them;
/// offsets of tensors of at least <see cref="OnnxWriteOptions.PageAlignThreshold"/> bytes are
/// multiples of <see cref="OnnxWriteOptions.PageAlignment"/>, smaller ones of 16.
/// </summary>
internal sealed class ExternalPlan
{
    private readonly OnnxWriteOptions _options;
    private readonly HashSet<Tensor> _placed = new(ReferenceEqualityComparer.Instance);

    public ExternalPlan(string location, OnnxWriteOptions options)
    {
        Location = location;
        _options = options;
    }

    public string Location { get; }
    /// <summary>Only the main graph's initializers go external (ORT takes in-memory external data for those alone).</summary>
    public bool TopLevelOnly { get; init; }
    public List<(Tensor Tensor, long Offset)> Entries { get; } = new();
    public long Size { get; private set; }

    public bool TryPlace(Tensor t, out long offset)
    {
        offset = 0;
        if (t is StringTensor || t.ByteLength < _options.ExternalThreshold) return false;
        if (!_placed.Add(t))
        {
            // One tensor object used by two initializers: both point at the same bytes.
            offset = Entries.First(e => ReferenceEquals(e.Tensor, t)).Offset;
            return true;
        }
        long align = t.ByteLength >= _options.PageAlignThreshold ? _options.PageAlignment : 16;
        offset = (Size + align - 1) / align * align;
        Entries.Add((t, offset));
        Size = offset + t.ByteLength;
        return true;
    }
}
