using System.Text.Json.Nodes;
using OnnxMoe.Checkpoints;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Tests.Checkpoints;

public sealed class CheckpointFolderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-ckpt-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private void WriteConfig(string json = "{\"architectures\":[\"MixtralForCausalLM\"],\"hidden_size\":4}") =>
        File.WriteAllText(Path.Combine(_dir, "config.json"), json);

    private void Shard(string file, params string[] names) =>
        SafetensorsWriter.Write(Path.Combine(_dir, file), names.Select(n => new KeyValuePair<string, Tensor>(n, InMemoryTensor.FromFloats([2], [1, 2]))).ToList());

    [Fact]
    public void ShardedFolderResolvesEveryTensorThroughTheIndex()
    {
        WriteConfig();
        Shard("model-00001-of-00002.safetensors", "a", "b");
        Shard("model-00002-of-00002.safetensors", "c");
        var map = new JsonObject { ["a"] = "model-00001-of-00002.safetensors", ["b"] = "model-00001-of-00002.safetensors", ["c"] = "model-00002-of-00002.safetensors" };
        File.WriteAllText(Path.Combine(_dir, CheckpointFolder.IndexFileName), new JsonObject { ["weight_map"] = map }.ToJsonString());
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), "{}");
        using var c = CheckpointFolder.Open(_dir);
        Assert.Equal(["a", "b", "c"], c.TensorNames);
        Assert.Equal(2, c.Files.Count);
        Assert.EndsWith("model-00002-of-00002.safetensors", c.GetTensor("c", 2).File.Path);
        Assert.Equal(["tokenizer.json"], c.TokenizerFiles.Select(Path.GetFileName));
        Assert.Equal("MixtralForCausalLM", c.Config.Architecture);
        Assert.Equal(4, c.Config.GetInt("hidden_size"));
    }

    [Fact]
    public void MissingTensorAndWrongShapeNameTheTensor()
    {
        WriteConfig();
        Shard("model.safetensors", "a");
        using var c = CheckpointFolder.Open(_dir);
        Assert.Contains("'zzz'", Assert.Throws<CheckpointException>(() => c.GetTensor("zzz")).Message);
        var e = Assert.Throws<CheckpointException>(() => c.GetTensor("a", 3));
        Assert.Contains("'a'", e.Message);
        Assert.Contains("[2]", e.Message);
        Assert.Contains("[3]", e.Message);
    }

    [Fact]
    public void IndexPointingAtMissingShardOrWrongFileIsAnError()
    {
        WriteConfig();
        Shard("s1.safetensors", "a");
        File.WriteAllText(Path.Combine(_dir, CheckpointFolder.IndexFileName), "{\"weight_map\":{\"a\":\"s2.safetensors\"}}");
        Assert.Contains("s2.safetensors", Assert.Throws<CheckpointException>(() => CheckpointFolder.Open(_dir)).Message);
        File.WriteAllText(Path.Combine(_dir, CheckpointFolder.IndexFileName), "{\"weight_map\":{\"b\":\"s1.safetensors\"}}");
        Assert.Contains("'b'", Assert.Throws<CheckpointException>(() => CheckpointFolder.Open(_dir)).Message);
    }

    [Fact]
    public void ConfigErrorsNameFileAndField()
    {
        WriteConfig("{\"hidden_size\": \"big\"}");
        Shard("model.safetensors", "a");
        using var c = CheckpointFolder.Open(_dir);
        var e = Assert.Throws<CheckpointException>(() => c.Config.GetInt("hidden_size"));
        Assert.Contains("config.json", e.Message);
        Assert.Contains("hidden_size", e.Message);
        Assert.Contains("num_layers", Assert.Throws<CheckpointException>(() => c.Config.GetInt("num_layers")).Message);
        WriteConfig("{not json");
        Assert.Contains("not valid JSON", Assert.Throws<CheckpointException>(() => CheckpointFolder.Open(_dir)).Message);
    }

    [Fact]
    public void FolderWithoutWeightsOrConfigIsAnError()
    {
        Assert.Contains("config.json", Assert.Throws<CheckpointException>(() => CheckpointFolder.Open(_dir)).Message);
        WriteConfig();
        Assert.Contains("safetensors", Assert.Throws<CheckpointException>(() => CheckpointFolder.Open(_dir)).Message);
    }
}
