using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Ir.Printing;

/// <summary>Printer settings.</summary>
public sealed record IrPrinterOptions
{
    /// <summary>Show a content hash for every tensor (reads all tensor bytes, streamed). Off: dtype and shape only.</summary>
    public bool ContentHashes { get; init; } = true;
    /// <summary>Tensors with at most this many elements print their values (numeric types) instead of a hash.</summary>
    public int MaxInlineElements { get; init; } = 8;
    /// <summary>Show where initializer bytes live (external file and offset). Off by default so embedded and external copies print the same.</summary>
    public bool ShowStorage { get; init; }
}

/// <summary>
/// Stable, readable text of a model or graph, MLIR-like: one line per node
/// (<c>%out: f32[2,3] = domain::Op(%a, %b) {attr = 1}  @"/hierarchical/name"</c>), initializers
/// with dtype, shape and a short content hash, subgraphs indented under their node. The same IR
/// always prints the same text; only IR content appears (no file encoding details), so the text
/// serves for snapshots and diffs.
/// </summary>
public sealed class IrPrinter
{
    private readonly IrPrinterOptions _options;
    private readonly StringBuilder _sb = new();

    private IrPrinter(IrPrinterOptions options) => _options = options;

    public static string Print(Model model, IrPrinterOptions? options = null)
    {
        var p = new IrPrinter(options ?? new IrPrinterOptions());
        p.PrintModel(model);
        return p._sb.ToString();
    }

    public static string Print(Graph graph, IrPrinterOptions? options = null)
    {
        var p = new IrPrinter(options ?? new IrPrinterOptions());
        p.PrintGraph(graph, 0, "graph");
        return p._sb.ToString();
    }

    private void Line(int indent, string text) => _sb.Append(' ', indent * 2).Append(text).Append('\n');

    private void PrintModel(Model m)
    {
        var head = new StringBuilder($"model ir_version={m.IrVersion}");
        if (m.ProducerName != null) head.Append(" producer=").Append(Quote(m.ProducerName));
        if (m.ProducerVersion != null) head.Append(" producer_version=").Append(Quote(m.ProducerVersion));
        if (m.Domain != null) head.Append(" domain=").Append(Quote(m.Domain));
        if (m.ModelVersion is long v) head.Append(" model_version=").Append(v);
        Line(0, head.ToString());
        foreach (var o in m.OpsetImports) Line(1, $"opset {Quote(o.Domain)} {o.Version}");
        foreach (var kv in m.MetadataProps) Line(1, $"metadata {Quote(kv.Key)} = {Quote(kv.Value)}");
        PrintGraph(m.Graph, 0, "graph");
        foreach (var f in m.Functions) PrintFunction(f);
    }

    private void PrintFunction(Function f)
    {
        string op = f.Domain.Length == 0 ? Quote(f.Name) : $"{Quote(f.Domain)}::{Quote(f.Name)}";
        if (f.Overload.Length > 0) op += ":" + Quote(f.Overload);
        string attrs = f.AttributeNames.Count == 0 ? "" : $" attributes [{string.Join(", ", f.AttributeNames)}]";
        Line(0, $"func {op}({string.Join(", ", f.Body.Inputs.Select(Ref))}) -> ({string.Join(", ", f.Body.Outputs.Select(Ref))}){attrs} {{");
        foreach (var o in f.OpsetImports) Line(1, $"opset {Quote(o.Domain)} {o.Version}");
        foreach (var a in f.AttributeDefaults) Line(1, $"default {FormatAttribute(a)}");
        foreach (var v in f.Body.ValueInfos) Line(1, $"info {Typed(v)}");
        foreach (var n in f.Body.Nodes) PrintNode(n, 1);
        Line(0, "}");
    }

