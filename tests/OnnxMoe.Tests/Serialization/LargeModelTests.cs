using System.Diagnostics;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx;
using Xunit.Abstractions;

namespace OnnxMoe.Tests.Serialization;

/// <summary>Tests that measure process memory run alone (no other test allocating beside them).</summary>
[CollectionDefinition("memory-measuring", DisableParallelization = true)]
public sealed class MemoryMeasuringCollection;

/// <summary>
/// A 2.25 GiB model (over the 2 GiB protobuf limit) written with external data and read back
/// lazily, with the managed allocations and peak RSS of the process measured around it.
/// </summary>
[Collection("memory-measuring")]
public sealed class LargeModelTests(ITestOutputHelper output)
{
    private const long TensorBytes = 768L << 20; // three of them: 2.25 GiB

    private static Model BuildModel()
    {
        var graph = new Graph("large");
        var x = new Value("x", new TensorType(DataType.Float, [new Dim(TensorBytes / 4)]));
        graph.Inputs.Add(x);
        Value current = x;
        var specs = new (DataType Type, long[] Shape)[]
        {
            (DataType.Float, [TensorBytes / 4]),
            (DataType.Float16, [1024, TensorBytes / 2 / 1024]),
            (DataType.UInt8, [TensorBytes]),
        };
        for (int i = 0; i < specs.Length; i++)
        {
            var w = new Value($"w{i}", null, new PatternTensor(specs[i].Type, specs[i].Shape, (ulong)(i + 1)) { Name = $"w{i}" });
            graph.AddInitializer(w);
            var node = graph.Append(new Node("", "Identity", [w], 1, $"/model/layers.{i}/Identity"));
            node.Outputs[0].Name = $"y{i}";
            graph.Outputs.Add(node.Outputs[0]);
        }
        graph.Outputs.Add(current);
        var model = new Model(graph) { IrVersion = 10 };
        model.SetOpset("", 21);
        return model;
    }

    [Fact]
    public void ModelOverTwoGiBWritesWithExternalDataAndReadsBackLazily()
    {
        string dir = Path.Combine(Path.GetTempPath(), "onnxmoe-large-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var model = BuildModel();
            long totalBytes = model.Graph.Initializers.Sum(v => v.ConstValue!.ByteLength);
            Assert.True(totalBytes > (2L << 30));

            ResetPeakRss();
            long rssBefore = ReadStatusKb("VmHWM");
            long allocBefore = GC.GetAllocatedBytesForCurrentThread();
            var sw = Stopwatch.StartNew();

            string path = Path.Combine(dir, "large.onnx");
            var result = OnnxWriter.Write(model, path);
            var back = OnnxReader.Read(path);

            long allocated = GC.GetAllocatedBytesForCurrentThread() - allocBefore;
            long rssPeakDelta = (ReadStatusKb("VmHWM") - rssBefore) * 1024;
            output.WriteLine($"model {totalBytes} bytes of tensors; write+read {sw.Elapsed.TotalSeconds:F1} s; " +
                             $"managed allocation {allocated} bytes ({100.0 * allocated / totalBytes:F3} % of the model); " +
                             $"peak RSS rise {rssPeakDelta} bytes; .onnx {result.ModelBytes} bytes, .onnx.data {result.DataBytes} bytes");

            Assert.Equal(path + ".data", result.DataPath);
            Assert.Equal(3, result.ExternalTensors);
            Assert.True(result.ModelBytes < 4096, $"ModelProto should be tiny, is {result.ModelBytes} bytes");
            Assert.True(allocated < 64L << 20, $"allocated {allocated} bytes while writing and reading a {totalBytes}-byte model");
            if (rssPeakDelta > 0) Assert.True(rssPeakDelta < 512L << 20, $"peak RSS rose by {rssPeakDelta} bytes");

            // Lazy: shape and type known, bytes still in the file; offsets page-aligned; sampled bytes right.
            Assert.Equal(3, back.Graph.Initializers.Count);
            var rng = new Random(7);
            for (int i = 0; i < 3; i++)
            {
                var t = Assert.IsType<FileTensor>(back.Graph.Initializers[i].ConstValue);
                Assert.Equal(model.Graph.Initializers[i].ConstValue!.Shape, t.Shape);
                Assert.Equal(model.Graph.Initializers[i].ConstValue!.DataType, t.DataType);
                Assert.Equal(0, t.Offset % 4096);
                Assert.Equal(TensorBytes, t.Length);
                var positions = new List<long> { 0, TensorBytes - 4096 };
                for (int k = 0; k < 32; k++) positions.Add(rng.NextInt64(0, TensorBytes / 4096) * 4096);
                var got = new byte[4096];
                var want = new byte[4096];
                foreach (var pos in positions)
                {
                    t.File.ReadExactly(t.Offset + pos, got);
                    PatternTensor.Fill((ulong)(i + 1), pos, want);
                    Assert.True(got.AsSpan().SequenceEqual(want), $"tensor w{i}: bytes at {pos} differ");
                }
            }
            Assert.Equal(result.DataBytes, new FileInfo(path + ".data").Length);
            Assert.Equal(2L * 4096 * ((TensorBytes + 4095) / 4096) + TensorBytes, result.DataBytes);

            // Asking to embed it fails clearly and leaves nothing behind.
            string embedded = Path.Combine(dir, "embedded.onnx");
            var e = Assert.Throws<OnnxFormatException>(() => OnnxWriter.Write(model, embedded, OnnxWriteOptions.Embedded));
            Assert.Contains("2 GiB", e.Message);
            Assert.Equal(new[] { "large.onnx", "large.onnx.data" }, Directory.GetFiles(dir).Select(Path.GetFileName).Order().ToArray());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Linux resets VmHWM to the current RSS when 5 is written to clear_refs; elsewhere the delta is just less precise.</summary>
    private static void ResetPeakRss()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private static long ReadStatusKb(string key)
    {
        if (!File.Exists("/proc/self/status")) return 0;
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(key + ":", StringComparison.Ordinal))
                return long.Parse(line[(key.Length + 1)..].Trim().Split(' ')[0]);
        return 0;
    }
}
