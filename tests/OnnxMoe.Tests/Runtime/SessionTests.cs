using OnnxMoe.Ir;
using OnnxMoe.Runtime;

namespace OnnxMoe.Tests.Runtime;

/// <summary>Runs ONNX backend corpus models (Debian libonnx-testdata) with inputs built here and
/// compares with values computed in C#. Float tolerances are stated per test.</summary>
public class SessionTests
{
    private const string NodeCorpus = "/usr/include/onnx/backend/test/data/node";

    internal static string CorpusModel(string test)
    {
        string path = Path.Combine(NodeCorpus, test, "model.onnx");
        Assert.True(File.Exists(path), $"{path} is missing: install the Debian package libonnx-testdata");
        return path;
    }

    private static float[] Ramp(int n, float scale, float offset) => Enumerable.Range(0, n).Select(i => i * scale + offset).ToArray();

    [Fact]
    public void Add_matches_elementwise_sum()
    {
        using var session = new InferenceSession(CorpusModel("test_add"));
        Assert.Equal(["x", "y"], session.InputNames);
        Assert.Equal(DataType.Float, session.Inputs[0].ElementType);
        Assert.Equal([3L, 4, 5], session.Inputs[0].Shape);

        var x = Ramp(60, 0.5f, -7f);
        var y = Ramp(60, -0.25f, 3f);
        using var xv = OrtValue.CreateTensor<float>(x, [3, 4, 5]);
        using var yv = OrtValue.CreateTensor<float>(y, [3, 4, 5]);
        using var result = session.Run([new("x", xv), new("y", yv)]);

        Assert.Equal(["sum"], result.Names);
        Assert.Equal([3L, 4, 5], result[0].Shape);
        Assert.Equal(DataType.Float, result[0].ElementType);
        var sum = result["sum"].GetSpan<float>();
        for (int i = 0; i < 60; i++) Assert.Equal(x[i] + y[i], sum[i]); // one IEEE add each side: exact
    }

    [Fact]
    public void MatMul_matches_naive_product()
    {
        using var session = new InferenceSession(CorpusModel("test_matmul_2d"), new SessionConfig { IntraOpThreads = 1 });
        var a = Ramp(12, 0.3f, -1.1f);
        var b = Ramp(12, -0.7f, 2.3f);
        using var av = OrtValue.CreateTensor<float>(a, [3, 4]);
        using var bv = OrtValue.CreateTensor<float>(b, [4, 3]);
        var c = session.RunToArray<float>([new("a", av), new("b", bv)], "c");

        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
            {
                double expected = 0;
                for (int k = 0; k < 4; k++) expected += (double)a[i * 4 + k] * b[k * 3 + j];
                Assert.True(Math.Abs(c[i * 3 + j] - expected) <= 1e-5 * Math.Max(1, Math.Abs(expected)),
                    $"c[{i},{j}] = {c[i * 3 + j]}, expected {expected} (relative tolerance 1e-5)");
            }
    }

    [Theory]
    [InlineData("test_mod_mixed_sign_int64")]
    [InlineData("test_mod_mixed_sign_int32")]
    public void Integer_mod_follows_divisor_sign(string test)
    {
        using var session = new InferenceSession(CorpusModel(test));
        long[] x = [-4, 7, 5, 4, -7, 8];
        long[] y = [2, -3, 8, -2, 3, 5];
        long[] expected = x.Zip(y, (a, b) => ((a % b) + b) % b).ToArray(); // fmod=0: result takes the divisor's sign
        RunResult result;
        if (session.Inputs[0].ElementType == DataType.Int64)
        {
            using var xv = OrtValue.CreateTensor<long>(x, [6]);
            using var yv = OrtValue.CreateTensor<long>(y, [6]);
            result = session.Run([new("x", xv), new("y", yv)]);
            Assert.Equal(expected, result[0].ToArray<long>());
        }
        else
        {
            Assert.Equal(DataType.Int32, session.Inputs[0].ElementType);
            using var xv = OrtValue.CreateTensor<int>(x.Select(v => (int)v).ToArray(), [6]);
            using var yv = OrtValue.CreateTensor<int>(y.Select(v => (int)v).ToArray(), [6]);
            result = session.Run([new("x", xv), new("y", yv)]);
            Assert.Equal(DataType.Int32, result[0].ElementType);
            Assert.Equal(expected.Select(v => (int)v), result[0].ToArray<int>());
        }
        result.Dispose();
    }

