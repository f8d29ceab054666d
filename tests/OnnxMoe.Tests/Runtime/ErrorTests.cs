using OnnxMoe.Runtime;

namespace OnnxMoe.Tests.Runtime;

public class ErrorTests
{
    [Fact]
    public void Malformed_model_gives_ORT_message()
    {
        using var folder = new TempFolder();
        string path = folder.Write("garbage.onnx", "this is not a protobuf model"u8.ToArray());
        var e = Assert.Throws<OrtException>(() => new InferenceSession(path));
        Assert.Contains("garbage.onnx", e.Message);
        Assert.NotEqual(OrtErrorCode.Ok, e.Code);
    }

    [Fact]
    public void Missing_model_file_gives_ORT_message()
    {
        var e = Assert.Throws<OrtException>(() => new InferenceSession("/nonexistent/dir/model.onnx"));
        Assert.Contains("/nonexistent/dir/model.onnx", e.Message);
        Assert.Equal(OrtErrorCode.NoSuchFile, e.Code);
    }

    [Fact]
    public void Wrong_input_name_lists_the_real_ones()
    {
        using var session = new InferenceSession(SessionTests.CorpusModel("test_add"));
        using var v = OrtValue.CreateCopy<float>(new float[60], [3, 4, 5]);
        var e = Assert.Throws<ArgumentException>(() => session.Run([new("x", v), new("z", v)]));
        Assert.Contains("no input named 'z'", e.Message);
        Assert.Contains("x, y", e.Message);
        var o = Assert.Throws<ArgumentException>(() => session.Run([new("x", v), new("y", v)], ["total"]));
        Assert.Contains("no output named 'total'", o.Message);
    }

    [Fact]
    public void Missing_input_and_wrong_type_come_back_from_ORT()
    {
        using var session = new InferenceSession(SessionTests.CorpusModel("test_add"));
        using var f = OrtValue.CreateCopy<float>(new float[60], [3, 4, 5]);
        using var l = OrtValue.CreateCopy<long>(new long[60], [3, 4, 5]);
        var missing = Assert.Throws<OrtException>(() => session.Run([new("x", f)]));
        Assert.Contains("Missing Input: y", missing.Message);
        var type = Assert.Throws<OrtException>(() => session.Run([new("x", f), new("y", l)]));
        Assert.Equal(OrtErrorCode.InvalidArgument, type.Code);
    }

    [Fact]
    public void Data_length_must_match_shape()
    {
        var e = Assert.Throws<ArgumentException>(() => OrtValue.CreateTensor<float>(new float[5], [2, 3]));
        Assert.Contains("needs 24 bytes", e.Message);
        Assert.Throws<ArgumentException>(() => OrtValue.CreateTensor<float>(new float[6], [-2, -3]));
        Assert.Throws<InvalidOperationException>(() =>
        {
            using var v = OrtValue.CreateTensor<float>(new float[6], [2, 3]);
            v.GetSpan<long>();
        });
    }

    /// <summary>With the CPU package (no CUDA provider compiled in) asking for CUDA must fail in one line naming what is
    /// missing, never fall back to CPU. With a GPU build (-p:OrtFlavor=gpu) on a machine with CUDA the same request must
    /// give a working session; on one without, one line naming ORT's reason.</summary>
    [Fact]
    public void Cuda_request_fails_clearly_without_a_gpu_build()
    {
        var config = new SessionConfig { Device = SessionConfig.ParseDevice("cuda") };
        string model = SessionTests.CorpusModel("test_add");
        if (OrtRuntime.AvailableProviders.Contains("CUDAExecutionProvider"))
        {
            try
            {
                using var session = new InferenceSession(model, config);
                using var x = OrtValue.CreateCopy<float>(Enumerable.Repeat(2f, 60).ToArray(), [3, 4, 5]);
                Assert.All(session.RunToArray<float>([new("x", x), new("y", x)], "sum"), v => Assert.Equal(4f, v));
            }
            catch (OrtException e)
            {
                Assert.Contains("--device cuda: the CUDA execution provider", e.Message);
                Assert.DoesNotContain("\n", e.Message);
            }
            return;
        }
        var error = Assert.Throws<OrtException>(() => new InferenceSession(model, config));
        Assert.Contains("has no CUDA execution provider", error.Message);
        Assert.Contains("-p:OrtFlavor=gpu", error.Message);
        Assert.Contains(OrtRuntime.LibraryPathVariable, error.Message);
        Assert.DoesNotContain("\n", error.Message);
    }

