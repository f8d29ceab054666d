using System.Globalization;
using System.Text.Json;
using OnnxMoe.Checkpoints;

namespace OnnxMoe.Lowering.Families;

/// <summary>The JSON shape a config.json field must have.</summary>
public enum ConfigFieldKind { Int, Number, Bool, String, IntList, IntOrList, Unsupported }

/// <summary>
/// One config.json field a family reads, with its type and the range its value must lie in. Bounds may
/// name another field (<see cref="AtMostField"/>, <see cref="BelowField"/>), checked once both are valid.
/// null counts as absent, as in <see cref="HfConfig"/>.
/// </summary>
public sealed record ConfigField(string Name, ConfigFieldKind Kind)
{
    public bool Required { get; init; }
    /// <summary>Smallest allowed value (for lists: of each element).</summary>
    public double? Min { get; init; }
    /// <summary>The value must be greater than <see cref="Min"/>, not equal to it.</summary>
    public bool MinExclusive { get; init; }
    public double? Max { get; init; }
    /// <summary>The value must be at most this other integer field's value.</summary>
    public string? AtMostField { get; init; }
    /// <summary>The value (each element of a list) must be below this other integer field's value.</summary>
    public string? BelowField { get; init; }
    /// <summary>Strings: the accepted values.</summary>
    public IReadOnlyList<string>? OneOf { get; init; }
    /// <summary>Unsupported: values that are accepted anyway (e.g. rope_scaling of type default).</summary>
    public Func<JsonElement, bool>? Tolerated { get; init; }
    /// <summary>Unsupported: why, as shown to the user.</summary>
    public string? Reason { get; init; }

    public static ConfigField Int(string name, long min, long max, bool required = false) =>
        new(name, ConfigFieldKind.Int) { Min = min, Max = max, Required = required };
    public static ConfigField PositiveNumber(string name, double max = double.MaxValue) =>
        new(name, ConfigFieldKind.Number) { Min = 0, MinExclusive = true, Max = max };
    public static ConfigField Bool(string name) => new(name, ConfigFieldKind.Bool);
    public static ConfigField String(string name, params string[] oneOf) => new(name, ConfigFieldKind.String) { OneOf = oneOf.Length == 0 ? null : oneOf };
    public static ConfigField IntList(string name, long min, long max) => new(name, ConfigFieldKind.IntList) { Min = min, Max = max };
    /// <summary>An integer or a list of integers (eos_token_id).</summary>
    public static ConfigField IntOrList(string name, long min, long max) => new(name, ConfigFieldKind.IntOrList) { Min = min, Max = max };
    public static ConfigField Unsupported(string name, string reason, Func<JsonElement, bool>? tolerated = null) =>
        new(name, ConfigFieldKind.Unsupported) { Reason = reason, Tolerated = tolerated };
}

/// <summary>A check across fields: returns the problem (without the file name) or null.</summary>
public sealed record ConfigRule(string Description, Func<HfConfig, string?> Check);

/// <summary>
/// The declared fields and cross-field rules of one family's config.json. <see cref="Validate"/> checks
/// presence, type and range of every field, then the field-relative bounds, then the rules, and throws one
/// <see cref="CheckpointException"/> for the first problem: one line naming the file, the field and the value.
/// </summary>
public sealed class ConfigSchema
{
    private readonly List<ConfigField> _fields;
    private readonly List<ConfigRule> _rules;

    public ConfigSchema(IEnumerable<ConfigField> fields, IEnumerable<ConfigRule>? rules = null)
    {
        _fields = fields.ToList();
        _rules = rules?.ToList() ?? [];
        var twice = _fields.GroupBy(f => f.Name).FirstOrDefault(g => g.Count() > 1);
        if (twice != null) throw new ArgumentException($"config field '{twice.Key}' is declared twice");
    }

    public IReadOnlyList<ConfigField> Fields => _fields;
    public IReadOnlyList<ConfigRule> Rules => _rules;

    /// <summary>This schema plus more fields (a field of the same name replaces the inherited one) and rules.</summary>
    public ConfigSchema With(IEnumerable<ConfigField> fields, IEnumerable<ConfigRule>? rules = null)
    {
        var added = fields.ToList();
        var names = added.Select(f => f.Name).ToHashSet(StringComparer.Ordinal);
        return new ConfigSchema(_fields.Where(f => !names.Contains(f.Name)).Concat(added), _rules.Concat(rules ?? []));
    }

    public void Validate(HfConfig c)
    {
        var root = c.Root;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in root.EnumerateObject())
            if (!seen.Add(p.Name)) throw Problem(c, $"field '{p.Name}' appears more than once");