    [Fact]
    public void Cast_float_to_f16_and_back()
    {
        var x = Ramp(12, 0.37f, -2f);
        using (var session = new InferenceSession(CorpusModel("test_cast_FLOAT_to_FLOAT16")))
        {
            using var xv = OrtValue.CreateTensor<float>(x, [3, 4]);
            using var result = session.Run([new("input", xv)]);
            Assert.Equal(DataType.Float16, result[0].ElementType);
            Assert.Equal(x.Select(v => (Half)v), result[0].ToArray<Half>()); // both round to nearest even: exact
        }
        using (var session = new InferenceSession(CorpusModel("test_cast_FLOAT16_to_FLOAT")))
        {
            var h = x.Select(v => (Half)v).ToArray();
            using var hv = OrtValue.CreateTensor<Half>(h, [3, 4]);
            Assert.Equal(DataType.Float16, hv.ElementType);
            using var result = session.Run([new("input", hv)]);
            Assert.Equal(h.Select(v => (float)v), result[0].ToArray<float>());
        }
    }

    [Fact]
    public void Cast_float_to_bf16_matches_round_to_nearest_even()
    {
        using var session = new InferenceSession(CorpusModel("test_cast_FLOAT_to_BFLOAT16"));
        var x = Ramp(12, 1.013f, -5.5f);
        using var xv = OrtValue.CreateTensor<float>(x, [3, 4]);
        using var result = session.Run([new("input", xv)]);
        Assert.Equal(DataType.BFloat16, result[0].ElementType);
        Assert.Equal(x.Select(v => (BFloat16)v), result[0].ToArray<BFloat16>());
        Assert.Equal(x.Select(v => ((BFloat16)v).Bits), result[0].ToArray<ushort>()); // same bytes through a ushort view
    }

    [Fact]
    public void Bool_and_uint8_tensors()
    {
        using (var session = new InferenceSession(CorpusModel("test_and2d")))
        {
            var x = Enumerable.Range(0, 12).Select(i => i % 2 == 0).ToArray();
            var y = Enumerable.Range(0, 12).Select(i => i % 3 == 0).ToArray();
            using var xv = OrtValue.CreateTensor<bool>(x, [3, 4]);
            using var yv = OrtValue.CreateTensor<bool>(y, [3, 4]);
            using var result = session.Run([new("x", xv), new("y", yv)]);
            Assert.Equal(DataType.Bool, result[0].ElementType);
            Assert.Equal(x.Zip(y, (a, b) => a && b), result[0].ToArray<bool>());
        }
        using (var session = new InferenceSession(CorpusModel("test_add_uint8")))
        {
            var x = Enumerable.Range(0, 60).Select(i => (byte)(i * 3)).ToArray();
            var y = Enumerable.Range(0, 60).Select(i => (byte)(200 - i)).ToArray();
            using var xv = OrtValue.CreateTensor<byte>(x, [3, 4, 5]);
            using var yv = OrtValue.CreateTensor<byte>(y, [3, 4, 5]);
            using var result = session.Run([new("x", xv), new("y", yv)]);
            Assert.Equal(DataType.UInt8, result[0].ElementType);
            Assert.Equal(x.Zip(y, (a, b) => unchecked((byte)(a + b))), result[0].ToArray<byte>()); // wraps modulo 256
        }
    }

