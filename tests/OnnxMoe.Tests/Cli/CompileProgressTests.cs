using System.Diagnostics;
using System.Text.Json.Nodes;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Onnx;
using OnnxMoe.Passes;

namespace OnnxMoe.Tests.Cli;

/// <summary>Compile as one library call: its report (one entry per pass, the canonical pipeline as in the model's metadata,
/// lowering timed alone), the progress it reports, and how the CLI renders that on a terminal, in a pipe and as JSON.</summary>
public sealed class CompileProgressTests : IDisposable
{
    private const string Pipeline = "drop-blocks{blocks=1},quantize-int4{method=rtn,block-size=32},cleanup";
    private static readonly string Checkpoint = Path.Combine(CliRunner.RepoRoot, "tests/data/families/mixtral");
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-progress-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private sealed class Recorder : ICompileProgress
    {
        public List<string> Events { get; } = [];
        public Dictionary<string, (long Done, long Total)> Last { get; } = [];
        public void StageStarted(string stage, long total, string unit) => Events.Add("start " + stage);
        public void StageAdvanced(string stage, long done, long total, string? detail) => Last[stage] = (done, total);
        public void StageFinished(string stage, string? summary) => Events.Add("end " + stage);
        public void Detail(string message) => Events.Add("detail " + message);
    }

    [Fact]
    public void Report_has_one_entry_per_pass_and_the_metadata_pipeline()
    {
        var progress = new Recorder();
        string output = Path.Combine(_dir, "out");
        var report = CompileJob.Run(new CompileRequest { Checkpoint = Checkpoint, Output = output, Pipeline = Pipeline, Progress = progress });

        var model = OnnxReader.Read(Path.Combine(output, "model.onnx"));
        Assert.Equal(model.GetMetadata(PassManager.PipelineMetadataKey), report.Pipeline);
        Assert.Contains("quantize-int4{method=rtn,block-size=32,", report.Pipeline);   // defaults spelled out after the given options
        Assert.Equal(["drop-blocks", "quantize-int4", "remove-unused", "dedupe-constants", "topo-sort", "fuse"], report.Passes.Select(p => p.Name));
        Assert.All(report.Passes, p => Assert.StartsWith(p.Name, p.Options));
        Assert.Contains("bits=4", report.Passes[1].Options);
        Assert.True(report.Passes[0].Changed);
        Assert.Equal(1, report.Passes[0].Counters["blocks-removed"]);
        Assert.True(report.Passes[1].Counters["matmuls-quantized"] > 0);
        Assert.True(report.Timings.PassesSeconds >= report.Passes.Sum(p => p.Seconds) * 0.99);

        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "compile_report.json")))!;
        Assert.Equal(report.Pipeline, (string?)json["pipeline"]);
        Assert.Equal(6, json["passes"]!.AsArray().Count);   // the pipeline's 5 and the fuse the compile ends with
        Assert.Null(json["timings"]);   // wall-clock figures stay out of the folder (same compile, same bytes); the returned report has them
        Assert.All(json["passes"]!.AsArray(), p => Assert.Null(p!["seconds"]));

        var starts = progress.Events.Where(e => e.StartsWith("start ")).ToList();
        Assert.Equal("start lowering", starts[0]);
        Assert.Equal("start pass 1/6 drop-blocks", starts[1]);
        Assert.Contains("detail " + report.Passes[1].Options, progress.Events);   // the canonical invocation, for --verbose
        Assert.Equal("start writing", starts[^1]);
        Assert.Equal(starts.Count, progress.Events.Count(e => e.StartsWith("end ")));
        var (done, total) = progress.Last["writing"];
        Assert.Equal(total, done);
        Assert.Equal(report.Bytes.Data, total);
    }

    [Fact]
    public void Outside_a_terminal_compile_prints_a_few_plain_lines()
    {
        var r = CliRunner.Run("compile", Checkpoint, "-o", Path.Combine(_dir, "plain"), "--pipeline", Pipeline);
        Assert.True(r.ExitCode == 0, r.ToString());
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        // The header and summary, two lines per stage (lowering, six passes, writing) and at most four writing quarters.
        Assert.InRange(lines.Length, 5, 2 + 2 * 8 + 4);
        Assert.Contains(lines, l => l.StartsWith("writing: done in "));
        Assert.Contains(lines, l => l.StartsWith("pass 2/6 quantize-int4: done in ") && l.Contains("matmuls-quantized="));
        Assert.DoesNotContain("\u001b[", r.Stderr);
    }

    [Fact]
    public void Json_prints_only_the_report()
    {
        var r = CliRunner.Run("compile", Checkpoint, "-o", Path.Combine(_dir, "json"), "--pipeline", Pipeline, "--json");
        Assert.True(r.ExitCode == 0, r.ToString());
        var json = JsonNode.Parse(r.Stdout)!;
        Assert.Equal("mixtral", (string?)json["family"]);
        Assert.Equal(6, json["passes"]!.AsArray().Count);   // the pipeline's 5 and the fuse the compile ends with
        Assert.Equal("", r.Stderr.Trim());
    }

    /// <summary>Under a pseudo-terminal (util-linux `script`) the CLI draws one live Spectre.Console display: ANSI cursor
    /// control, a bar per stage, and each stage's final line.</summary>
    [Fact]
    public void On_a_terminal_compile_shows_a_live_display()
    {
        if (!File.Exists("/usr/bin/script")) Assert.Fail("util-linux `script` (/usr/bin/script) is needed to give the CLI a pseudo-terminal");
        string dll = Path.Combine(AppContext.BaseDirectory, "onnxmoe.dll");
        string output = Path.Combine(_dir, "tty");
        // A pseudo-terminal made by `script` has no size; give it one as a terminal window would.
        string command = $"stty cols 160 rows 40; dotnet '{dll}' compile '{Checkpoint}' -o '{output}' --pipeline '{Pipeline}'";
        var psi = new ProcessStartInfo("/usr/bin/script", ["-q", "-e", "-c", command, "/dev/null"])
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false,
        };
        psi.Environment.Remove("CI");
        psi.Environment.Remove("NO_COLOR");
        psi.Environment["TERM"] = "xterm-256color";
        psi.Environment["COLUMNS"] = "160";
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(3)), "compile under script did not finish");
        string screen = stdout.Result;
        Assert.True(p.ExitCode == 0, screen);
        Assert.True(File.Exists(Path.Combine(output, "model.onnx")));
        Assert.Contains("\u001b[", screen);                      // ANSI control: a live display, not plain lines
        Assert.Contains("━", screen);                            // Spectre's progress bar
        Assert.Contains("lowering", screen);
        Assert.Contains("pass 2/6 quantize-int4", screen);
        Assert.Contains("writing", screen);
        Assert.Contains("100%", screen);
        Assert.DoesNotContain("writing: done in", screen);       // the plain renderer's lines
    }
}
