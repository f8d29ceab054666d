using System.Text.Json;

namespace OnnxMoe.Tests.Cli;

/// <summary>The CLI end to end, as a user runs it: exit codes 0/1/2, one-line errors, no half-written outputs.</summary>
public sealed class CliTests
{
    private const string AddModel = "/usr/include/onnx/backend/test/data/node/test_add/model.onnx";
    private static readonly string MixtralCheckpoint = Path.Combine(CliRunner.RepoRoot, "tests/data/families/mixtral");

    [Fact]
    public void VersionNamesOnnxRuntime()
    {
        var r = CliRunner.Run("version");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Matches(@"onnxruntime 1\.\d+\.\d+", r.Stdout);
        Assert.Contains("libonnxruntime", r.Stdout);
    }

    [Fact]
    public void HelpListsEveryCommand()
    {
        var r = CliRunner.Run("--help");
        Assert.Equal(0, r.ExitCode);
        foreach (var c in new[] { "compile", "generate", "eval", "diff", "verify", "inspect", "recipes", "passes", "convert", "run", "version" })
            Assert.Contains(c, r.Stdout);
    }

    [Fact]
    public void InspectPrintsSummaryAndJson()
    {
        var text = CliRunner.Run("inspect", AddModel, "--graph");
        Assert.True(text.ExitCode == 0, text.ToString());
        Assert.Contains("Add", text.Stdout);
        Assert.Contains("f32[3,4,5]", text.Stdout);
        var json = CliRunner.Run("inspect", AddModel, "--json");
        Assert.Equal(0, json.ExitCode);
        using var doc = JsonDocument.Parse(json.Stdout);
        Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
    }

    [Fact]
    public void ConvertRoundTripsBetweenEmbeddedAndExternalData()
    {
        using var tmp = new TempFolder();
        string model = Path.Combine(CliRunner.RepoRoot, "tests/data/families/mixtral");
        var compiled = CliRunner.Run("compile", model, "-o", tmp["m"]);
        Assert.True(compiled.ExitCode == 0, compiled.ToString());
        var embed = CliRunner.Run("convert", tmp["m/model.onnx"], "-o", tmp["e/model.onnx"], "--embed");
        Assert.True(embed.ExitCode == 0, embed.ToString());
        Assert.False(File.Exists(tmp["e/model.onnx.data"]));
        var back = CliRunner.Run("convert", tmp["e/model.onnx"], "-o", tmp["x/model.onnx"], "--external-data");
        Assert.True(back.ExitCode == 0, back.ToString());
        Assert.True(File.Exists(tmp["x/model.onnx.data"]));
        var diff = CliRunner.Run("diff", tmp["m/model.onnx"], tmp["x/model.onnx"]);
        Assert.True(diff.ExitCode == 0, diff.ToString());
        Assert.Equal("", diff.Stdout);
    }

    [Fact]
    public void RunExecutesWithRandomInputsAndSavesOutputs()
    {
        using var tmp = new TempFolder();
        var r = CliRunner.Run("run", AddModel, "--random", "--seed", "3", "--save-outputs", tmp["out"]);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("sum: f32[3,4,5]", r.Stdout);
        Assert.True(File.Exists(tmp["out/sum.pb"]));
        var again = CliRunner.Run("run", AddModel, "--random", "--seed", "3");
        Assert.Equal(r.Stdout.Split('\n')[0], again.Stdout.Split('\n')[0]);
    }

