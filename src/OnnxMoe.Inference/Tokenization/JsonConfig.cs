using System.Text.Json;

namespace OnnxMoe.Inference.Tokenization;

/// <summary>Reads typed fields of tokenizer.json components; every failure names the file and the component.</summary>
internal readonly struct JsonConfig
{
    public JsonConfig(JsonElement element, string source, string where)
    {
        Element = element;
        Source = source;
        Where = where;
    }

    public JsonElement Element { get; }
    public string Source { get; }
    public string Where { get; }

    public bool IsNull => Element.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined;

    public InvalidDataException Error(string message) => new($"{Source}: {Where}: {message}");

    public string Type => GetString("type") ?? throw Error("missing \"type\"");

    public bool Has(string name) =>
        Element.ValueKind == JsonValueKind.Object && Element.TryGetProperty(name, out var p) && p.ValueKind != JsonValueKind.Null;

    public JsonConfig Child(string name) =>
        Element.ValueKind == JsonValueKind.Object && Element.TryGetProperty(name, out var p)
            ? new JsonConfig(p, Source, $"{Where}.{name}")
            : new JsonConfig(default, Source, $"{Where}.{name}");

    public string? GetString(string name)
    {
        if (!Has(name)) return null;
        var p = Element.GetProperty(name);
        return p.ValueKind == JsonValueKind.String ? p.GetString() : throw Error($"\"{name}\" must be a string");
    }

    public string RequireString(string name) => GetString(name) ?? throw Error($"missing \"{name}\"");

    public bool GetBool(string name, bool fallback)
    {
        if (!Has(name)) return fallback;
        var p = Element.GetProperty(name);
        return p.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Error($"\"{name}\" must be a boolean"),
        };
    }

    public int GetInt(string name, int fallback)
    {
        if (!Has(name)) return fallback;
        var p = Element.GetProperty(name);
        return p.ValueKind == JsonValueKind.Number && p.TryGetInt32(out var v) ? v : throw Error($"\"{name}\" must be an integer");
    }

    public IEnumerable<JsonConfig> Items(string name)
    {
        if (!Has(name)) yield break;
        var p = Element.GetProperty(name);
        if (p.ValueKind != JsonValueKind.Array) throw Error($"\"{name}\" must be an array");
        int i = 0;
        foreach (var item in p.EnumerateArray())
            yield return new JsonConfig(item, Source, $"{Where}.{name}[{i++}]");
    }
}