        foreach (var f in _fields) CheckOwn(c, f);
        foreach (var f in _fields)
        {
            if (f.AtMostField != null) CheckRelative(c, f, f.AtMostField, below: false);
            if (f.BelowField != null) CheckRelative(c, f, f.BelowField, below: true);
        }
        foreach (var r in _rules)
            if (r.Check(c) is { } message) throw Problem(c, message);
    }

    private static void CheckOwn(HfConfig c, ConfigField f)
    {
        if (c.GetRaw(f.Name) is not { } v)
        {
            if (f.Required) throw Problem(c, $"field '{f.Name}' ({Describe(f.Kind)}) is missing");
            return;
        }
        switch (f.Kind)
        {
            case ConfigFieldKind.Int:
                CheckNumber(c, f, v, integer: true);
                break;
            case ConfigFieldKind.Number:
                CheckNumber(c, f, v, integer: false);
                break;
            case ConfigFieldKind.Bool:
                if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw Mistyped(c, f, v);
                break;
            case ConfigFieldKind.String:
                if (v.ValueKind != JsonValueKind.String) throw Mistyped(c, f, v);
                if (f.OneOf != null && !f.OneOf.Contains(v.GetString()))
                    throw Problem(c, $"field '{f.Name}' is {Show(v)}; supported: {string.Join(", ", f.OneOf)}");
                break;
            case ConfigFieldKind.IntList or ConfigFieldKind.IntOrList:
                if (f.Kind == ConfigFieldKind.IntOrList && v.ValueKind == JsonValueKind.Number) { CheckNumber(c, f, v, integer: true); break; }
                if (v.ValueKind != JsonValueKind.Array) throw Mistyped(c, f, v);
                var items = new HashSet<long>();
                foreach (var e in v.EnumerateArray())
                {
                    if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int x)) throw Problem(c, $"field '{f.Name}' holds {Show(e)}; it should be {Describe(f.Kind)}");
                    CheckRange(c, f, x, e);
                    if (!items.Add(x)) throw Problem(c, $"field '{f.Name}' lists {x} twice");
                }
                break;
            case ConfigFieldKind.Unsupported:
                if (f.Tolerated?.Invoke(v) != true) throw Problem(c, $"field '{f.Name}' is {Show(v)}: not supported ({f.Reason})");
                break;
        }
    }

    private static void CheckNumber(HfConfig c, ConfigField f, JsonElement v, bool integer)
    {
        if (v.ValueKind != JsonValueKind.Number) throw Mistyped(c, f, v);
        if (integer)
        {
            if (!v.TryGetInt64(out long i))
                throw Problem(c, $"field '{f.Name}' is {Show(v)}; it should be an integer" + (f.Max is { } m ? $" of at most {Format(m)}" : ""));
            CheckRange(c, f, i, v);
        }
        else
        {
            if (!v.TryGetDouble(out double d) || !double.IsFinite(d)) throw Problem(c, $"field '{f.Name}' is {Show(v)}; it should be a finite number");
            CheckRange(c, f, d, v);
        }
    }

    private static void CheckRange(HfConfig c, ConfigField f, double x, JsonElement v)
    {
        if (f.Min is { } min && (f.MinExclusive ? x <= min : x < min))
            throw Problem(c, $"field '{f.Name}' is {Show(v)}; it must be {(f.MinExclusive ? "greater than" : "at least")} {Format(min)}");
        if (f.Max is { } max && x > max) throw Problem(c, $"field '{f.Name}' is {Show(v)}; it must be at most {Format(max)}");
    }

    private static void CheckRelative(HfConfig c, ConfigField f, string other, bool below)
    {
        if (c.GetRaw(f.Name) is not { } v || c.GetRaw(other) is not { } o || !o.TryGetInt64(out long bound)) return;
        var values = v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().ToList() : [v];
        foreach (var e in values)
        {
            double x = e.GetDouble();
            if (below ? x >= bound : x > bound)
                throw Problem(c, $"field '{f.Name}' {(values.Count > 1 || v.ValueKind == JsonValueKind.Array ? "holds" : "is")} {Show(e)}; it must be {(below ? "below" : "at most")} {other} ({bound})");
        }
    }

    private static string Describe(ConfigFieldKind k) => k switch
    {
        ConfigFieldKind.Int => "an integer",
        ConfigFieldKind.Number => "a number",
        ConfigFieldKind.Bool => "true or false",
        ConfigFieldKind.String => "a string",
        ConfigFieldKind.IntList => "a list of integers",
        ConfigFieldKind.IntOrList => "an integer or a list of integers",
        _ => "a value",
    };

    private static CheckpointException Mistyped(HfConfig c, ConfigField f, JsonElement v) =>
        Problem(c, $"field '{f.Name}' is {Show(v)}; it should be {Describe(f.Kind)}");

    public static CheckpointException Problem(HfConfig c, string message) => new($"{c.Path}: {message}");

    /// <summary>A JSON value on one short line.</summary>
    public static string Show(JsonElement v)
    {
        string text = v.GetRawText().ReplaceLineEndings(" ");
        return text.Length <= 80 ? text : text[..77] + "...";
    }

    private static string Format(double x) => x.ToString("R", CultureInfo.InvariantCulture);
}