    [Fact]
    public void RunWithoutInputsIsAUserError()
    {
        var r = CliRunner.Run("run", AddModel);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("--random", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [Fact]
    public void MalformedModelIsOneLineUserErrorWithoutOutput()
    {
        using var tmp = new TempFolder();
        File.WriteAllBytes(tmp["bad.onnx"], Enumerable.Range(0, 300).Select(i => (byte)(i * 37 + 11)).ToArray());
        foreach (var args in new[] { new[] { "inspect", tmp["bad.onnx"] }, new[] { "convert", tmp["bad.onnx"], "-o", tmp["out.onnx"] } })
        {
            var r = CliRunner.Run(args);
            Assert.True(r.ExitCode == 1, r.ToString());
            Assert.Contains("bad.onnx", r.Stderr);
            Assert.DoesNotContain("   at ", r.Stderr);
        }
        Assert.False(File.Exists(tmp["out.onnx"]));
        Assert.DoesNotContain(Directory.GetFiles(tmp.Path), f => !f.EndsWith("bad.onnx"));
    }

    [Fact]
    public void CompileGenerateEvalOnARandomCheckpoint()
    {
        using var tmp = new TempFolder();
        var compiled = CliRunner.Run("compile", MixtralCheckpoint, "-o", tmp["m"]);
        Assert.True(compiled.ExitCode == 0, compiled.ToString());
        foreach (var f in new[] { "model.onnx", "model.onnx.data", "genai_config.json", "compile_report.json" })
            Assert.True(File.Exists(tmp[$"m/{f}"]), f);
        var exists = CliRunner.Run("compile", MixtralCheckpoint, "-o", tmp["m"]);
        Assert.Equal(1, exists.ExitCode);
        Assert.Contains("--overwrite", exists.Stderr);
    }

    [Fact]
    public void CompileFailureLeavesNoOutputFolder()
    {
        using var tmp = new TempFolder();
        Directory.CreateDirectory(tmp["ckpt"]);
        foreach (var f in Directory.GetFiles(MixtralCheckpoint)) File.Copy(f, tmp[$"ckpt/{Path.GetFileName(f)}"]);
        string shard = Directory.GetFiles(tmp["ckpt"], "model-*.safetensors").Order(StringComparer.Ordinal).First();
        using (var s = File.Open(shard, FileMode.Open)) s.SetLength(s.Length - 100);
        var r = CliRunner.Run("compile", tmp["ckpt"], "-o", tmp["out"]);
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains(Path.GetFileName(shard), r.Stderr);
        Assert.False(Directory.Exists(tmp["out"]));
        Assert.DoesNotContain(Directory.GetDirectories(tmp.Path), d => Path.GetFileName(d) != "ckpt");
    }

    [Fact]
    public void BadPipelineIsAUserErrorWithoutOutput()
    {
        using var tmp = new TempFolder();
        var r = CliRunner.Run("compile", MixtralCheckpoint, "-o", tmp["out"], "--pipeline", "remove-unusd");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("remove-unused", r.Stderr);
        Assert.False(Directory.Exists(tmp["out"]));
        var both = CliRunner.Run("compile", MixtralCheckpoint, "-o", tmp["out"], "--pipeline", "cleanup", "--recipe", "block-drop-4");
        Assert.Equal(1, both.ExitCode);
        // A bad option of a later pass fails before any lowering or calibration work starts.
        var late = CliRunner.Run("compile", MixtralCheckpoint, "-o", tmp["out"], "--pipeline", "drop-blocks{n=1},quantize-int4{block-size=24}");
        Assert.Equal(1, late.ExitCode);
        Assert.Contains("block size 24", late.Stderr);
        Assert.DoesNotContain("compiling", late.Stderr);
        Assert.False(Directory.Exists(tmp["out"]));
    }

    [Fact]
    public void DiffExitCodesFollowDiffsConvention()
    {
        using var tmp = new TempFolder();
        Assert.Equal(0, CliRunner.Run("compile", MixtralCheckpoint, "-o", tmp["a"]).ExitCode);
        Assert.Equal(0, CliRunner.Run("compile", MixtralCheckpoint, "-o", tmp["b"], "--pipeline", "dedupe-constants").ExitCode);
        var same = CliRunner.Run("diff", tmp["a"], tmp["a/model.onnx"]);
        Assert.Equal(0, same.ExitCode);
        var different = CliRunner.Run("diff", tmp["a"], tmp["b"]);
        Assert.True(different.ExitCode == 1, different.ToString());
        Assert.Contains("onnxmoe.pipeline", different.Stdout);
        Assert.Equal(different.Stdout, CliRunner.Run("diff", tmp["a"], tmp["b"]).Stdout);
        var missing = CliRunner.Run("diff", tmp["a"], tmp["nope.onnx"]);
        Assert.Equal(2, missing.ExitCode);
    }

    [Fact]
    public void CompileIsDeterministic()
    {
        using var tmp = new TempFolder();
        Assert.Equal(0, CliRunner.Run("compile", MixtralCheckpoint, "-o", tmp["a"]).ExitCode);
        Assert.Equal(0, CliRunner.Run("compile", MixtralCheckpoint, "-o", tmp["b"]).ExitCode);
        foreach (var f in new[] { "model.onnx", "model.onnx.data", "genai_config.json" })
            Assert.True(File.ReadAllBytes(tmp[$"a/{f}"]).AsSpan().SequenceEqual(File.ReadAllBytes(tmp[$"b/{f}"])), $"{f} differs between two compiles");
    }

    [Fact]
    public void QuantizedModelReportsTheSameLogicalParameterCountAndIsSmaller()
    {
        using var tmp = new TempFolder();
        Assert.Equal(0, CliRunner.Run("compile", MixtralCheckpoint, "-o", tmp["f"]).ExitCode);
        var q = CliRunner.Run("compile", MixtralCheckpoint, "-o", tmp["q"], "--pipeline", "quantize-int4{block-size=16}");
        Assert.True(q.ExitCode == 0, q.ToString());
        using var f = JsonDocument.Parse(File.ReadAllText(tmp["f/compile_report.json"]));
        using var qd = JsonDocument.Parse(File.ReadAllText(tmp["q/compile_report.json"]));
        Assert.Equal(f.RootElement.GetProperty("parameters").GetProperty("total").GetInt64(), qd.RootElement.GetProperty("parameters").GetProperty("total").GetInt64());
        Assert.True(new FileInfo(tmp["q/model.onnx.data"]).Length < new FileInfo(tmp["f/model.onnx.data"]).Length / 2);
        var run = CliRunner.Run("run", tmp["q/model.onnx"], "--random", "--int-max", "2", "--dim", "sequence_length=4", "--dim", "total_sequence_length=4", "--dim", "past_sequence_length=0");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("logits: f32[1,4,", run.Stdout);
    }

    [Fact]
    public void VerifyOrtChecksEachPassAndChangesNothingInTheArtifact()
    {
        using var tmp = new TempFolder();
        const string pipeline = "drop-blocks{blocks=1},quantize-int4{block-size=16},cleanup";
        var checkedRun = CliRunner.Run("compile", MixtralCheckpoint, "-o", tmp["v"], "--pipeline", pipeline, "--verify-ort");
        Assert.True(checkedRun.ExitCode == 0, checkedRun.ToString());
        Assert.Equal(0, CliRunner.Run("compile", MixtralCheckpoint, "-o", tmp["p"], "--pipeline", pipeline).ExitCode);
        foreach (var f in new[] { "model.onnx", "model.onnx.data" })
            Assert.True(File.ReadAllBytes(tmp[$"v/{f}"]).AsSpan().SequenceEqual(File.ReadAllBytes(tmp[$"p/{f}"])), f);
    }
}
