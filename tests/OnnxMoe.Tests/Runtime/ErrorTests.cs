using OnnxMoe.Ir;
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

    /// <summary>With the CPU library (no provider libraries beside it) asking for CUDA must fail with a
    /// clear message, never fall back to CPU. With a GPU build (provider library present, e.g. chosen
    /// through ONNXMOE_ORT_LIBRARY on a GPU machine) the same request must give a working session.</summary>
    [Fact]
    public void Cuda_request_fails_clearly_without_provider_libraries()
    {
        var config = new SessionConfig { Device = SessionConfig.ParseDevice("cuda") };
        string model = SessionTests.CorpusModel("test_add");
        bool gpuBuild = File.Exists(Path.Combine(Path.GetDirectoryName(OrtRuntime.LibraryPath)!, "libonnxruntime_providers_cuda.so"));
        if (gpuBuild)
        {
            using var session = new InferenceSession(model, config);
            using var x = OrtValue.CreateCopy<float>(Enumerable.Repeat(2f, 60).ToArray(), [3, 4, 5]);
            Assert.All(session.RunToArray<float>([new("x", x), new("y", x)], "sum"), v => Assert.Equal(4f, v));
            return;
        }
        var e = Assert.Throws<OrtException>(() => new InferenceSession(model, config));
        Assert.Contains("CUDA execution provider requested", e.Message);
        Assert.Contains(OrtRuntime.LibraryPathVariable, e.Message);
        Assert.Contains("providers_shared", e.Message); // ORT's own reason is kept
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
    public void Environment_variable_wins_over_the_bundled_library()
    {
        using var folder = new TempFolder();
        string custom = folder.Write("libonnxruntime.so", [0]);
        string bundled = folder.Write("libonnxruntime.so.1", [0]);
        Assert.Equal(custom, OnnxMoe.Runtime.Native.OrtLibrary.Resolve(custom, [bundled]));
        Assert.Equal(bundled, OnnxMoe.Runtime.Native.OrtLibrary.Resolve(null, [Path.Combine(folder.Path, "absent"), bundled]));
        Assert.Equal(bundled, OnnxMoe.Runtime.Native.OrtLibrary.Resolve("", [bundled]));
    }

    [Fact]
    public void Missing_library_names_both_ways_to_provide_it()
    {
        var e = Assert.Throws<OrtLibraryException>(() => OnnxMoe.Runtime.Native.OrtLibrary.Resolve(null, ["/nowhere/libonnxruntime.so.1"]));
        Assert.Contains("/nowhere/libonnxruntime.so.1", e.Message);
        Assert.Contains("ONNXMOE_ORT_LIBRARY", e.Message);
        Assert.Contains("dotnet build", e.Message);
        Assert.Contains("onnxruntime-node", e.Message);
        var bad = Assert.Throws<OrtLibraryException>(() => OnnxMoe.Runtime.Native.OrtLibrary.Resolve("/nowhere/libort.so", []));
        Assert.Contains("ONNXMOE_ORT_LIBRARY=/nowhere/libort.so names no file", bad.Message);
    }
}
