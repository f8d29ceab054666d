using OnnxMoe.Ir.Printing;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Passes;
using Attribute = OnnxMoe.Ir.Attribute;

namespace OnnxMoe.Compiler.Diff;

public enum DiffKind
{
    Removed,
    Added,
    Changed,
}

/// <summary>One field of a changed item: <c>input 1: a -> b</c>. Null A or B means absent on that side.</summary>
public sealed record DiffChange(string Field, string? A, string? B);

/// <summary>
/// One item that differs. <see cref="Count"/> is set for summaries of a whole removed or added
/// subtree of hierarchical node names (<see cref="Name"/> is then the prefix, ending in '/').
/// </summary>
public sealed record DiffEntry(DiffKind Kind, string Name, string? A, string? B, IReadOnlyList<DiffChange> Changes, int? Count = null);

/// <summary>Differences of one part of the model (model fields, opsets, metadata, inputs, outputs, nodes, initializers).</summary>
public sealed record DiffSection(string Name, IReadOnlyList<DiffEntry> Entries)
{
    public int CountOf(DiffKind kind) => Entries.Where(e => e.Kind == kind).Sum(e => e.Count ?? 1);
}

/// <summary>
/// Structural diff of two models, for humans and snapshot tests: model fields, opsets, metadata props,
/// graph inputs and outputs (name, type, order), nodes matched by hierarchical name (op, inputs and
/// outputs by value name, attributes), and initializers by name (dtype, shape, SHA-256 of the raw bytes,
/// streamed). Entries are sorted by ordinal name, so the same pair always gives the same text; equal
/// models give an empty diff. Whole removed (added) subtrees of node names are summarised as
/// "N nodes under /prefix/". Not compared: doc strings, value_info, functions, sparse initializers.
/// </summary>
public sealed partial class ModelDiff
{
    /// <summary>Summaries need at least this many nodes under a prefix.</summary>
    public const int MinSummaryCount = 2;

    private ModelDiff(IReadOnlyList<DiffSection> sections) => Sections = sections;

    /// <summary>Non-empty sections in fixed order: model, opsets, metadata, inputs, outputs, nodes, initializers.</summary>
    public IReadOnlyList<DiffSection> Sections { get; }

    public bool IsEmpty => Sections.Count == 0;

    public static ModelDiff Compute(Model a, Model b)
    {
        var sections = new List<DiffSection>
        {
            new("model", CompareMaps(ModelFields(a), ModelFields(b))),
            new("opsets", CompareMaps(Opsets(a), Opsets(b))),
            new("metadata", CompareMaps(Metadata(a), Metadata(b))),
            new("inputs", CompareInterface(a.Graph.Inputs, b.Graph.Inputs)),
            new("outputs", CompareInterface(a.Graph.Outputs, b.Graph.Outputs)),
            new("nodes", CompareNodes(a.Graph, b.Graph)),
            new("initializers", CompareInitializers(a.Graph, b.Graph)),
        };
        return new ModelDiff(sections.Where(s => s.Entries.Count > 0).ToList());
    }

    // ---- model fields, opsets, metadata -------------------------------------------------------

