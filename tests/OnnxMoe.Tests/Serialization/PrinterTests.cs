using System.Text.Json;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Printing;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx;
using Attribute = OnnxMoe.Ir.Attribute;

namespace OnnxMoe.Tests.Serialization;

public sealed class PrinterTests
{
    private static Model SmallModel()
    {
        var g = new Graph("main");
        var x = new Value("x", new TensorType(DataType.Float, [new Dim(null, "batch"), new Dim(4)]));
        g.Inputs.Add(x);
        var w = g.AddInitializer(new Value("w", null, InMemoryTensor.FromFloats([4, 4], Enumerable.Range(0, 16).Select(i => (float)i).ToArray())));
        var mm = g.Append(new Node("", "MatMul", [x, w], 1, "/model/layers.0/mlp/w1/MatMul"));
        mm.Outputs[0].Name = "h";
        var q = g.Append(new Node("com.microsoft", "Gelu", [mm.Outputs[0]], 1, "/model/layers.0/mlp/act"));
        q.Outputs[0].Name = "y";
        q.Outputs[0].Type = new TensorType(DataType.Float, [new Dim(null, "batch"), new Dim(4)]);
        q.SetAttribute(Attribute.Ints("axes", 0, 1)).SetAttribute(Attribute.Float("alpha", 0.5f)).SetAttribute(Attribute.String("mode", "fast"));
        g.Outputs.Add(q.Outputs[0]);
        var m = new Model(g) { ProducerName = "onnxmoe" };
        m.SetOpset("", 21);
        m.SetOpset("com.microsoft", 1);
        return m;
    }

    [Fact]
    public void PrintsStableMlirLikeText()
    {
        string text = IrPrinter.Print(SmallModel());
        string hash = TensorDigest.Short(SmallModel().Graph.Initializers[0].ConstValue!);
        string expected =
            "model ir_version=10 producer=\"onnxmoe\"\n" +
            "  opset \"\" 21\n" +
            "  opset \"com.microsoft\" 1\n" +
            "graph \"main\" {\n" +
            "  input %x: f32[batch,4]\n" +
            $"  init %w: tensor<f32[4,4]> #{hash}\n" +
            "  %h = MatMul(%x, %w)  @\"/model/layers.0/mlp/w1/MatMul\"\n" +
            "  %y: f32[batch,4] = com.microsoft::Gelu(%h) {axes = [0, 1], alpha = 0.5, mode = \"fast\"}  @\"/model/layers.0/mlp/act\"\n" +
            "  return %y: f32[batch,4]\n" +
            "}\n";
        Assert.Equal(expected, text);
        Assert.Equal(16, hash.Length);
        // The hash is of the raw bytes: a one-bit change in the weight changes the text.
        var m2 = SmallModel();
        var bytes = m2.Graph.Initializers[0].ConstValue!.GetBytes().ToArray();
        bytes[0] ^= 1;
        m2.Graph.Initializers[0].ConstValue = new InMemoryTensor(DataType.Float, [4, 4], bytes);
        Assert.NotEqual(text, IrPrinter.Print(m2));
    }

    [Fact]
    public void PrintsSubgraphsIndentedUnderTheirNode()
    {
        var model = OnnxReader.Read(Path.Combine(BackendCorpus.Root, "node/test_if/model.onnx"));
        string text = IrPrinter.Print(model);
        Assert.Contains("= If(%cond)", text);
        Assert.Contains("\n    then_branch = graph ", text);
        Assert.Contains("\n    else_branch = graph ", text);
    }

    [Fact]
    public void SummaryCountsOpsParametersAndExternalFiles()
    {
        string dir = Path.Combine(Path.GetTempPath(), "onnxmoe-summary-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            OnnxWriter.Write(SmallModel(), Path.Combine(dir, "m.onnx"), new OnnxWriteOptions { ExternalThreshold = 16 });
            var s = ModelSummary.Of(OnnxReader.Read(Path.Combine(dir, "m.onnx")));
            Assert.Equal(new[] { "x" }, s.Inputs.Select(v => v.Name));
            Assert.Equal("f32[batch,4]", s.Outputs.Single().Type);
            Assert.Equal(2, s.NodeCount);
            Assert.Equal(new[] { new OpCount("MatMul", 1), new OpCount("com.microsoft::Gelu", 1) }, s.Ops);
            Assert.Equal(new ParameterGroup("f32", 1, 16, 64), s.Parameters.Single());
            Assert.Equal(16, s.ParameterCount);
            Assert.Equal(new[] { Path.Combine(dir, "m.onnx.data") }, s.ExternalDataFiles);
            using var json = JsonDocument.Parse(s.ToJson());
            Assert.Equal(64, json.RootElement.GetProperty("parameterBytes").GetInt64());
            Assert.Equal("com.microsoft", json.RootElement.GetProperty("opsets")[1].GetProperty("domain").GetString());
            Assert.Contains("parameters: 16 in 64 bytes", s.ToText());
        }
        finally { Directory.Delete(dir, true); }
    }
}
