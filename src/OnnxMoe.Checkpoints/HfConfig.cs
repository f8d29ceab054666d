using System.Text.Json;
using OnnxMoe.Ir;

namespace OnnxMoe.Checkpoints;

/// <summary>
/// A Hugging Face config.json, read eagerly (it is small). Typed getters throw a
/// <see cref="CheckpointException"/> naming the file and field when a value is missing or mistyped.
/// </summary>
public sealed class HfConfig
{
    private readonly JsonElement _root;

    private HfConfig(string path, JsonElement root)
    {
        Path = path;
        _root = root;
    }

    public string Path { get; }

    public static HfConfig Load(string path)
    {
        if (!File.Exists(path)) throw new CheckpointException($"{path}: config.json not found");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new CheckpointException($"{path}: cannot read config.json: {e.Message}", e); }
        using var doc = JsonText.Parse(bytes, Options, problem => new CheckpointException($"{path}: config is {problem}"));
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CheckpointException($"{path}: config is not a JSON object");
        return new HfConfig(path, doc.RootElement.Clone());
    }

    private static readonly JsonDocumentOptions Options = new() { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip };

    public static HfConfig Parse(string json, string path = "config.json")
    {
        using var doc = JsonText.Parse(json, Options, problem => new CheckpointException($"{path}: config is {problem}"));
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CheckpointException($"{path}: config is not a JSON object");
        return new HfConfig(path, doc.RootElement.Clone());
    }

    /// <summary>The whole JSON object (for schema validation).</summary>
    public JsonElement Root => _root;

    /// <summary>architectures[0], or null when absent.</summary>
    public string? Architecture =>
        _root.TryGetProperty("architectures", out var a) && a.ValueKind == JsonValueKind.Array && a.GetArrayLength() > 0 && a[0].ValueKind == JsonValueKind.String
            ? a[0].GetString() : null;

    public string? ModelType => GetStringOrNull("model_type");

    /// <summary>True when the field exists and is not null.</summary>
    public bool Has(string field) => _root.TryGetProperty(field, out var v) && v.ValueKind != JsonValueKind.Null;

    public int GetInt(string field) => GetIntOrNull(field) ?? throw Missing(field, "an integer");
    public int GetInt(string field, int fallback) => GetIntOrNull(field) ?? fallback;

    public int? GetIntOrNull(string field)
    {
        if (!_root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)) return i;
        throw Mistyped(field, v, "an integer");
    }

    public double GetDouble(string field) => GetDoubleOrNull(field) ?? throw Missing(field, "a number");
    public double GetDouble(string field, double fallback) => GetDoubleOrNull(field) ?? fallback;

    public double? GetDoubleOrNull(string field)
    {
        if (!_root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && double.IsFinite(d)) return d;
        throw Mistyped(field, v, "a finite number");
    }

    public bool GetBool(string field, bool fallback)
    {
        if (!_root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        if (v.ValueKind is JsonValueKind.True or JsonValueKind.False) return v.GetBoolean();
        throw Mistyped(field, v, "true or false");
    }

    public string? GetStringOrNull(string field)
    {
        if (!_root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        throw Mistyped(field, v, "a string");
    }

    /// <summary>An integer list; a single integer is read as a one-element list (e.g. eos_token_id).</summary>
    public IReadOnlyList<int> GetIntList(string field)
    {
        if (!_root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return [];
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int one)) return [one];
        if (v.ValueKind != JsonValueKind.Array) throw Mistyped(field, v, "an integer list");
        var list = new List<int>();
        foreach (var e in v.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int x)) throw Mistyped(field, v, "an integer list");
            list.Add(x);
        }
        return list;
    }

    /// <summary>The raw JSON of a field (for fields a family interprets itself), or null.</summary>
    public JsonElement? GetRaw(string field) =>
        _root.TryGetProperty(field, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private CheckpointException Missing(string field, string what) => new($"{Path}: field '{field}' ({what}) is missing");
    private CheckpointException Mistyped(string field, JsonElement v, string what) => new($"{Path}: field '{field}' should be {what}, found {v.GetRawText()}");
}
