using OnnxMoe.Ir;
using OnnxMoe.Structure;

namespace OnnxMoe.Compiler.Bench;

/// <summary>
/// The bytes one decode step has to read from memory at least, from the graph alone (units: bytes). Every initializer a
/// node reads counts once and fully, except routed-expert weights, which count top_k / experts of their bytes (the
/// experts a token is routed to), and the embedding table, which counts one row per sequence; plus the KV cache of every
/// layer at the context length. Activations are left out, so this is a lower bound on the traffic of a step.
/// Routed-expert weights are the initializers of the MatMul / MatMulNBits nodes under <c>{moe prefix}experts.{e}/</c> (<see cref="FfnStructure.RoutedExpertsScope"/>) of
/// the structure's MoE blocks (the branch's other constants, e.g. its expert id, are read for every token), and the
/// stacked inputs (leading dimension = experts) of com.microsoft <c>MoE</c> / <c>QMoE</c> nodes, with their attribute <c>k</c>.
/// </summary>
/// <param name="DenseWeightBytes">Initializers read in full: attention, norms, routers, shared experts, dense MLPs, lm_head, constants.</param>
/// <param name="ExpertWeightBytes">Routed-expert bytes a step reads: stored bytes x top_k / experts, per MoE layer.</param>
/// <param name="ExpertWeightBytesStored">All routed-expert bytes in the file.</param>
/// <param name="EmbeddingRowBytes">One row of the embedding table (per sequence and step).</param>
/// <param name="KvBytesPerPosition">Key and value bytes of one position over all layers (per sequence).</param>
public sealed record DecodeTraffic(double DenseWeightBytes, double ExpertWeightBytes, long ExpertWeightBytesStored, long EmbeddingRowBytes, long KvBytesPerPosition)
{
    /// <summary>
    /// Bytes of one decode step of <paramref name="batch"/> sequences that attend to <paramref name="contextLength"/>
    /// positions each. The experts count once for the whole batch (all sequences may pick the same ones), so this
    /// stays a lower bound for any batch.
    /// </summary>
    public double BytesPerStep(int contextLength, int batch = 1) =>
        DenseWeightBytes + ExpertWeightBytes + (double)batch * (EmbeddingRowBytes + KvBytesPerPosition * (double)contextLength);

    /// <summary>
    /// Reads the traffic of <paramref name="model"/> (a graph written by <c>onnxmoe compile</c>; shapes and dtypes only,
    /// no tensor data is read). Throws <see cref="InvalidDataException"/> when the structure metadata is missing.
    /// </summary>
    public static DecodeTraffic Of(Model model)
    {
        var structure = DecoderStructure.Read(model);
        var graph = model.Graph;
        var expertPrefixes = structure.Blocks
            .Where(b => b.Ffn?.Moe is not null)
            .Select(b => (Prefix: b.Ffn!.RoutedExpertsScope, Fraction: (double)b.Ffn!.Moe!.TopK / b.Ffn.Moe.ExpertIds.Count))
            .ToList();
        var embedding = graph.AllNodes().FirstOrDefault(n => n.Outputs.Any(o => o.Name == structure.EmbeddingOutput));

        // Per initializer, the most any one of its readers needs: full > expert share > one embedding row.
        var reads = new Dictionary<Value, (double Bytes, Share Kind)>(ReferenceEqualityComparer.Instance);
        foreach (var node in graph.AllNodes())
        {
            for (int i = 0; i < node.Inputs.Count; i++)
            {
                if (node.Inputs[i] is not { ConstValue: { } tensor } input) continue;
                var (bytes, kind) = Read(node, i, tensor, embedding, expertPrefixes);
                if (!reads.TryGetValue(input, out var known) || bytes > known.Bytes) reads[input] = (bytes, kind);
            }
        }
        double dense = reads.Values.Where(r => r.Kind == Share.Full).Sum(r => r.Bytes);
        double experts = reads.Values.Where(r => r.Kind == Share.Experts).Sum(r => r.Bytes);
        long stored = reads.Where(r => r.Value.Kind == Share.Experts).Sum(r => r.Key.ConstValue!.ByteLength);
        long row = (long)reads.Values.Where(r => r.Kind == Share.EmbeddingRow).Sum(r => r.Bytes);
        return new DecodeTraffic(dense, experts, stored, row, KvBytes(graph, structure));
    }

    private enum Share { Full, Experts, EmbeddingRow }

    private static (double Bytes, Share Kind) Read(Node node, int input, Ir.Tensors.Tensor tensor, Node? embedding,
        List<(string Prefix, double Fraction)> expertPrefixes)
    {
        long bytes = tensor.ByteLength;
        if (ReferenceEquals(node, embedding) && node.OpType == "Gather" && input == 0 && tensor.Shape is [> 0, ..])
            return (bytes / tensor.Shape[0], Share.EmbeddingRow);
        if (node.Domain == "com.microsoft" && node.OpType is "MoE" or "QMoE" && input >= 2
            && node.Inputs[2]?.ConstValue?.Shape is [> 0 and var experts, ..] && tensor.Shape is [var first, ..] && first == experts)
            return (bytes * Math.Min(1.0, node.GetInt("k", 1) / (double)experts), Share.Experts);
        if (node.OpType is "MatMul" or "MatMulNBits")
            foreach (var (prefix, fraction) in expertPrefixes)
                if (node.Name.StartsWith(prefix, StringComparison.Ordinal)) return (bytes * fraction, Share.Experts);
        return (bytes, Share.Full);
    }

    private static long KvBytes(Graph graph, DecoderStructure structure)
    {
        var inputs = graph.Inputs.ToDictionary(v => v.Name, StringComparer.Ordinal);
        long total = 0;
        foreach (var block in structure.Blocks)
        {
            foreach (var name in new[] { block.Attention.PastKey, block.Attention.PastValue })
            {
                if (!inputs.TryGetValue(name, out var past) || past.ElementType is not { } type)
                    throw new InvalidDataException($"graph input '{name}' of block {block.Index}'s KV cache is missing or untyped");
                total += type.ByteCount((long)structure.NumKeyValueHeads * structure.HeadDim);
            }
        }
        return total;
    }
}
