using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Ir.Printing;

/// <summary>A graph input or output: name and printed type ("?" when unknown).</summary>
public sealed record ValueSummary(string Name, string Type);

/// <summary>How often an operator (domain-qualified, "" domain printed bare) occurs, subgraphs and functions included.</summary>
public sealed record OpCount(string Op, int Count);

/// <summary>Initializers of one element type: tensor count, elements, bytes (raw layout).</summary>
public sealed record ParameterGroup(string DataType, int Tensors, long Elements, long Bytes);

/// <summary>
/// What <c>onnxmoe inspect</c> shows about a model: versions, opsets, inputs/outputs with types,
/// operator histogram, parameters by dtype (graph initializers at every nesting level; constants in
/// node attributes are not parameters) and the external data files tensors live in. Plain data;
/// computing it reads no tensor bytes.
/// </summary>
public sealed record ModelSummary(
    long IrVersion,
    string? ProducerName,
    string? ProducerVersion,
    IReadOnlyList<OpsetImport> Opsets,
    IReadOnlyList<ValueSummary> Inputs,
    IReadOnlyList<ValueSummary> Outputs,
    int NodeCount,
    int FunctionCount,
    IReadOnlyList<OpCount> Ops,
    IReadOnlyList<ParameterGroup> Parameters,
    long ParameterCount,
    long ParameterBytes,
    IReadOnlyList<string> ExternalDataFiles,
    IReadOnlyList<KeyValuePair<string, string>> Metadata)
{
    public static ModelSummary Of(Model model)
    {
        var graph = model.Graph;
        var inits = new HashSet<Value>(graph.Initializers, ReferenceEqualityComparer.Instance);
        // Inputs that have an initializer (IR < 4 style defaults) are parameters, not user inputs.
        var inputs = graph.Inputs.Where(v => !inits.Contains(v)).Select(Describe).ToArray();
        var outputs = graph.Outputs.Select(Describe).ToArray();

        var ops = new Dictionary<string, int>(StringComparer.Ordinal);
        int nodes = 0;
        var allNodes = graph.AllNodes().Concat(model.Functions.SelectMany(f => f.Body.AllNodes()));
        foreach (var n in allNodes)
        {
            nodes++;
            string op = n.Domain.Length == 0 ? n.OpType : $"{n.Domain}::{n.OpType}";
            ops[op] = ops.GetValueOrDefault(op) + 1;
        }

        var groups = new Dictionary<DataType, (int Tensors, long Elements, long Bytes)>();
        var files = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var g in AllGraphs(graph))
            foreach (var v in g.Initializers)
            {
                var t = v.ConstValue!;
                var cur = groups.GetValueOrDefault(t.DataType);
                groups[t.DataType] = (cur.Tensors + 1, cur.Elements + t.ElementCount, cur.Bytes + t.ByteLength);
                if (t is FileTensor ft) files.Add(ft.File.Path);
            }
        var parameters = groups.OrderBy(kv => (int)kv.Key)
            .Select(kv => new ParameterGroup(kv.Key.Name(), kv.Value.Tensors, kv.Value.Elements, kv.Value.Bytes)).ToArray();

        return new ModelSummary(
            model.IrVersion, model.ProducerName, model.ProducerVersion,
            model.OpsetImports.ToArray(), inputs, outputs, nodes, model.Functions.Count,
            ops.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => new OpCount(kv.Key, kv.Value)).ToArray(),
            parameters, parameters.Sum(p => p.Elements), parameters.Sum(p => p.Bytes),
            files.ToArray(), model.MetadataProps.ToArray());
    }

    private static ValueSummary Describe(Value v) => new(v.Name, v.Type?.ToString() ?? "?");

    private static IEnumerable<Graph> AllGraphs(Graph g)
    {
        yield return g;
        foreach (var n in g.AllNodes())
            foreach (var a in n.Attributes)
                foreach (var sub in a.Subgraphs)
                    yield return sub;
    }

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    /// <summary>Indented JSON, camelCase keys, stable order (as listed in the record).</summary>
    public string ToJson()
    {
        var doc = new
        {
            irVersion = IrVersion,
            producerName = ProducerName,
            producerVersion = ProducerVersion,
            opsets = Opsets.Select(o => new { domain = o.Domain, version = o.Version }),
            inputs = Inputs,
            outputs = Outputs,
            nodeCount = NodeCount,
            functionCount = FunctionCount,
            ops = Ops,
            parameters = Parameters,
            parameterCount = ParameterCount,
            parameterBytes = ParameterBytes,
            externalDataFiles = ExternalDataFiles,
            metadata = Metadata.Select(kv => new { key = kv.Key, value = kv.Value }),
        };
        return JsonSerializer.Serialize(doc, JsonOptions);
    }

    /// <summary>Plain-text rendering for terminals.</summary>
    public string ToText()
    {
        var sb = new StringBuilder();
        sb.Append($"IR version {IrVersion}");
        if (ProducerName != null) sb.Append($", produced by {ProducerName} {ProducerVersion}".TrimEnd());
        sb.Append('\n');
        sb.Append("opsets: ").Append(string.Join(", ", Opsets.Select(o => $"{(o.Domain.Length == 0 ? "ai.onnx" : o.Domain)} {o.Version}"))).Append('\n');
        sb.Append("inputs:\n");
        foreach (var v in Inputs) sb.Append($"  {v.Name}: {v.Type}\n");
        sb.Append("outputs:\n");
        foreach (var v in Outputs) sb.Append($"  {v.Name}: {v.Type}\n");
        sb.Append($"nodes: {NodeCount}").Append(FunctionCount > 0 ? $" ({FunctionCount} functions)" : "").Append('\n');
        foreach (var o in Ops) sb.Append($"  {o.Count,6}  {o.Op}\n");
        sb.Append($"parameters: {ParameterCount} in {ParameterBytes} bytes\n");
        foreach (var p in Parameters) sb.Append($"  {p.DataType,-8} {p.Tensors,6} tensors {p.Elements,14} elements {p.Bytes,14} bytes\n");
        if (ExternalDataFiles.Count > 0)
        {
            sb.Append("external data:\n");
            foreach (var f in ExternalDataFiles) sb.Append($"  {f}\n");
        }
        foreach (var kv in Metadata) sb.Append($"metadata {kv.Key} = {kv.Value}\n");
        return sb.ToString();
    }
}
