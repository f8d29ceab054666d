using System.Buffers.Binary;
using System.Text;
using OnnxMoe.Checkpoints;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Tests.Checkpoints;

public sealed class SafetensorsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-st-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static List<KeyValuePair<string, Tensor>> Sample() =>
    [
        new("a.weight", InMemoryTensor.FromFloats([2, 3], [1, 2, 3, 4, 5, 6])),
        new("b.half", InMemoryTensor.FromHalves([3], [(Half)0.5f, (Half)(-1f), (Half)2f])),
        new("c.bf16", new InMemoryTensor(DataType.BFloat16, [2], [0x80, 0x3F, 0x00, 0xC0])), // 1.0, -2.0
        new("d.ids", InMemoryTensor.FromInt64s([2], [7, -9])),
    ];

    private string Write(string name, IReadOnlyList<KeyValuePair<string, Tensor>>? tensors = null)
    {
        string path = Path.Combine(_dir, name);
        SafetensorsWriter.Write(path, tensors ?? Sample(), new Dictionary<string, string> { ["format"] = "pt" });
        return path;
    }

    /// <summary>Writes a raw file: 8-byte length, header text, then <paramref name="dataBytes"/> zero bytes.</summary>
    private string WriteRaw(string name, string header, long dataBytes, ulong? claimedLength = null)
    {
        string path = Path.Combine(_dir, name);
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, claimedLength ?? (ulong)h.Length);
        h.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Fact]
    public void RoundTripKeepsTypesShapesAndBytesAndReadsLazily()
    {
        string path = Write("ok.safetensors");
        using var f = SafetensorsFile.Open(path);
        Assert.Equal(["a.weight", "b.half", "c.bf16", "d.ids"], f.TensorNames);
        Assert.Equal("pt", f.Metadata["format"]);
        Assert.Equal(0, f.DataStart % 8);
        var a = f["a.weight"];
        Assert.False(a.IsMaterialized);
        Assert.Equal(DataType.Float, a.DataType);
        Assert.Equal([2L, 3], a.Shape);
        Assert.Equal([1f, 2, 3, 4, 5, 6], a.ToFloatArray());
        Assert.Equal([0.5f, -1f, 2f], f["b.half"].ToFloatArray());
        Assert.Equal([1f, -2f], f["c.bf16"].ToFloatArray());
        Assert.Equal([7L, -9], f["d.ids"].GetSpan<long>().ToArray());
    }

    [Fact]
    public void TruncatedFileNamesFileAndMissingBytes()
    {
        string path = Write("trunc.safetensors");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^4]);
        var e = Assert.Throws<CheckpointException>(() => SafetensorsFile.Open(path));
        Assert.Contains("trunc.safetensors", e.Message);
        Assert.Contains("d.ids", e.Message); // the last tensor runs past the end
    }

    [Theory]
    [InlineData("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "x", "span 4")]
    [InlineData("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}", 6, "y", "overlap")]
    [InlineData("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "x", "belong to no tensor")]
    [InlineData("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12, "trailing", "trailing")]
    [InlineData("{\"x\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "x", "unsupported dtype")]
    [InlineData("{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "x", "non-negative")]
    [InlineData("{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "x", "data_offsets")]
    [InlineData("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "JSON", "not valid JSON")]
    [InlineData("[1,2]", 0, "object", "not a JSON object")]
    public void MalformedHeadersAreClearErrors(string header, long dataBytes, string mention, string what)
    {
        string path = WriteRaw("bad.safetensors", header, dataBytes);
        var e = Assert.Throws<CheckpointException>(() => SafetensorsFile.Open(path));
        Assert.Contains("bad.safetensors", e.Message);
        Assert.Contains(mention, e.Message);
        Assert.Contains(what, e.Message);
    }

    [Fact]
    public void HeaderLengthBeyondCapOrFileIsRejected()
    {
        var huge = Assert.Throws<CheckpointException>(() => SafetensorsFile.Open(WriteRaw("huge.safetensors", "{}", 0, claimedLength: 200_000_000)));
        Assert.Contains("cap", huge.Message);
        var beyond = Assert.Throws<CheckpointException>(() => SafetensorsFile.Open(WriteRaw("short.safetensors", "{}", 0, claimedLength: 1000)));
        Assert.Contains("truncated", beyond.Message);
        File.WriteAllBytes(Path.Combine(_dir, "tiny.safetensors"), [1, 2, 3]);
        Assert.Throws<CheckpointException>(() => SafetensorsFile.Open(Path.Combine(_dir, "tiny.safetensors")));
    }

    [Fact]
    public void EmptyTensorAndEmptyFileAreValid()
    {
        using var f = SafetensorsFile.Open(WriteRaw("empty.safetensors", "{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]}}", 0));
        Assert.Equal(0, f["e"].Length);
    }
}
