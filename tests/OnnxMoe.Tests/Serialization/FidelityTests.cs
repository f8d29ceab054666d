using Google.Protobuf;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx;
using OnnxMoe.Onnx.Proto;

namespace OnnxMoe.Tests.Serialization;

/// <summary>Hand-made ModelProtos with the corner cases the corpus may not hold: presence of zeros and
/// empty strings, unknown codes, typed data fields, scoping of subgraphs and functions.</summary>
public sealed class FidelityTests
{
    private static ModelProto Minimal()
    {
        var m = new ModelProto { IrVersion = 10, Graph = new GraphProto { Name = "g" } };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        return m;
    }

    private static TypeProto Tensor(int elem, params long[] dims)
    {
        var t = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elem, Shape = new TensorShapeProto() } };
        foreach (var d in dims) t.TensorType.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return t;
    }

    private static ModelProto RoundTrip(ModelProto original)
    {
        var model = OnnxReader.Read(original.ToByteArray(), Path.GetTempPath());
        var back = ModelProto.Parser.ParseFrom(OnnxWriter.ToBytes(model));
        Assert.Null(ProtoDiff.FirstDifference(original, back));
        Assert.Equal(original, back);
        return back;
    }

    [Fact]
    public void ProtoDiffSeesPresenceThatEqualsIgnores()
    {
        var a = Minimal();
        var b = Minimal();
        b.Graph.DocString = "";
        Assert.Equal(a, b); // generated Equals ignores presence in proto2 C#
        Assert.NotNull(ProtoDiff.FirstDifference(a, b));
    }

    [Fact]
    public void ExplicitZerosEmptyStringsAndUnknownCodesSurvive()
    {
        var m = Minimal();
        m.ModelVersion = 0;
        m.ProducerName = "";
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "ai.onnx.ml", Version = 0 });
        m.OpsetImport.Add(new OperatorSetIdProto { Version = 3 }); // domain absent
        var g = m.Graph;
        g.Input.Add(new ValueInfoProto { Name = "x", Type = Tensor(0, 0, 3) }); // UNDEFINED elem type, zero dim
        g.Input.Add(new ValueInfoProto { Name = "u", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor() } }); // no elem_type, no shape
        g.Input.Add(new ValueInfoProto { Name = "q", Type = Tensor(99) }); // unknown dtype code, scalar shape
        var weird = new TensorProto { Name = "blob", DataType = 77, RawData = ByteString.CopyFrom(1, 2, 3) };
        weird.Dims.Add(3);
        g.Initializer.Add(weird);
        var node = new NodeProto { OpType = "Foo", Domain = "ai.onnx", Name = "" };
        node.Input.Add("x");
        node.Input.Add("");
        node.Input.Add("blob");
        node.Output.Add("y");
        node.Output.Add("");
        node.Attribute.Add(new AttributeProto { Name = "zero", Type = 2, I = 0 });
        node.Attribute.Add(new AttributeProto { Name = "absent", Type = 2 });
        node.Attribute.Add(new AttributeProto { Name = "f", Type = 1, F = -0.0f });
        node.Attribute.Add(new AttributeProto { Name = "odd", Type = 42 });
        node.Attribute.Add(new AttributeProto { Name = "s", Type = 3, S = ByteString.CopyFrom(0xff, 0xfe) });
        node.Attribute.Add(new AttributeProto { Name = "ref", Type = 2, RefAttrName = "alpha" });
        g.Node.Add(node);
        g.Output.Add(new ValueInfoProto { Name = "y" });
        g.ValueInfo.Add(new ValueInfoProto { Name = "y", Type = Tensor(1, 3), DocString = "" });
        RoundTrip(m);
    }

    [Fact]
    public void TypedDataFieldsAreKeptAndDecodedToRawBytes()
    {
        var m = Minimal();
        var g = m.Graph;
        TensorProto T(string name, int dtype, params long[] dims) { var t = new TensorProto { Name = name, DataType = dtype }; t.Dims.AddRange(dims); g.Initializer.Add(t); return t; }
        T("f32", 1, 2).FloatData.AddRange([1.5f, float.NaN]);
        T("i8", 3, 3).Int32Data.AddRange([-1, 127, -128]);
        T("f16", 10, 2).Int32Data.AddRange([0x3c00, 0xfbff]);
        T("bool", 9, 2).Int32Data.AddRange([1, 0]);
        T("i4", 22, 3).Int32Data.AddRange([0x7f, 0x08]);
        T("i64", 7, 2).Int64Data.AddRange([long.MinValue, 5]);
        T("u32", 12, 1).Uint64Data.Add(4000000000);
        T("c64", 14, 1).FloatData.AddRange([1f, 2f]);
        T("f64", 11, 1).DoubleData.Add(Math.PI);
        T("str", 8, 2).StringData.AddRange([ByteString.CopyFromUtf8("a"), ByteString.Empty]);
        T("empty", 1, 0);
        var explicitDefault = T("loc", 1, 1);
        explicitDefault.RawData = ByteString.CopyFrom(new byte[4]);
        explicitDefault.DataLocation = 0;
        RoundTrip(m);

        var model = OnnxReader.Read(m.ToByteArray(), Path.GetTempPath());
        Tensor Get(string n) => model.Graph.FindInitializer(n)!.ConstValue!;
        Assert.Equal(new sbyte[] { -1, 127, -128 }, Get("i8").GetSpan<sbyte>().ToArray());
        Assert.Equal(new[] { (Half)1, Half.MinValue }, Get("f16").GetSpan<Half>().ToArray());
        Assert.Equal(new byte[] { 0x7f, 0x08 }, Get("i4").GetBytes().ToArray());
        Assert.Equal(4000000000u, Get("u32").GetSpan<uint>()[0]);
        Assert.Equal(8, Get("c64").ByteLength);
        Assert.Equal(2, ((StringTensor)Get("str")).Values.Count);
    }

    [Fact]
    public void TypedDataWithWrongCountIsAFormatError()
    {
        var m = Minimal();
        var t = new TensorProto { Name = "w", DataType = 1 };
        t.Dims.Add(3);
        t.FloatData.AddRange([1f, 2f]);
        m.Graph.Initializer.Add(t);
        var e = Assert.Throws<OnnxFormatException>(() => OnnxReader.Read(m.ToByteArray(), Path.GetTempPath(), "m.onnx"));
        Assert.Contains("'w'", e.Message);
        Assert.Contains("float_data has 2", e.Message);
    }

    [Fact]
    public void SubgraphsCaptureOuterValuesByIdentity()
    {
        var m = Minimal();
        var g = m.Graph;
        g.Input.Add(new ValueInfoProto { Name = "cond", Type = Tensor(9) });
        g.Input.Add(new ValueInfoProto { Name = "x", Type = Tensor(1, 2) });
        var then = new GraphProto { Name = "then" };
        var inner = new NodeProto { OpType = "Neg", Name = "/if/then/Neg" };
        inner.Input.Add("later"); // produced by a node listed after the If in the outer graph
        inner.Output.Add("t");
        then.Node.Add(inner);
        then.Output.Add(new ValueInfoProto { Name = "t" });
        var ifNode = new NodeProto { OpType = "If", Name = "/if" };
        ifNode.Input.Add("cond");
        ifNode.Output.Add("y");
        ifNode.Attribute.Add(new AttributeProto { Name = "then_branch", Type = 5, G = then });
        g.Node.Add(ifNode);
        var producer = new NodeProto { OpType = "Relu", Name = "/relu" };
        producer.Input.Add("x");
        producer.Output.Add("later");
        g.Node.Add(producer);
        g.Output.Add(new ValueInfoProto { Name = "y" });
        RoundTrip(m);

        var model = OnnxReader.Read(m.ToByteArray(), Path.GetTempPath());
        var nodes = model.Graph.Nodes.ToList();
        var thenGraph = nodes[0].GetAttribute("then_branch")!.AsGraph();
        Assert.Same(nodes[0], thenGraph.ParentNode);
        var neg = thenGraph.Nodes.Single();
        Assert.Same(nodes[1].Outputs[0], neg.Inputs[0]);
        Assert.Contains(new Use(neg, 0), nodes[1].Outputs[0].Uses);
        Assert.Same(model.Graph.Inputs[1], nodes[1].Inputs[0]);
        // The explicit sort puts the producer first because the If's subgraph captures its output.
        model.Graph.SortTopologically();
        Assert.Equal("/relu", model.Graph.Nodes.First().Name);
    }

    [Fact]
    public void FunctionsHaveTheirOwnScope()
    {
        var m = Minimal();
        m.Graph.Input.Add(new ValueInfoProto { Name = "a", Type = Tensor(1, 2) });
        var call = new NodeProto { OpType = "MyFn", Domain = "local" };
        call.Input.Add("a");
        call.Output.Add("b");
        m.Graph.Node.Add(call);
        m.Graph.Output.Add(new ValueInfoProto { Name = "b" });
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "local", Version = 1 });
        var f = new FunctionProto { Name = "MyFn", Domain = "local" };
        f.Input.Add("a"); // same name as the graph input, different value
        f.Output.Add("r");
        f.Attribute.Add("alpha");
        var body = new NodeProto { OpType = "Abs" };
        body.Input.Add("a");
        body.Output.Add("r");
        f.Node.Add(body);
        f.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        m.Functions.Add(f);
        RoundTrip(m);

        var model = OnnxReader.Read(m.ToByteArray(), Path.GetTempPath());
        var fn = model.Functions.Single();
        Assert.Same(fn.Body.Inputs[0], fn.Body.Nodes.Single().Inputs[0]);
        Assert.NotSame(model.Graph.Inputs[0], fn.Body.Inputs[0]);
    }

    [Fact]
    public void EditsWinOverHints()
    {
        var m = Minimal();
        var node = new NodeProto { OpType = "Relu", Domain = "ai.onnx", Name = "" };
        node.Input.Add("x");
        node.Output.Add("y");
        m.Graph.Node.Add(node);
        m.Graph.Input.Add(new ValueInfoProto { Name = "x", Type = Tensor(1, 2) });
        m.Graph.Output.Add(new ValueInfoProto { Name = "y", Type = Tensor(1, 2) });
        var model = OnnxReader.Read(m.ToByteArray(), Path.GetTempPath());
        var n = model.Graph.Nodes.Single();
        Assert.Equal("", n.Domain); // "ai.onnx" normalised
        n.Name = "/model/relu/Relu";
        n.Domain = "com.microsoft";
        model.Graph.Outputs[0].Name = "z";
        var back = ModelProto.Parser.ParseFrom(OnnxWriter.ToBytes(model));
        Assert.Equal("/model/relu/Relu", back.Graph.Node[0].Name);
        Assert.Equal("com.microsoft", back.Graph.Node[0].Domain);
        Assert.Equal("z", back.Graph.Node[0].Output[0]);
        Assert.Equal("z", back.Graph.Output[0].Name);
    }

    [Fact]
    public void WriterIsDeterministic()
    {
        var path = Path.Combine(BackendCorpus.Root, "pytorch-converted/test_Conv2d/model.onnx");
        var a = OnnxWriter.ToBytes(OnnxReader.Read(path));
        var b = OnnxWriter.ToBytes(OnnxReader.Read(path));
        Assert.Equal(a, b);
        string dir = Path.Combine(Path.GetTempPath(), "onnxmoe-det-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var model = OnnxReader.Read(path);
            OnnxWriter.Write(model, Path.Combine(dir, "a.onnx"), new OnnxWriteOptions { ExternalThreshold = 1, DataFileName = "w.data" });
            var first = (File.ReadAllBytes(Path.Combine(dir, "a.onnx")), File.ReadAllBytes(Path.Combine(dir, "w.data")));
            OnnxWriter.Write(model, Path.Combine(dir, "a.onnx"), new OnnxWriteOptions { ExternalThreshold = 1, DataFileName = "w.data" });
            Assert.Equal(first.Item1, File.ReadAllBytes(Path.Combine(dir, "a.onnx")));
            Assert.Equal(first.Item2, File.ReadAllBytes(Path.Combine(dir, "w.data")));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void CorpusTensorFilesRoundTrip()
    {
        string dir = Path.Combine(Path.GetTempPath(), "onnxmoe-pb-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        int tensors = 0, others = 0;
        try
        {
            foreach (var c in BackendCorpus.All())
            {
                string set = Path.Combine(c.Directory, "test_data_set_0");
                if (!File.Exists(c.ModelPath) || !Directory.Exists(set)) continue;
                // input_K / output_K are TensorProtos only where the K-th graph input / output is a tensor
                // (sequence, map and optional values use other messages).
                var g = ModelProto.Parser.ParseFrom(File.ReadAllBytes(c.ModelPath)).Graph;
                var inits = g.Initializer.Select(t => t.Name).ToHashSet();
                var inputs = g.Input.Where(v => !inits.Contains(v.Name)).ToList();
                foreach (var f in Directory.GetFiles(set, "*.pb").Order(StringComparer.Ordinal))
                {
                    string stem = Path.GetFileNameWithoutExtension(f);
                    int k = int.Parse(stem[(stem.IndexOf('_') + 1)..]);
                    var list = stem.StartsWith("input") ? inputs : g.Output.ToList();
                    if (k >= list.Count || list[k].Type?.ValueCase != TypeProto.ValueOneofCase.TensorType) { others++; continue; }
                    var original = TensorProto.Parser.ParseFrom(File.ReadAllBytes(f));
                    var t = OnnxReader.ReadTensor(f);
                    string outPath = Path.Combine(dir, "t.pb");
                    OnnxWriter.WriteTensor(t, outPath);
                    var back = TensorProto.Parser.ParseFrom(File.ReadAllBytes(outPath));
                    Assert.True(ProtoDiff.FirstDifference(original, back) is null, $"{f}: {ProtoDiff.FirstDifference(original, back)}");
                    Assert.True(original.Equals(back), f);
                    tensors++;
                }
            }
        }
        finally { Directory.Delete(dir, true); }
        Assert.True(tensors > 1500, $"{tensors} tensor files round-tripped, {others} non-tensor files skipped");
    }
}
