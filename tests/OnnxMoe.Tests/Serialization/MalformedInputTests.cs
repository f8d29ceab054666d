using Google.Protobuf;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx;
using OnnxMoe.Onnx.Proto;

namespace OnnxMoe.Tests.Serialization;

/// <summary>Malformed files give one <see cref="OnnxFormatException"/> naming the file and the problem; failed writes leave nothing.</summary>
[Collection("memory-measuring")]
public sealed class MalformedInputTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "onnxmoe-malformed-" + Guid.NewGuid().ToString("N"));
    private static readonly string ConvModel = Path.Combine(BackendCorpus.Root, "pytorch-converted/test_Conv2d/model.onnx");

    public MalformedInputTests() => Directory.CreateDirectory(_dir);
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void TruncatedFileAtAnyPointIsAFormatError()
    {
        var bytes = File.ReadAllBytes(ConvModel);
        string path = Path.Combine(_dir, "truncated.onnx");
        var cuts = Enumerable.Range(0, 64).Select(i => (int)((long)bytes.Length * i / 64)).Append(bytes.Length - 1).Distinct();
        foreach (int cut in cuts)
        {
            File.WriteAllBytes(path, bytes[..cut]);
            var e = Assert.Throws<OnnxFormatException>(() => OnnxReader.Read(path));
            Assert.Contains(path, e.Message);
        }
    }

    [Fact]
    public void RandomBytesAreAFormatError()
    {
        var rng = new Random(12345);
        string path = Path.Combine(_dir, "random.onnx");
        for (int i = 0; i < 200; i++)
        {
            var bytes = new byte[rng.Next(1, 5000)];
            rng.NextBytes(bytes);
            File.WriteAllBytes(path, bytes);
            var e = Assert.Throws<OnnxFormatException>(() => OnnxReader.Read(path));
            Assert.Contains(path, e.Message);
        }
    }

    [Fact]
    public void MissingModelFileIsAFormatError()
    {
        var e = Assert.Throws<OnnxFormatException>(() => OnnxReader.Read(Path.Combine(_dir, "nope.onnx")));
        Assert.Contains("not found", e.Message);
    }

    /// <summary>Writes the Conv2d corpus model with external data and returns the ModelProto for tampering.</summary>
    private (string Path, ModelProto Proto) ExternalCopy()
    {
        string path = Path.Combine(_dir, "ext.onnx");
        var r = OnnxWriter.Write(OnnxReader.Read(ConvModel), path, new OnnxWriteOptions { ExternalThreshold = 1 });
        Assert.True(r.ExternalTensors > 0);
        return (path, ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)));
    }

    private static void SetEntry(TensorProto t, string key, string value) => t.ExternalData.First(kv => kv.Key == key).Value = value;

    [Theory]
    [InlineData("offset", "999999999", "outside")]
    [InlineData("length", "12", "length 12")]
    [InlineData("offset", "-4", "not a non-negative integer")]
    [InlineData("location", "../escape.data", "relative path inside")]
    [InlineData("location", "other.data", "not found")]
    public void BadExternalReferenceIsAFormatErrorNamingTensorAndFile(string key, string value, string expected)
    {
        var (path, proto) = ExternalCopy();
        var tensor = proto.Graph.Initializer.First(t => t.DataLocation == 1);
        SetEntry(tensor, key, value);
        File.WriteAllBytes(path, proto.ToByteArray());
        var e = Assert.Throws<OnnxFormatException>(() => OnnxReader.Read(path));
        Assert.Contains(expected, e.Message);
        Assert.Contains(tensor.Name, e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void MissingDataFileIsAFormatError()
    {
        var (path, _) = ExternalCopy();
        File.Delete(path + ".data");
        var e = Assert.Throws<OnnxFormatException>(() => OnnxReader.Read(path));
        Assert.Contains("ext.onnx.data", e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void TensorThatFailsWhileStreamingLeavesNoOutput()
    {
        var graph = new Graph("g");
        graph.AddInitializer(new Value("ok", null, InMemoryTensor.FromFloats([1024], new float[1024])));
        graph.AddInitializer(new Value("bad", null, new LazyTensor(DataType.Float, [1024], () => throw new InvalidOperationException("quantizer failed"))));
        graph.Outputs.Add(graph.Initializers[0]);
        var model = new Model(graph);
        model.SetOpset("", 21);
        string target = Path.Combine(_dir, "out.onnx");
        var e = Assert.Throws<InvalidOperationException>(() => OnnxWriter.Write(model, target));
        Assert.Contains("quantizer failed", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(_dir));
    }

    [Fact]
    public void FailedWriteKeepsThePreviousOutputIntact()
    {
        string target = Path.Combine(_dir, "model.onnx");
        File.WriteAllText(target, "previous");
        var graph = new Graph("g");
        graph.AddInitializer(new Value("bad", null, new LazyTensor(DataType.Float, [4], () => throw new InvalidOperationException("boom"))));
        graph.Outputs.Add(graph.Initializers[0]);
        var model = new Model(graph);
        model.SetOpset("", 21);
        Assert.Throws<InvalidOperationException>(() => OnnxWriter.Write(model, target, OnnxWriteOptions.Embedded));
        Assert.Equal("previous", File.ReadAllText(target));
        Assert.Single(Directory.GetFileSystemEntries(_dir));
    }
}
