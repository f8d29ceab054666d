using OnnxMoe.Compiler.Diff;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx;
using OnnxMoe.Passes;

namespace OnnxMoe.Tests.Diff;

/// <summary>Pass manager, writer, reader and diff together: what a compile leaves in the artifact.</summary>
public sealed class PipelineRoundTripTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "onnxmoe-diff-rt-" + Guid.NewGuid().ToString("N"));

    public PipelineRoundTripTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static Model Build()
    {
        var g = new Graph("main");
        var x = new Value("x", new TensorType(DataType.Float, [new Dim(null, "batch"), new Dim(512)]));
        g.Inputs.Add(x);
        // 512x512 f32 weights go to external data; two are byte-identical.
        var w = Enumerable.Range(0, 512 * 512).Select(i => (float)(i % 97) / 97f).ToArray();
        var a = g.AddInitializer(new Value("a.weight", null, InMemoryTensor.FromFloats([512, 512], w)));
        var b = g.AddInitializer(new Value("b.weight", null, InMemoryTensor.FromFloats([512, 512], w)));
        g.AddInitializer(new Value("unused.weight", null, InMemoryTensor.FromFloats([4], [1, 2, 3, 4])));
        var ma = g.Append(new Node("", "MatMul", [x, a], [new Value("a.out")], "/model/a/MatMul"));
        var mb = g.Append(new Node("", "MatMul", [ma.Outputs[0], b], [new Value("b.out")], "/model/b/MatMul"));
        g.Append(new Node("", "Relu", [mb.Outputs[0]], [new Value("dead.out")], "/model/dead/Relu"));
        g.Outputs.Add(mb.Outputs[0]);
        var m = new Model(g);
        m.SetOpset("", 17);
        return m;
    }

    [Fact]
    public void Cleanup_of_a_read_model_is_valid_recorded_and_visible_in_the_diff()
    {
        var original = Path.Combine(_dir, "original.onnx");
        OnnxWriter.Write(Build(), original);

        var model = OnnxReader.Read(original);
        Assert.Empty(new IrVerifier().Check(model)); // what the reader builds passes the verifier
        var report = new PassManager().Run(model, PassPipeline.Parse("cleanup", PassRegistry.CreateDefault()));
        Assert.Equal(1, report.Counters["initializers-deduplicated"]);
        Assert.Equal(512 * 512 * 4, report.Counters["bytes-saved"]);
        var cleaned = Path.Combine(_dir, "cleaned.onnx");
        OnnxWriter.Write(model, cleaned);

        var before = OnnxReader.Read(original);
        var after = OnnxReader.Read(cleaned);
        Assert.Equal("cleanup", after.GetMetadata(PassManager.PipelineMetadataKey));
        Assert.Equal("""
            metadata: 1 added
              + onnxmoe.pipeline: cleanup
            nodes: 1 removed, 1 changed
              - /model/dead/Relu (Relu)
              ~ /model/b/MatMul
                  input 1: b.weight -> a.weight
            initializers: 2 removed
              - b.weight: f32[512,512]
              - unused.weight: f32[4]

            """.ReplaceLineEndings("\n"), ModelDiff.Compute(before, after).ToText());
        Assert.True(ModelDiff.Compute(after, OnnxReader.Read(cleaned)).IsEmpty);
    }
}