    [Fact]
    public void Symbolic_dimensions_are_reported_and_any_size_runs()
    {
        var model = TinyOnnx.Model(
            [TinyOnnx.Node("Relu", ["x"], ["y"])],
            [TinyOnnx.Value("x", DataType.Float, "batch", 3, "seq")],
            [TinyOnnx.Value("y", DataType.Float, "batch", 3, "seq")]);
        using var folder = new TempFolder();
        using var session = new InferenceSession(folder.Write("relu.onnx", model));
        var input = session.Inputs.Single();
        Assert.Equal([-1L, 3, -1], input.Shape);
        Assert.Equal(["batch", null, "seq"], input.DimensionNames);
        Assert.Equal("x: f32[batch,3,seq]", input.ToString());

        var x = Ramp(2 * 3 * 5, 1f, -14.5f);
        using var xv = OrtValue.CreateTensor<float>(x, [2, 3, 5]);
        using var result = session.Run([new("x", xv)]);
        Assert.Equal([2L, 3, 5], result["y"].Shape);
        Assert.Equal(x.Select(v => Math.Max(v, 0f)), result["y"].ToArray<float>());
    }

    [Fact]
    public void External_data_is_read_next_to_the_model()
    {
        float[] w = [1.5f, -2f, 0.25f, 8f];
        var model = TinyOnnx.Model(
            [TinyOnnx.Node("Add", ["x", "w"], ["y"])],
            [TinyOnnx.Value("x", DataType.Float, 4)],
            [TinyOnnx.Value("y", DataType.Float, 4)],
            [TinyOnnx.ExternalInitializer("w", DataType.Float, [4], "model.onnx.data", 16, 16)]);
        using var folder = new TempFolder();
        var data = new byte[32];
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(w.AsSpan()).CopyTo(data.AsSpan(16));
        folder.Write("model.onnx.data", data);
        string path = folder.Write("model.onnx", model);

        // Loaded from another working directory: the data file is found relative to the model, not the cwd.
        using var session = new InferenceSession(path);
        float[] x = [1, 2, 3, 4];
        using var xv = OrtValue.CreateTensor<float>(x, [4]);
        Assert.Equal(x.Zip(w, (a, b) => a + b), session.RunToArray<float>([new("x", xv)], "y"));
    }

    [Fact]
    public void Outputs_can_be_fed_back_as_inputs_without_copying()
    {
        using var session = new InferenceSession(CorpusModel("test_add"));
        var one = Enumerable.Repeat(1f, 60).ToArray();
        using var ones = OrtValue.CreateTensor<float>(one, [3, 4, 5]);
        using var state = OrtValue.CreateCopy<float>(new float[60], [3, 4, 5]);
        var current = session.Run([new("x", state), new("y", ones)]);
        for (int step = 2; step <= 5; step++)
        {
            var next = session.Run([new("x", current["sum"]), new("y", ones)]);
            current.Dispose();
            current = next;
        }
        using var last = current.Detach("sum");
        current.Dispose(); // does not release the detached value
        Assert.All(last.ToArray<float>(), v => Assert.Equal(5f, v));
    }

    [Fact]
    public void Selected_outputs_come_back_in_the_requested_order()
    {
        using var session = new InferenceSession(CorpusModel("test_add"));
        using var x = OrtValue.CreateCopy<float>(new float[60], [3, 4, 5]);
        using var result = session.Run([new("x", x), new("y", x)], ["sum"]);
        Assert.Single(result);
        Assert.Throws<KeyNotFoundException>(() => result["nope"]);
    }

    [Fact]
    public void Cancelled_token_stops_the_run()
    {
        using var session = new InferenceSession(CorpusModel("test_add"));
        using var x = OrtValue.CreateCopy<float>(new float[60], [3, 4, 5]);
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => session.Run([new("x", x), new("y", x)], cancellationToken: cancelled.Token));
        using var live = new CancellationTokenSource();
        using var result = session.Run([new("x", x), new("y", x)], cancellationToken: live.Token); // run options path without cancellation
        Assert.Equal(60, result[0].ElementCount);
    }
}