    [Fact]
    public void Unknown_device_name_is_rejected()
    {
        Assert.Equal(ExecutionDevice.Cpu, SessionConfig.ParseDevice("CPU"));
        var e = Assert.Throws<ArgumentException>(() => SessionConfig.ParseDevice("tpu"));
        Assert.Contains("cpu or cuda", e.Message);
    }

    [Fact]
    public void Config_entries_reach_the_session()
    {
        var config = new SessionConfig { OptimizationLevel = GraphOptimizationLevel.Basic, IntraOpThreads = 1 };
        config.ConfigEntries["session.intra_op.allow_spinning"] = "0";
        using (new InferenceSession(SessionTests.CorpusModel("test_add"), config)) { }
        // Observable effect: told the file is in ORT format, ORT refuses the .onnx protobuf.
        config.ConfigEntries["session.load_model_format"] = "ORT";
        Assert.Throws<OrtException>(() => new InferenceSession(SessionTests.CorpusModel("test_add"), config));
    }

    [Fact]
    public void Disposed_value_cannot_be_used()
    {
        using var session = new InferenceSession(SessionTests.CorpusModel("test_add"));
        var v = OrtValue.CreateCopy<float>(new float[60], [3, 4, 5]);
        v.Dispose();
        v.Dispose(); // idempotent
        Assert.Throws<ObjectDisposedException>(() => session.Run([new("x", v), new("y", v)]));
    }
}

public class LibraryResolutionTests
{
    [Fact]
    public void Missing_override_names_the_variable_and_the_version_needed()
    {
        var e = Assert.Throws<OrtLibraryException>(() => OrtLibrary.ResolveOverride("/nowhere/libort.so"));
        Assert.Contains("ONNXMOE_ORT_LIBRARY=/nowhere/libort.so names no file", e.Message);
        Assert.Contains(OrtLibrary.MajorMinor(OrtRuntime.BindingVersion) + ".x", e.Message);
    }

    [Fact]
    public void Version_mismatch_is_refused_in_one_line()
    {
        OrtLibrary.CheckVersion(OrtRuntime.BindingVersion, "same");
        OrtLibrary.CheckVersion(OrtLibrary.MajorMinor(OrtRuntime.BindingVersion) + ".9", "another patch release");
        var e = Assert.Throws<OrtLibraryException>(() => OrtLibrary.CheckVersion("1.23.2", "ONNXMOE_ORT_LIBRARY=/x/libonnxruntime.so"));
        Assert.Contains("ONNXMOE_ORT_LIBRARY=/x/libonnxruntime.so is ONNX Runtime 1.23.2", e.Message);
        Assert.Contains($"onnxmoe binds ONNX Runtime {OrtRuntime.BindingVersion}", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    /// <summary>The override really replaces NuGet's library: a copy of it under another path is what the CLI then reports
    /// and runs on; a library that is no ONNX Runtime is refused in one line with exit 1.</summary>
    [Fact]
    public void Override_is_loaded_by_the_cli()
    {
        using var folder = new TempFolder();
        string copy = Path.Combine(folder.Path, "custom", "libonnxruntime.so");
        Directory.CreateDirectory(Path.GetDirectoryName(copy)!);
        File.Copy(OrtRuntime.LibraryPath, copy);
        var ok = Cli.CliRunner.RunWith(Cli.CliRunner.RepoRoot, new Dictionary<string, string?> { [OrtRuntime.LibraryPathVariable] = copy }, "version");
        Assert.True(ok.ExitCode == 0, ok.ToString());
        Assert.Contains($"library {copy}", ok.Stdout);
        Assert.Contains($"onnxruntime {OrtRuntime.Version}", ok.Stdout);

        string notOrt = folder.Write("libnotort.so", "not a shared library"u8.ToArray());
        var bad = Cli.CliRunner.RunWith(Cli.CliRunner.RepoRoot, new Dictionary<string, string?> { [OrtRuntime.LibraryPathVariable] = notOrt }, "version");
        Assert.True(bad.ExitCode == 1, bad.ToString());
        Assert.Contains($"{OrtRuntime.LibraryPathVariable}={notOrt}: cannot load it", bad.Stderr);
        Assert.Single(bad.Stderr.Trim().Split('\n'));
    }
}