    private void PrintGraph(Graph g, int indent, string keyword)
    {
        Line(indent, $"{keyword} {Quote(g.Name)} {{");
        var inits = new HashSet<Value>(g.Initializers, ReferenceEqualityComparer.Instance);
        foreach (var v in g.Inputs) Line(indent + 1, $"input {Typed(v)}{(inits.Contains(v) ? " (has initializer)" : "")}");
        foreach (var v in g.Initializers) Line(indent + 1, $"init {Ref(v)}: {FormatTensor(v.ConstValue!)}{Storage(v.ConstValue!)}");
        foreach (var s in g.SparseInitializers)
            Line(indent + 1, $"sparse_init %{Name(s.Name)}: {FormatSparse(s.Tensor)}");
        foreach (var v in g.ValueInfos) Line(indent + 1, $"info {Typed(v)}");
        foreach (var n in g.Nodes) PrintNode(n, indent + 1);
        Line(indent + 1, $"return {string.Join(", ", g.Outputs.Select(Typed))}");
        Line(indent, "}");
    }

    private void PrintNode(Node n, int indent)
    {
        var sb = new StringBuilder();
        if (n.Outputs.Count > 0) sb.Append(string.Join(", ", n.Outputs.Select(Typed))).Append(" = ");
        sb.Append(n.Domain.Length == 0 ? n.OpType : $"{n.Domain}::{n.OpType}");
        if (n.Overload.Length > 0) sb.Append(':').Append(Quote(n.Overload));
        sb.Append('(').Append(string.Join(", ", n.Inputs.Select(v => v == null ? "_" : Ref(v)))).Append(')');
        var inline = n.Attributes.Where(a => !a.Subgraphs.Any()).ToList();
        if (inline.Count > 0) sb.Append(" {").Append(string.Join(", ", inline.Select(a => FormatAttribute(a)))).Append('}');
        if (n.Name.Length > 0) sb.Append("  @").Append(Quote(n.Name));
        Line(indent, sb.ToString());
        foreach (var a in n.Attributes)
        {
            if (a.Value is Graph g) PrintGraph(g, indent + 1, $"{a.Name} = graph");
            else if (a.Value is Graph[] gs)
                for (int i = 0; i < gs.Length; i++) PrintGraph(gs[i], indent + 1, $"{a.Name}[{i}] = graph");
        }
    }

    private string FormatAttribute(Attribute a)
    {
        if (a.RefAttrName != null) return $"{a.Name} = @{a.RefAttrName}: {a.Type}";
        string value = a.Value switch
        {
            null => $"<{a.Type}, no value>",
            long i => i.ToString(CultureInfo.InvariantCulture),
            float f => FormatFloat(f),
            byte[] s => QuoteBytes(s),
            Tensor t => FormatTensor(t),
            SparseTensor s => FormatSparse(s),
            ValueType vt => FormatType(vt),
            long[] ints => $"[{string.Join(", ", ints.Select(i => i.ToString(CultureInfo.InvariantCulture)))}]",
            float[] fs => $"[{string.Join(", ", fs.Select(FormatFloat))}]",
            byte[][] ss => $"[{string.Join(", ", ss.Select(QuoteBytes))}]",
            Tensor[] ts => $"[{string.Join(", ", ts.Select(FormatTensor))}]",
            SparseTensor[] sts => $"[{string.Join(", ", sts.Select(FormatSparse))}]",
            ValueType[] vts => $"[{string.Join(", ", vts.Select(FormatType))}]",
            _ => a.Value.ToString() ?? "",
        };
        // Attribute types outside what the value implies are rare (e.g. an empty INTS vs FLOATS list): keep them visible.
        bool typeImplied = (a.Type, a.Value) switch
        {
            (AttributeType.Int, long) or (AttributeType.Float, float) or (AttributeType.String, byte[]) or (AttributeType.Tensor, Tensor)
                or (AttributeType.SparseTensor, SparseTensor) or (AttributeType.TypeProto, ValueType) or (AttributeType.Ints, long[])
                or (AttributeType.Floats, float[]) or (AttributeType.Strings, byte[][]) or (AttributeType.Tensors, Tensor[])
                or (AttributeType.SparseTensors, SparseTensor[]) or (AttributeType.TypeProtos, ValueType[]) => true,
            _ => false,
        };
        return typeImplied ? $"{a.Name} = {value}" : $"{a.Name}: {a.Type} = {value}";
    }

    private string FormatSparse(SparseTensor s) =>
        $"sparse<[{string.Join(",", s.Dims)}]>(values = {FormatTensor(s.Values)}, indices = {FormatTensor(s.Indices)})";

