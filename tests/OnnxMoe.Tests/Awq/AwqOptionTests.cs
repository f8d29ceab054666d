using OnnxMoe.Passes.Quantization.Awq;
using OnnxMoe.Passes;
using OnnxMoe.Passes.Quantization;

namespace OnnxMoe.Tests.Awq;

public sealed class AwqOptionTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-awq-opt-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static PassException RunPass(string pipeline, OnnxMoe.Ir.Model model, PassContext? context = null) =>
        Assert.Throws<PassException>(() => new PassManager().Run(model, PassPipeline.Parse(pipeline, PassRegistry.CreateDefault()), context ?? new PassContext()));

    [Theory]
    [InlineData("quantize-int4{method=awq,block-size=24}", "block size 24")]
    [InlineData("quantize-int4{method=awq,bits=3}", "bits 3")]
    [InlineData("quantize-int4{method=awq,grid=0}", "grid 0")]
    [InlineData("quantize-int4{method=awq}", "needs calibration data")]
    public void BadOptionsAreClearPassErrors(string pipeline, string expected)
    {
        var model = AwqTestModels.RandomLowered("mixtral", _dir).Model;
        var e = RunPass(pipeline, model);
        Assert.Contains(expected, e.Message);
        Assert.Contains("quantize-int4", e.Message);
    }

    [Fact]
    public void QuantizingAnAlreadyQuantizedModelIsAClearError()
    {
        var model = AwqTestModels.RandomLowered("mixtral", _dir).Model;
        var context = new PassContext().Set<IAwqCalibration>(AwqTestModels.Service(AwqTestModels.SmallOptions(), AwqTestModels.MixtralTokenizer));
        new PassManager().Run(model, PassPipeline.Parse("quantize-int4{block-size=16}", PassRegistry.CreateDefault()), context);
        var e = RunPass("quantize-int4{method=awq,block-size=16}", model, context);
        Assert.Contains("already quantized", e.Message);
    }

    [Fact]
    public void AwqPassFoldsAndQuantizesThroughTheContextService()
    {
        var model = AwqTestModels.RandomLowered("mixtral", _dir).Model;
        var progress = new List<AwqProgress>();
        var service = AwqTestModels.Service(AwqTestModels.SmallOptions(), AwqTestModels.MixtralTokenizer, progress.Add);
        var report = new PassManager().Run(model, PassPipeline.Parse("quantize-int4{method=awq,block-size=16}", PassRegistry.CreateDefault()),
            new PassContext().Set<IAwqCalibration>(service));
        Assert.True(report.Changed);
        Assert.NotNull(service.LastResult);
        Assert.True(service.LastResult!.ClippedWeights > 0);
        Assert.Contains(model.Graph.Nodes, n => n.OpType == "MatMulNBits");
        Assert.DoesNotContain(model.Graph.Nodes, n => n.OpType == "MatMul" && n.Name.Contains("/experts."));
        Assert.Contains(progress, p => p.Stage == "statistics");
        Assert.Contains(progress, p => p.Stage == "scales" && p.Done == p.Total);
        Assert.Contains(progress, p => p.Stage == "clip" && p.Done == p.Total);
    }

    [Theory]
    [InlineData(0, 64, "at least 1 sample")]
    [InlineData(4, 1, "sequence length")]
    public void BadCalibrationSettingsAreUserErrors(int samples, int seqLen, string expected)
    {
        var o = AwqTestModels.SmallOptions() with { Samples = samples, SequenceLength = seqLen };
        var model = AwqTestModels.RandomLowered("mixtral", _dir).Model;
        var e = RunPass("quantize-int4{method=awq,block-size=16}", model, new PassContext().Set<IAwqCalibration>(AwqTestModels.Service(o, AwqTestModels.MixtralTokenizer)));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void MissingCalibrationTextNamesTheFile()
    {
        var missing = Path.Combine(_dir, "missing.txt");
        Assert.Contains("missing.txt", Assert.Throws<OnnxMoe.Ir.UserErrorException>(() => AwqTestModels.Core(AwqTestModels.MixtralTokenizer, AwqTestModels.SmallOptions(), missing).Corpus.TokenCount).Message);
    }
}
