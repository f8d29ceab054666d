using OnnxMoe.Ir.Printing;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Passes.Cleanup;

/// <summary>
/// Merges initializers with identical dtype, shape and bytes into the first one (initializer order):
/// readers of a duplicate are rewired to the kept value and the duplicate is dropped. Per graph.
/// Bytes are compared by streamed SHA-256, first of a 4 KiB prefix (so distinct expert weights of equal
/// shape cost one small read each), then of the whole tensor. Skipped: initializers that are graph inputs
/// (overridable) or graph outputs (named interface), string tensors, and lazy tensors not yet computed
/// (hashing would run the computation, e.g. quantization), and initializers the decoder structure metadata
/// names (structural passes such as prune-experts rewrite those in place and must find them by name).
/// </summary>
public sealed class DedupeConstantsPass : Pass
{
    public static readonly PassInfo Info = new("dedupe-constants",
        "Merges initializers with identical dtype, shape and bytes into one.");

    private const int PrefixBytes = 4096;

    public DedupeConstantsPass(PassOptions options) : base(Info, options)
    {
    }

    public override PassResult Run(Model model, PassContext context)
    {
        var counters = new CounterSet();
        var pinned = Structure.DecoderStructure.TryRead(model)?.ReferencedNames() ?? new HashSet<string>();
        foreach (var g in Graphs(model)) Dedupe(g, counters, context, pinned);
        return PassResult.From(counters.Any, counters);
    }

    private static IEnumerable<Graph> Graphs(Model model)
    {
        IEnumerable<Graph> Walk(Graph g) => new[] { g }.Concat(g.Nodes.SelectMany(n => n.Attributes).SelectMany(a => a.Subgraphs).SelectMany(Walk));
        return Walk(model.Graph).Concat(model.Functions.SelectMany(f => Walk(f.Body))).ToList();
    }

    private static void Dedupe(Graph g, CounterSet counters, PassContext context, IReadOnlySet<string> pinned)
    {
        var inputs = new HashSet<Value>(g.Inputs, ReferenceEqualityComparer.Instance);
        var candidates = g.Initializers
            .Where(v => !inputs.Contains(v) && !v.IsGraphOutput && !pinned.Contains(v.Name) && v.ConstValue is { } t && t is not StringTensor && (t is not LazyTensor || t.IsMaterialized))
            .ToList();
        var duplicates = new List<(Value Dup, Value Keep)>();
        foreach (var sameLayout in candidates.GroupBy(v => (v.ConstValue!.DataType, Shape: string.Join(",", v.ConstValue.Shape))).Where(grp => grp.Count() > 1))
        {
            var byPrefix = sameLayout.GroupBy(v => Convert.ToHexString(TensorDigest.PrefixSha256(v.ConstValue!, PrefixBytes)));
            foreach (var prefixGroup in byPrefix.Where(grp => grp.Count() > 1))
            {
                context.CancellationToken.ThrowIfCancellationRequested();
                var kept = new Dictionary<string, Value>(StringComparer.Ordinal);
                foreach (var v in prefixGroup)
                {
                    var key = SameBytesShortcut(v, kept.Values) ?? Convert.ToHexString(TensorDigest.Sha256(v.ConstValue!));
                    if (kept.TryGetValue(key, out var keep)) duplicates.Add((v, keep));
                    else kept[key] = v;
                }
            }
        }
        if (duplicates.Count == 0) return;
        var dropped = new HashSet<Value>(ReferenceEqualityComparer.Instance);
        foreach (var (dup, keep) in duplicates)
        {
            dup.ReplaceAllUsesWith(keep, replaceGraphOutputs: false);
            dropped.Add(dup);
            counters.Add("initializers-deduplicated");
            counters.Add("bytes-saved", dup.ConstValue!.ByteLength);
        }
        g.Initializers.RemoveAll(dropped.Contains);
    }

    /// <summary>Two file tensors over the same bytes of the same file are equal without reading them.</summary>
    private static string? SameBytesShortcut(Value v, IEnumerable<Value> kept)
    {
        if (v.ConstValue is not FileTensor f) return null;
        foreach (var k in kept)
            if (k.ConstValue is FileTensor g && ReferenceEquals(g.File, f.File) && g.Offset == f.Offset && g.Length == f.Length)
                return Convert.ToHexString(TensorDigest.Sha256(g));
        return null;
    }
}
