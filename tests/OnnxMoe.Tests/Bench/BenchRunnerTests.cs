using System.Text.Json;
using OnnxMoe.Compiler.Bench;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Ir;
using OnnxMoe.Tests.Lowering;

namespace OnnxMoe.Tests.Bench;

public sealed class BenchRunnerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-bench-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string CompileTiny(string name, string pipeline)
    {
        var ckpt = TinyCheckpoints.Create("mixtral");
        try
        {
            var outDir = Path.Combine(_dir, name);
            CompileJob.Run(new CompileRequest { Checkpoint = ckpt, Output = outDir, Pipeline = pipeline });
            return outDir;
        }
        finally
        {
            Directory.Delete(ckpt, recursive: true);
        }
    }

    [Fact]
    public void MeasuresEveryModelWithRatiosAgainstTheFirst()
    {
        var fp32 = CompileTiny("fp32", "");
        var int4 = CompileTiny("int4", "quantize-int4{block-size=16}");
        var progress = new List<string>();
        var report = new BenchRunner(new BenchOptions { PromptLength = 8, GenerateTokens = 4, Repeats = 2, BandwidthBufferBytes = 16L << 20 }, progress.Add).Run([fp32, int4]);

        Assert.Equal(["fp32", "int4"], report.Rows.Select(r => r.Result.Model));
        var baseRow = report.Rows[0];
        Assert.Equal(1.0, baseRow.DecodeSpeedup, 12);
        Assert.Equal(1.0, baseRow.FileSizeRatio, 12);
        foreach (var r in report.Rows)
        {
            Assert.True(r.Result.PrefillTokensPerSecond > 0 && double.IsFinite(r.Result.PrefillTokensPerSecond));
            Assert.True(r.Result.DecodeTokensPerSecond > 0 && double.IsFinite(r.Result.DecodeTokensPerSecond));
            Assert.True(r.Result.PeakRssBytes > 0);
            Assert.Equal(8.0 / r.Result.PrefillMedianMs * 1e3, r.Result.PrefillTokensPerSecond, 6);
            Assert.Equal(new FileInfo(Path.Combine(r.Result.Directory, "model.onnx")).Length + new FileInfo(Path.Combine(r.Result.Directory, "model.onnx.data")).Length,
                r.Result.ModelFileBytes);
        }
        Assert.True(report.Rows[1].FileSizeRatio < 1, "the int4 artifact should be smaller than the fp32 one");
        Assert.Equal(report.Rows[1].Result.DecodeTokensPerSecond / baseRow.Result.DecodeTokensPerSecond, report.Rows[1].DecodeSpeedup, 12);
        Assert.Contains(progress, p => p.Contains("repeat 2/2"));
        foreach (var r in report.Rows)
        {
            var bound = r.Result.Bound!;
            Assert.Equal(8 + 4 / 2, bound.ContextLength);
            Assert.Equal(bound.Traffic.BytesPerStep(bound.ContextLength), bound.BytesPerStep, 9);
            Assert.Equal(bound.BytesPerStep / bound.Bandwidth.BytesPerSecond * 1e3, bound.BoundMsPerToken, 9);
            Assert.Equal(r.Result.DecodeMedianMsPerToken / bound.BoundMsPerToken, bound.MeasuredOverBound, 9);
            Assert.Null(r.Result.Profile);
        }
        Assert.True(report.Rows[1].Result.Bound!.BytesPerStep < report.Rows[0].Result.Bound!.BytesPerStep / 2, "int4 reads fewer bytes per token");

        var table = report.ToTable();
        Assert.Contains("decode tok/s", table);
        Assert.Contains("int4", table);
        Assert.Contains("measured/bound", table);
        using var json = JsonDocument.Parse(report.ToJson());
        Assert.Equal(2, json.RootElement.GetProperty("rows").GetArrayLength());
        Assert.True(json.RootElement.GetProperty("rows")[1].GetProperty("result").GetProperty("decode_tokens_per_second").GetDouble() > 0);
        Assert.True(json.RootElement.GetProperty("rows")[1].GetProperty("result").GetProperty("bound").GetProperty("bound_ms_per_token").GetDouble() > 0);
    }

    [Fact]
    public void MedianOfEvenAndOddCounts()
    {
        Assert.Equal(2.0, BenchRunner.Median([3.0, 1.0, 2.0]));
        Assert.Equal(2.5, BenchRunner.Median([4.0, 1.0, 2.0, 3.0]));
    }

    [Theory]
    [InlineData(0, 4, 1, 1)]
    [InlineData(8, 0, 1, 1)]
    [InlineData(8, 4, 0, 1)]
    [InlineData(8, 4, 1, 0)]
    public void BadOptionsAreUserErrors(int prompt, int gen, int batch, int repeats) =>
        Assert.Throws<UserErrorException>(() => new BenchRunner(new BenchOptions { PromptLength = prompt, GenerateTokens = gen, Batch = batch, Repeats = repeats }));

    [Fact]
    public void MissingFolderIsAUserError()
    {
        var e = Assert.Throws<UserErrorException>(() => new BenchRunner(new BenchOptions()).Run([Path.Combine(_dir, "nope")]));
        Assert.Contains("nope", e.Message);
    }
}
