using System.Text.Json;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Checkpoints;

/// <summary>
/// A Hugging Face checkpoint folder: config.json, weights in model.safetensors or shards listed by
/// model.safetensors.index.json (or, failing both, every *.safetensors file), and tokenizer files.
/// Opening reads the config and safetensors headers only. Owns the opened files.
/// </summary>
public sealed class CheckpointFolder : IDisposable
{
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>Files copied next to a compiled model when present.</summary>
    public static readonly string[] TokenizerFileNames =
    [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
        "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
    ];

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, SafetensorsFile> _byTensor;

    private CheckpointFolder(string directory, HfConfig config, List<SafetensorsFile> files, Dictionary<string, SafetensorsFile> byTensor)
    {
        Directory = directory;
        Config = config;
        _files = files;
        _byTensor = byTensor;
        TokenizerFiles = TokenizerFileNames.Select(n => System.IO.Path.Combine(directory, n)).Where(File.Exists).ToList();
    }

    public string Directory { get; }
    public HfConfig Config { get; }
    public IReadOnlyList<SafetensorsFile> Files => _files;
    /// <summary>Full paths of the tokenizer/generation files present, in <see cref="TokenizerFileNames"/> order.</summary>
    public IReadOnlyList<string> TokenizerFiles { get; }
    /// <summary>All tensor names, ordinal-sorted.</summary>
    public IEnumerable<string> TensorNames => _byTensor.Keys.Order(StringComparer.Ordinal);
    public long TotalTensorBytes => _files.Sum(f => f.TensorNames.Sum(n => f[n].Length));

    public static CheckpointFolder Open(string directory)
    {
        directory = System.IO.Path.GetFullPath(directory);
        if (!System.IO.Directory.Exists(directory)) throw new CheckpointException($"{directory}: checkpoint folder not found");
        var config = HfConfig.Load(System.IO.Path.Combine(directory, "config.json"));
        var files = new List<SafetensorsFile>();
        var byTensor = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        try
        {
            string index = System.IO.Path.Combine(directory, IndexFileName);
            if (File.Exists(index))
            {
                var map = ReadWeightMap(index);
                var opened = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
                foreach (var shard in map.Values.Distinct().Order(StringComparer.Ordinal))
                {
                    string full = System.IO.Path.GetFullPath(System.IO.Path.Combine(directory, shard));
                    if (!full.StartsWith(directory + System.IO.Path.DirectorySeparatorChar, StringComparison.Ordinal))
                        throw new CheckpointException($"{index}: shard '{shard}' lies outside the checkpoint folder");
                    if (!File.Exists(full)) throw new CheckpointException($"{index}: shard '{shard}' listed in weight_map does not exist");
                    var f = SafetensorsFile.Open(full);
                    files.Add(f);
                    opened[shard] = f;
                }
                foreach (var (name, shard) in map.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                {
                    var f = opened[shard];
                    if (!f.Contains(name)) throw new CheckpointException($"{index}: tensor '{name}' is mapped to '{shard}' but that file has no such tensor");
                    byTensor[name] = f;
                }
            }
            else
            {
                // model.safetensors alone when present: other *.safetensors beside it (e.g. golden outputs) are not weights.
                string single = System.IO.Path.Combine(directory, "model.safetensors");
                var paths = File.Exists(single) ? [single]
                    : System.IO.Directory.GetFiles(directory, "*.safetensors").Order(StringComparer.Ordinal).ToList();
                if (paths.Count == 0) throw new CheckpointException($"{directory}: no model.safetensors, {IndexFileName} or other *.safetensors file");
                foreach (var path in paths)
                {
                    var f = SafetensorsFile.Open(path);
                    files.Add(f);
                    foreach (var name in f.TensorNames)
                    {
                        if (byTensor.TryGetValue(name, out var other))
                            throw new CheckpointException($"{path}: tensor '{name}' also appears in {other.Path}");
                        byTensor[name] = f;
                    }
                }
            }
            var folder = new CheckpointFolder(directory, config, files, byTensor);
            foreach (var file in folder.TokenizerFiles) CheckJsonObject(file);
            return folder;
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    private static Dictionary<string, string> ReadWeightMap(string index)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(index); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new CheckpointException($"{index}: cannot read: {e.Message}", e); }
        using var doc = JsonText.Parse(bytes, default, problem => new CheckpointException($"{index}: {problem}"));
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CheckpointException($"{index}: the top level must be a JSON object");
        if (!doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
            throw new CheckpointException($"{index}: no 'weight_map' object");
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in wm.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String) throw new CheckpointException($"{index}: weight_map entry '{p.Name}' is not a file name");
            string shard = p.Value.GetString()!;
            if (shard.Length == 0 || shard.IndexOfAny(System.IO.Path.GetInvalidPathChars()) >= 0 || shard.Contains('\0'))
                throw new CheckpointException($"{index}: weight_map entry '{p.Name}' names no usable file ({JsonSerializer.Serialize(shard)})");
            if (!map.TryAdd(p.Name, shard)) throw new CheckpointException($"{index}: weight_map lists tensor '{p.Name}' twice");
        }
        return map;
    }

    /// <summary>A .json tokenizer/generation file must be one JSON object: it is copied into the artifact, where GenAI reads it.</summary>
    private static void CheckJsonObject(string path)
    {
        if (!path.EndsWith(".json", StringComparison.Ordinal)) return;
        try
        {
            var bytes = File.ReadAllBytes(path);
            using var doc = JsonText.Parse(bytes, new JsonDocumentOptions { MaxDepth = 256 }, problem => new CheckpointException($"{path}: {problem}"));
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new CheckpointException($"{path}: the top level must be a JSON object, found {doc.RootElement.ValueKind.ToString().ToLowerInvariant()}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new CheckpointException($"{path}: cannot read: {e.Message}", e); }
    }

    public bool Contains(string name) => _byTensor.ContainsKey(name);

    public FileTensor? TryGetTensor(string name) => _byTensor.TryGetValue(name, out var f) ? f[name] : null;

    /// <summary>The tensor named <paramref name="name"/>, any shape.</summary>
    public FileTensor GetTensor(string name) => GetTensor(name, null);

    /// <summary>The tensor named <paramref name="name"/>; unless null, its shape must be <paramref name="expectedShape"/>.</summary>
    public FileTensor GetTensor(string name, params long[]? expectedShape)
    {
        if (!_byTensor.TryGetValue(name, out var file))
            throw new CheckpointException($"{Directory}: checkpoint has no tensor '{name}'");
        var t = file[name];
        if (expectedShape != null && !t.Shape.AsSpan().SequenceEqual(expectedShape))
            throw new CheckpointException($"{file.Path}: tensor '{name}' has shape [{string.Join(",", t.Shape)}], expected [{string.Join(",", expectedShape)}] from config.json");
        return t;
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
