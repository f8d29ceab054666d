using OnnxMoe.Compiler.Compile;
using OnnxMoe.Runtime;
using OnnxMoe.Tests.Cli;

namespace OnnxMoe.Tests.Reliability;

/// <summary>Same inputs, same bytes: every file of the folder, with calibration (Block Drop scores), AWQ and several ORT threads.</summary>
public sealed class DeterminismTests
{
    private static readonly string Checkpoint = Path.Combine(CliRunner.RepoRoot, "models/tiny-mixtral");

    [Fact]
    public void Compiling_twice_with_calibration_awq_and_threads_gives_identical_bytes_in_every_file()
    {
        using var tmp = new TempFolder();
        // Two thread counts (measured equal too: ORT's kernels here do not depend on the partitioning), small calibration to stay fast.
        var prints = new[] { 2, 3 }.Select(threads =>
        {
            string output = tmp[$"t{threads}"];
            var report = CompileJob.Run(new CompileRequest
            {
                Checkpoint = Checkpoint, Output = output, Recipe = "block-drop-awq", Samples = 2, SeqLen = 32,
                Session = new SessionConfig { IntraOpThreads = threads },
            });
            Assert.Contains("quantize-int4{method=awq", report.Pipeline);
            Assert.True(report.Passes.Single(p => p.Name == "drop-blocks").Changed);
            return FolderHashes.Of(output);
        }).ToList();
        Assert.Contains("model.onnx.data", prints[0].Keys);
        Assert.Contains("compile_report.json", prints[0].Keys);
        Assert.DoesNotContain("<folder>", prints[0].Values);
        Assert.Equal(prints[0], prints[1]);
    }
}