    private static SortedDictionary<string, string> ModelFields(Model m)
    {
        var d = new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["ir_version"] = m.IrVersion.ToString(CultureInfo.InvariantCulture),
        };
        if (m.ProducerName != null) d["producer_name"] = m.ProducerName;
        if (m.ProducerVersion != null) d["producer_version"] = m.ProducerVersion;
        if (m.Domain != null) d["domain"] = m.Domain;
        if (m.ModelVersion is { } v) d["model_version"] = v.ToString(CultureInfo.InvariantCulture);
        return d;
    }

    private static SortedDictionary<string, string> Opsets(Model m) =>
        Keyed(m.OpsetImports.Select(o => (o.Domain == "" ? "ai.onnx" : o.Domain, o.Version.ToString(CultureInfo.InvariantCulture))));

    private static SortedDictionary<string, string> Metadata(Model m) => Keyed(m.MetadataProps.Select(kv => (kv.Key, kv.Value)));

    /// <summary>A sorted map; a repeated key gets a <c>#2</c>, <c>#3</c> suffix so nothing is lost.</summary>
    private static SortedDictionary<string, T> Keyed<T>(IEnumerable<(string Key, T Value)> items)
    {
        var d = new SortedDictionary<string, T>(StringComparer.Ordinal);
        foreach (var (k, v) in items)
        {
            var key = k;
            for (int n = 2; d.ContainsKey(key); n++) key = $"{k}#{n}";
            d[key] = v;
        }
        return d;
    }

    private static List<DiffEntry> CompareMaps(SortedDictionary<string, string> a, SortedDictionary<string, string> b)
    {
        var entries = new List<DiffEntry>();
        foreach (var key in a.Keys.Union(b.Keys).Order(StringComparer.Ordinal))
        {
            bool inA = a.TryGetValue(key, out var va), inB = b.TryGetValue(key, out var vb);
            if (inA && inB && va == vb) continue;
            entries.Add(new DiffEntry(!inA ? DiffKind.Added : !inB ? DiffKind.Removed : DiffKind.Changed, key, va, vb, []));
        }
        return entries;
    }

    // ---- graph inputs and outputs --------------------------------------------------------------

    private static List<DiffEntry> CompareInterface(IEnumerable<Value> a, IEnumerable<Value> b)
    {
        var la = a.ToList();
        var lb = b.ToList();
        var entries = CompareMaps(Keyed(la.Select(v => (v.Name, TypeText(v.Type)))), Keyed(lb.Select(v => (v.Name, TypeText(v.Type)))));
        var common = la.Select(v => v.Name).Intersect(lb.Select(v => v.Name)).ToHashSet(StringComparer.Ordinal);
        var orderA = la.Select(v => v.Name).Where(common.Contains).ToList();
        var orderB = lb.Select(v => v.Name).Where(common.Contains).ToList();
        if (!orderA.SequenceEqual(orderB))
            entries.Add(new DiffEntry(DiffKind.Changed, "(order)", string.Join(", ", orderA), string.Join(", ", orderB), []));
        return entries;
    }

    private static string TypeText(Ir.ValueType? t) => t?.ToString() ?? "(no type)";

    // ---- nodes -------------------------------------------------------------------------------------

    private static SortedDictionary<string, Node> NodesByName(Graph g) =>
        Keyed(g.Nodes.Select(n => (n.Name.Length > 0 ? n.Name : $"<{n.OpType} -> {(n.Outputs.Count > 0 ? n.Outputs[0].Name : "")}>", n)));

    private static string OpText(Node n) => (n.Domain.Length == 0 ? "" : n.Domain + "::") + n.OpType + (n.Overload.Length == 0 ? "" : ":" + n.Overload);

    private static List<DiffEntry> CompareNodes(Graph ga, Graph gb)
    {
        var a = NodesByName(ga);
        var b = NodesByName(gb);
        var removed = a.Keys.Where(k => !b.ContainsKey(k)).ToList();
        var added = b.Keys.Where(k => !a.ContainsKey(k)).ToList();
        var entries = new List<DiffEntry>();
        entries.AddRange(Summarise(removed, a, DiffKind.Removed));
        entries.AddRange(Summarise(added, b, DiffKind.Added));
        foreach (var key in a.Keys.Where(b.ContainsKey))
        {
            var changes = CompareNode(a[key], b[key]);
            if (changes.Count > 0) entries.Add(new DiffEntry(DiffKind.Changed, key, OpText(a[key]), OpText(b[key]), changes));
        }
        return entries;
    }

    /// <summary>Groups names under the shallowest '/' prefix all of whose nodes (on that side) are in the list.</summary>
    private static IEnumerable<DiffEntry> Summarise(List<string> names, SortedDictionary<string, Node> side, DiffKind kind)
    {
        var total = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var name in side.Keys)
            foreach (var p in Prefixes(name)) total[p] = total.GetValueOrDefault(p) + 1;
        var listed = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var name in names)
            foreach (var p in Prefixes(name)) listed[p] = listed.GetValueOrDefault(p) + 1;

        var groups = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var singles = new List<string>();
        foreach (var name in names)
        {
            var prefix = Prefixes(name).FirstOrDefault(p => listed[p] == total[p] && listed[p] >= MinSummaryCount);
            if (prefix != null) groups[prefix] = listed[prefix];
            else singles.Add(name);
        }
        var entries = groups.Select(g => new DiffEntry(kind, g.Key, null, null, [], g.Value))
            .Concat(singles.Select(n => new DiffEntry(kind, n, kind == DiffKind.Removed ? OpText(side[n]) : null, kind == DiffKind.Added ? OpText(side[n]) : null, [])));
        return entries.OrderBy(e => e.Name, StringComparer.Ordinal);
    }

    /// <summary>"/model/layers.3/attn/MatMul" -> "/model/", "/model/layers.3/", "/model/layers.3/attn/" (shallowest first).</summary>
    private static IEnumerable<string> Prefixes(string name)
    {
        for (int i = name.IndexOf('/', 1); i > 0 && i < name.Length - 1; i = name.IndexOf('/', i + 1))
            yield return name[..(i + 1)];
    }

    private static List<DiffChange> CompareNode(Node a, Node b)
    {
        var changes = new List<DiffChange>();
        if (OpText(a) != OpText(b)) changes.Add(new DiffChange("op", OpText(a), OpText(b)));
        CompareList(changes, "input", a.Inputs.Select(v => v?.Name ?? "").ToList(), b.Inputs.Select(v => v?.Name ?? "").ToList());
        CompareList(changes, "output", a.Outputs.Select(v => v.Name).ToList(), b.Outputs.Select(v => v.Name).ToList());
        var attrsA = Keyed(a.Attributes.Select(x => (x.Name, x)));
        var attrsB = Keyed(b.Attributes.Select(x => (x.Name, x)));
        foreach (var key in attrsA.Keys.Union(attrsB.Keys).Order(StringComparer.Ordinal))
        {
            var ta = attrsA.TryGetValue(key, out var x) ? AttributeText(x) : null;
            var tb = attrsB.TryGetValue(key, out var y) ? AttributeText(y) : null;
            if (ta != tb) changes.Add(new DiffChange($"attribute {key}", ta, tb));
        }
        return changes;
    }

    private static void CompareList(List<DiffChange> changes, string what, List<string> a, List<string> b)
    {
        for (int i = 0; i < Math.Max(a.Count, b.Count); i++)
        {
            var x = i < a.Count ? a[i] : null;
            var y = i < b.Count ? b[i] : null;
            if (x != y) changes.Add(new DiffChange($"{what} {i}", x, y));
        }
    }

    private static string AttributeText(Attribute a)
    {
        var inv = CultureInfo.InvariantCulture;
        string body = a.Value switch
        {
            null => "(none)",
            long l => l.ToString(inv),
            float f => f.ToString("R", inv),
            byte[] s when a.Type == AttributeType.String => Quote(Encoding.UTF8.GetString(s)),
            long[] ls => ListText(ls.Select(v => v.ToString(inv))),
            float[] fs => ListText(fs.Select(v => v.ToString("R", inv))),
            byte[][] ss => ListText(ss.Select(s => Quote(Encoding.UTF8.GetString(s)))),
            Tensor t => TensorText(t),
            Tensor[] ts => ListText(ts.Select(TensorText)),
            Graph g => GraphText(g),
            Graph[] gs => ListText(gs.Select(GraphText)),
            SparseTensor st => $"sparse {st.Values.DataType.Name()}[{string.Join(",", st.Dims)}] values {TensorText(st.Values)} indices {TensorText(st.Indices)}",
            Ir.ValueType vt => vt.ToString()!,
            System.Collections.IEnumerable e => ListText(e.Cast<object?>().Select(o => o?.ToString() ?? "")),
            var other => other.ToString() ?? "",
        };
        return a.RefAttrName != null ? $"@{a.RefAttrName}" : body;
    }

    private static string ListText(IEnumerable<string> items)
    {
        var list = items.ToList();
        var joined = "[" + string.Join(", ", list) + "]";
        // Long lists read better as a count and a fingerprint.
        return list.Count <= 16 ? joined : $"[{list.Count} items sha256:{Sha256Hex(joined)}]";
    }

    // Relaxed escaping keeps names like <Relu -> x> and non-ASCII text readable.
    private static readonly JsonSerializerOptions QuoteOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static string Quote(string s) => JsonSerializer.Serialize(s, QuoteOptions);

    private static string TensorText(Tensor t) => $"{t.DataType.Name()}[{string.Join(",", t.Shape)}] sha256:{TensorDigest.Sha256Hex(t)}";

    /// <summary>A subgraph as node count and a hash of its canonical text (names, ops, wiring, attributes, initializers).</summary>
    private static string GraphText(Graph g)
    {
        var sb = new StringBuilder();
        foreach (var v in g.Inputs) sb.Append("in ").Append(v.Name).Append(' ').Append(TypeText(v.Type)).Append('\n');
        foreach (var v in g.Initializers) sb.Append("init ").Append(v.Name).Append(' ').Append(TensorText(v.ConstValue!)).Append('\n');
        foreach (var n in g.Nodes)
        {
            sb.Append(n.Name).Append(' ').Append(OpText(n)).Append(" (").Append(string.Join(",", n.Inputs.Select(v => v?.Name ?? "")))
              .Append(") -> (").Append(string.Join(",", n.Outputs.Select(v => v.Name))).Append(')');
            foreach (var a in n.Attributes) sb.Append(' ').Append(a.Name).Append('=').Append(AttributeText(a));
            sb.Append('\n');
        }
        foreach (var v in g.Outputs) sb.Append("out ").Append(v.Name).Append('\n');
        return $"graph({g.NodeCount} nodes sha256:{Sha256Hex(sb.ToString())})";
    }

    private static string Sha256Hex(string s) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(s)));

    // ---- initializers ----------------------------------------------------------------------------

    private static List<DiffEntry> CompareInitializers(Graph ga, Graph gb)
    {
        var a = Keyed(ga.Initializers.Select(v => (v.Name, v.ConstValue!)));
        var b = Keyed(gb.Initializers.Select(v => (v.Name, v.ConstValue!)));
        var entries = new List<DiffEntry>();
        foreach (var key in a.Keys.Union(b.Keys).Order(StringComparer.Ordinal))
        {
            bool inA = a.TryGetValue(key, out var ta), inB = b.TryGetValue(key, out var tb);
            if (!inB) entries.Add(new DiffEntry(DiffKind.Removed, key, Layout(ta!), null, []));
            else if (!inA) entries.Add(new DiffEntry(DiffKind.Added, key, null, Layout(tb!), []));
            else if (Layout(ta!) != Layout(tb!)) entries.Add(new DiffEntry(DiffKind.Changed, key, Layout(ta!), Layout(tb!), []));
            else if (!SameBytesWithoutReading(ta!, tb!))
            {
                var ha = TensorDigest.Sha256Hex(ta!);
                var hb = TensorDigest.Sha256Hex(tb!);
                if (ha != hb) entries.Add(new DiffEntry(DiffKind.Changed, key, Layout(ta!), Layout(tb!), [new DiffChange("content", "sha256:" + ha, "sha256:" + hb)]));
            }
        }
        return entries;
    }

    private static string Layout(Tensor t) => $"{t.DataType.Name()}[{string.Join(",", t.Shape)}]";

    private static bool SameBytesWithoutReading(Tensor a, Tensor b) =>
        ReferenceEquals(a, b) ||
        a is FileTensor fa && b is FileTensor fb && fa.File.Path == fb.File.Path && fa.Offset == fb.Offset && fa.Length == fb.Length;

    // ---- output --------------------------------------------------------------------------------------

    /// <summary>Readable text; empty for equal models. Long values are shortened and hashes abbreviated to 16 hex digits.</summary>
    public string ToText()
    {
        var sb = new StringBuilder();
        foreach (var s in Sections)
        {
            sb.Append(s.Name).Append(": ").Append(Summary(s)).Append('\n');
            foreach (var e in s.Entries)
            {
                char mark = e.Kind switch { DiffKind.Removed => '-', DiffKind.Added => '+', _ => '~' };
                sb.Append("  ").Append(mark).Append(' ');
                if (e.Count is { } count)
                {
                    sb.Append(count.ToString(CultureInfo.InvariantCulture)).Append(" nodes under ").Append(e.Name).Append('\n');
                    continue;
                }
                sb.Append(e.Name);
                if (s.Name == "nodes" && e.Kind != DiffKind.Changed) sb.Append(" (").Append(e.A ?? e.B).Append(')');
                else if (s.Name == "nodes") { }
                else if (e.Kind == DiffKind.Changed && e.Changes.Count == 0) sb.Append(": ").Append(Short(e.A)).Append(" -> ").Append(Short(e.B));
                else sb.Append(": ").Append(Short(e.A ?? e.B));
                sb.Append('\n');
                foreach (var c in e.Changes)
                    sb.Append("      ").Append(c.Field).Append(": ").Append(Short(c.A)).Append(" -> ").Append(Short(c.B)).Append('\n');
            }
        }
        return sb.ToString();
    }

    private static string Summary(DiffSection s)
    {
        var parts = new List<string>();
        foreach (var (kind, word) in new[] { (DiffKind.Removed, "removed"), (DiffKind.Added, "added"), (DiffKind.Changed, "changed") })
        {
            int n = s.CountOf(kind);
            if (n > 0) parts.Add($"{n.ToString(CultureInfo.InvariantCulture)} {word}");
        }
        return string.Join(", ", parts);
    }

    [GeneratedRegex("sha256:([0-9a-f]{16})[0-9a-f]{48}")]
    private static partial Regex FullHash();

    private static string Short(string? s)
    {
        if (s == null) return "(absent)";
        if (s.Length == 0) return "\"\"";
        s = FullHash().Replace(s, "sha256:$1");
        s = s.Replace("\n", "\\n");
        const int Max = 100;
        return s.Length <= Max ? s : $"{s[..60]}... ({s.Length.ToString(CultureInfo.InvariantCulture)} chars sha256:{Sha256Hex(s)[..16]})";
    }

    /// <summary>JSON with full values and hashes: <c>{"equal":bool,"sections":[{"name","removed","added","changed","entries":[...]}]}</c>.</summary>
    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteBoolean("equal", IsEmpty);
            w.WriteStartArray("sections");
            foreach (var s in Sections)
            {
                w.WriteStartObject();
                w.WriteString("name", s.Name);
                w.WriteNumber("removed", s.CountOf(DiffKind.Removed));
                w.WriteNumber("added", s.CountOf(DiffKind.Added));
                w.WriteNumber("changed", s.CountOf(DiffKind.Changed));
                w.WriteStartArray("entries");
                foreach (var e in s.Entries)
                {
                    w.WriteStartObject();
                    w.WriteString("kind", e.Kind.ToString().ToLowerInvariant());
                    w.WriteString(e.Count != null ? "prefix" : "name", e.Name);
                    if (e.Count is { } c) w.WriteNumber("count", c);
                    if (e.A != null) w.WriteString("a", e.A);
                    if (e.B != null) w.WriteString("b", e.B);
                    if (e.Changes.Count > 0)
                    {
                        w.WriteStartArray("changes");
                        foreach (var ch in e.Changes)
                        {
                            w.WriteStartObject();
                            w.WriteString("field", ch.Field);
                            if (ch.A != null) w.WriteString("a", ch.A); else w.WriteNull("a");
                            if (ch.B != null) w.WriteString("b", ch.B); else w.WriteNull("b");
                            w.WriteEndObject();
                        }
                        w.WriteEndArray();
                    }
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray()).ReplaceLineEndings("\n") + "\n";
    }

    public override string ToString() => ToText();
}
