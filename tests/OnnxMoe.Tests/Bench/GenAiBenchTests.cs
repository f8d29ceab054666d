using System.Text.Json;
using OnnxMoe.Compiler.Bench;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Ir;
using OnnxMoe.Tests.Cli;
using OnnxMoe.Tests.GenAi;
using OnnxMoe.Tests.Lowering;

namespace OnnxMoe.Tests.Bench;

/// <summary><c>onnxmoe bench --engine</c>: each folder measured through onnxmoe's decoder and/or ONNX Runtime GenAI.</summary>
[Collection(nameof(GenAiRun))]
public sealed class GenAiBenchTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-genai-bench-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string CompileTiny()
    {
        var output = Path.Combine(_dir, "tiny");
        CompileJob.Run(new CompileRequest { Checkpoint = FamilyData.Dir("mixtral"), Output = output });
        return output;
    }

    [Fact]
    public void Bench_engine_genai_gives_a_row_with_positive_tokens_per_second()
    {
        var folder = CompileTiny();
        var r = CliRunner.Run("bench", folder, "--engine", "genai", "--prompt-len", "8", "--gen", "8", "--repeat", "2", "--bandwidth-buffer", "16MiB", "--json");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var json = JsonDocument.Parse(r.Stdout);
        var rows = json.RootElement.GetProperty("rows");
        Assert.Equal(1, rows.GetArrayLength());
        var result = rows[0].GetProperty("result");
        Assert.Equal("genai", result.GetProperty("engine").GetString());
        Assert.True(result.GetProperty("decode_tokens_per_second").GetDouble() > 0);
        Assert.True(result.GetProperty("prefill_tokens_per_second").GetDouble() > 0);
        Assert.Contains("ONNX Runtime GenAI 0.18", json.RootElement.GetProperty("runtime").GetString());
    }

    [Fact]
    public void Both_engines_give_rows_side_by_side_with_ratios_against_the_first()
    {
        var folder = CompileTiny();
        var report = new BenchRunner(new BenchOptions { PromptLength = 8, GenerateTokens = 4, Repeats = 2, Engines = [BenchEngine.Ort, BenchEngine.GenAi], BandwidthBufferBytes = 16L << 20 }).Run([folder]);
        Assert.Equal(["ort", "genai"], report.Rows.Select(r => r.Result.Engine));
        Assert.Equal(1.0, report.Rows[0].DecodeSpeedup, 12);
        Assert.Equal(report.Rows[1].Result.DecodeTokensPerSecond / report.Rows[0].Result.DecodeTokensPerSecond, report.Rows[1].DecodeSpeedup, 12);
        Assert.All(report.Rows, r => Assert.True(r.Result.DecodeTokensPerSecond > 0 && r.Result.PrefillTokensPerSecond > 0));
        var table = report.ToTable();
        Assert.Contains("engine", table.Split('\n')[0]);
        Assert.Contains("genai", table.Split('\n')[2]);
    }

    [Theory]
    [InlineData("tensorrt", "unknown engine 'tensorrt'")]
    [InlineData("ort,ort", "'ort' is listed twice")]
    public void Bad_engine_lists_are_one_line_user_errors(string engines, string message)
    {
        var e = Assert.Throws<UserErrorException>(() => BenchEngines.Parse(engines));
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Genai_with_a_batch_is_a_user_error() =>
        Assert.Throws<UserErrorException>(() => new BenchRunner(new BenchOptions { Batch = 2, Engines = [BenchEngine.GenAi] }));
}