    private string FormatTensor(Tensor t)
    {
        string head = $"tensor<{t.DataType.Name()}[{string.Join(",", t.Shape)}]>";
        if (t is StringTensor st && st.Values.Count <= _options.MaxInlineElements)
            return $"{head} [{string.Join(", ", st.Values.Select(QuoteBytes))}]";
        if (t.ElementCount <= _options.MaxInlineElements && InlineValues(t) is { } values)
            return $"{head} [{values}]";
        return _options.ContentHashes ? $"{head} #{TensorDigest.Short(t)}" : head;
    }

    private string Storage(Tensor t) =>
        _options.ShowStorage && t is FileTensor ft ? $"  (external {Quote(Path.GetFileName(ft.File.Path))} offset {ft.Offset})" : "";

    /// <summary>Elements as text for common numeric types; null where no exact short form exists.</summary>
    private static string? InlineValues(Tensor t)
    {
        if (t.DataType.BitWidth() == 0 || t is StringTensor) return null;
        var b = t.GetBytes();
        IEnumerable<string>? items = t.DataType switch
        {
            DataType.Float => MemoryMarshal.Cast<byte, float>(b).ToArray().Select(FormatFloat),
            DataType.Double => MemoryMarshal.Cast<byte, double>(b).ToArray().Select(d => d.ToString("R", CultureInfo.InvariantCulture)),
            DataType.Float16 => MemoryMarshal.Cast<byte, Half>(b).ToArray().Select(h => h.ToString(CultureInfo.InvariantCulture)),
            DataType.Int64 => MemoryMarshal.Cast<byte, long>(b).ToArray().Select(v => v.ToString(CultureInfo.InvariantCulture)),
            DataType.Int32 => MemoryMarshal.Cast<byte, int>(b).ToArray().Select(v => v.ToString(CultureInfo.InvariantCulture)),
            DataType.Int16 => MemoryMarshal.Cast<byte, short>(b).ToArray().Select(v => v.ToString(CultureInfo.InvariantCulture)),
            DataType.Int8 => MemoryMarshal.Cast<byte, sbyte>(b).ToArray().Select(v => v.ToString(CultureInfo.InvariantCulture)),
            DataType.UInt8 => b.ToArray().Select(v => v.ToString(CultureInfo.InvariantCulture)),
            DataType.UInt16 => MemoryMarshal.Cast<byte, ushort>(b).ToArray().Select(v => v.ToString(CultureInfo.InvariantCulture)),
            DataType.UInt32 => MemoryMarshal.Cast<byte, uint>(b).ToArray().Select(v => v.ToString(CultureInfo.InvariantCulture)),
            DataType.UInt64 => MemoryMarshal.Cast<byte, ulong>(b).ToArray().Select(v => v.ToString(CultureInfo.InvariantCulture)),
            DataType.Bool => b.ToArray().Select(v => v switch { 0 => "false", 1 => "true", _ => $"bool({v})" }),
            _ => null,
        };
        if (items == null) return null;
        // Floats print with round-trip precision, but NaN payloads and -0 vs 0 differences need the bits.
        if (t.DataType is DataType.Float or DataType.Double or DataType.Float16 && items.Any(s => s.Contains("NaN")))
            return null;
        return string.Join(", ", items);
    }

    private static string FormatFloat(float f) => f.ToString("R", CultureInfo.InvariantCulture);

    private static string FormatType(ValueType? t) => t?.ToString() ?? "?";

    private static string Typed(Value v) => v.Type == null ? Ref(v) : $"{Ref(v)}: {FormatType(v.Type)}";

    private static string Ref(Value v) => "%" + Name(v.Name);

    /// <summary>Plain names print bare; anything else is quoted.</summary>
    private static string Name(string name) =>
        name.Length > 0 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '/' or ':' or '-') ? name : Quote(name);

    public static string Quote(string s)
    {
        var sb = new StringBuilder("\"");
        foreach (var c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (char.IsControl(c)) sb.Append($"\\u{(int)c:x4}"); else sb.Append(c);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }

    private static readonly UTF8Encoding StrictUtf8 = new(false, true);

    private static string QuoteBytes(byte[] b)
    {
        try { return Quote(StrictUtf8.GetString(b)); }
        catch (DecoderFallbackException) { return $"bytes:{Convert.ToHexStringLower(b)}"; }
    }
}
