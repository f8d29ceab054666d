namespace OnnxMoe.Ir;

/// <summary>A model: the main graph, opset imports, functions and metadata. Owns its graph.</summary>
public sealed class Model
{
    public Model(Graph graph) => Graph = graph;

    public Graph Graph { get; set; }
    public long IrVersion { get; set; } = 10;
    /// <summary>Opset imports in file order; domain "" is ai.onnx.</summary>
    public List<OpsetImport> OpsetImports { get; } = new();
    public string? ProducerName { get; set; }
    public string? ProducerVersion { get; set; }
    public string? Domain { get; set; }
    public long? ModelVersion { get; set; }
    public string? DocString { get; set; }
    /// <summary>metadata_props in file order (keys may repeat in malformed files; kept as read).</summary>
    public List<KeyValuePair<string, string>> MetadataProps { get; } = new();
    public List<Function> Functions { get; } = new();
    /// <summary>Opaque items a serializer keeps for exact round trips (e.g. training_info).</summary>
    public List<object> Extras { get; } = new();

    /// <summary>Opaque data a serializer attaches to reproduce the original encoding exactly; never interpreted by passes.</summary>
    public object? SerializationHint { get; set; }

    public long? GetOpset(string domain) => OpsetImports.FirstOrDefault(o => o.Domain == domain)?.Version;

    public void SetOpset(string domain, long version)
    {
        int i = OpsetImports.FindIndex(o => o.Domain == domain);
        if (i >= 0) OpsetImports[i] = new OpsetImport(domain, version); else OpsetImports.Add(new OpsetImport(domain, version));
    }

    public string? GetMetadata(string key) => MetadataProps.LastOrDefault(kv => kv.Key == key).Value;

    public void SetMetadata(string key, string value)
    {
        int i = MetadataProps.FindIndex(kv => kv.Key == key);
        if (i >= 0) MetadataProps[i] = new(key, value); else MetadataProps.Add(new(key, value));
    }
}

public sealed record OpsetImport(string Domain, long Version);

/// <summary>A model-local function (FunctionProto); its body is a graph whose inputs/outputs are the formal parameters.</summary>
public sealed class Function
{
    public Function(string domain, string name, Graph body)
    {
        Domain = domain;
        Name = name;
        Body = body;
    }

    public string Domain { get; set; }
    public string Name { get; set; }
    public string Overload { get; set; } = "";
    public Graph Body { get; set; }
    /// <summary>Attribute names the function declares (FunctionProto.attribute).</summary>
    public List<string> AttributeNames { get; } = new();
    /// <summary>Attributes with default values (FunctionProto.attribute_proto).</summary>
    public List<Attribute> AttributeDefaults { get; } = new();
    public List<OpsetImport> OpsetImports { get; } = new();
    public string? DocString { get; set; }
    public Dictionary<string, string>? MetadataProps { get; set; }

    /// <summary>Opaque data a serializer attaches to reproduce the original encoding exactly; never interpreted by passes.</summary>
    public object? SerializationHint { get; set; }
}

/// <summary>Hands out unique names within one graph family; seed it with the names already in use.</summary>
public sealed class NameAuthority
{
    private readonly HashSet<string> _used = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _next = new(StringComparer.Ordinal);

    public static NameAuthority ForGraph(Graph graph)
    {
        var a = new NameAuthority();
        foreach (var v in graph.Inputs) a.Reserve(v.Name);
        foreach (var v in graph.Initializers) a.Reserve(v.Name);
        foreach (var n in graph.AllNodes())
        {
            a.Reserve(n.Name);
            foreach (var o in n.Outputs) a.Reserve(o.Name);
        }
        return a;
    }

    public void Reserve(string name)
    {
        if (!string.IsNullOrEmpty(name)) _used.Add(name);
    }

    /// <summary>Whether <paramref name="name"/> is taken (without reserving it).</summary>
    public bool IsUsed(string name) => _used.Contains(name);

    /// <summary>Returns <paramref name="baseName"/> if free, else baseName_1, baseName_2 ...; reserves the result.</summary>
    public string Unique(string baseName)
    {
        if (_used.Add(baseName)) return baseName;
        _next.TryGetValue(baseName, out int k);
        string candidate;
        do candidate = $"{baseName}_{++k}"; while (!_used.Add(candidate));
        _next[baseName] = k;
        return candidate;
    }
}
