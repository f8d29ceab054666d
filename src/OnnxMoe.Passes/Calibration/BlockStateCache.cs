using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Structure;

namespace OnnxMoe.Passes.Calibration;

/// <summary>
/// The hidden states entering each decoder block, computed block by block on an <see cref="IRegionRunner"/> and cached by the chain
/// of block fingerprints before them (what each region computes and which weight tensors it reads), so a consumer measuring again
/// after a change (iterative selection) restarts from the first changed block, not from the embeddings. One cache serves every
/// calibration consumer of a compile. Owns the states it holds.
/// </summary>
public sealed class BlockStateCache(IRegionRunner runner) : IDisposable
{
    private readonly Dictionary<string, IHiddenStates> _cache = new(StringComparer.Ordinal);
    private readonly ConditionalWeakTable<Tensor, StrongBox<long>> _tensorIds = new();
    private long _nextTensorId;

    public IRegionRunner Runner { get; } = runner;

    /// <summary>Hidden states of the residual stream entering block <paramref name="position"/> (in current block order; the
    /// block count for the last block's output), cached; owned by the cache (do not dispose).</summary>
    public IHiddenStates InputOf(Model model, DecoderStructure s, int position, CalibrationWindows windows, CancellationToken cancellation = default) =>
        InputOf(model, s, position, windows, ChainKeys(model, s, windows), cancellation);

    /// <summary><see cref="InputOf(Model, DecoderStructure, int, CalibrationWindows, CancellationToken)"/> with the model's <see cref="ChainKeys"/> computed already.</summary>
    public IHiddenStates InputOf(Model model, DecoderStructure s, int position, CalibrationWindows windows, string[] keys, CancellationToken cancellation = default)
    {
        int start = position;
        while (start >= 0 && !_cache.ContainsKey(keys[start])) start--;
        if (start < 0)
        {
            Cache(keys[0], Runner.Embed(model, s, windows, cancellation));
            start = 0;
        }
        for (int p = start; p < position; p++)
            Cache(keys[p + 1], Runner.RunBlock(model, s, p, _cache[keys[p]], windows, [], null, keepOutput: true, cancellation: cancellation)!);
        // States of other chains (before a change) are stale now.
        var current = new HashSet<string>(keys, StringComparer.Ordinal);
        string prefix = $"{windows.Id}:";
        foreach (var stale in _cache.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal) && !current.Contains(k)).ToList())
        {
            _cache[stale].Dispose();
            _cache.Remove(stale);
        }
        return _cache[keys[position]];
    }

    /// <summary>Cache keys of the states entering each block position and, last, the last block's output: the window set plus
    /// the fingerprints of the embedding region and every block before.</summary>
    public string[] ChainKeys(Model model, DecoderStructure s, CalibrationWindows windows)
    {
        var keys = new string[s.Blocks.Count + 1];
        var chain = new StringBuilder(Fingerprint(model, [], [Value(model, s.EmbeddingOutput)]));
        keys[0] = $"{windows.Id}:{Hash(chain)}";
        for (int p = 0; p < s.Blocks.Count; p++)
        {
            var b = s.Blocks[p];
            chain.Append('|').Append(Fingerprint(model, [Value(model, b.Input)], [Value(model, b.Output)]));
            keys[p + 1] = $"{windows.Id}:{Hash(chain)}";
        }
        return keys;
    }

    /// <summary>Frees every cached state (a consumer that runs its own chain, as AWQ does, first makes room).</summary>
    public void Clear()
    {
        foreach (var states in _cache.Values) states.Dispose();
        _cache.Clear();
    }

    /// <summary>Whether states for <paramref name="key"/> are cached.</summary>
    public bool IsCached(string key) => _cache.ContainsKey(key);

    /// <summary>Keeps <paramref name="states"/> as the states for <paramref name="key"/> (the cache owns them from here).</summary>
    public void Cache(string key, IHiddenStates states)
    {
        if (_cache.Remove(key, out var old) && !ReferenceEquals(old, states)) old.Dispose();
        _cache[key] = states;
    }

    /// <summary>What a region computes: its nodes (op, name, attributes, value names) and the identity of every initializer tensor it reads.</summary>
    private string Fingerprint(Model model, IReadOnlyList<Value> cut, IReadOnlyList<Value> outputs)
    {
        var (nodes, leaves) = RegionExtractor.Collect(cut, outputs);
        var text = new StringBuilder();
        foreach (var n in model.Graph.Nodes)
        {
            if (!nodes.Contains(n)) continue;
            text.Append(n.Domain).Append(':').Append(n.OpType).Append(' ').Append(n.Name).Append('(');
            foreach (var i in n.Inputs) text.Append(i?.Name).Append(',');
            text.Append(")->");
            foreach (var o in n.Outputs) text.Append(o.Name).Append(',');
            foreach (var a in n.Attributes) text.Append(' ').Append(a.Name).Append('=').Append(AttributeText(a));
            text.Append('\n');
        }
        foreach (var v in leaves.OrderBy(v => v.Name, StringComparer.Ordinal))
            text.Append(v.Name).Append('#').Append(v.ConstValue is { } t ? TensorId(t) : -1).Append('\n');
        return Hash(text);
    }

    private string AttributeText(Ir.Attribute a) => a.Value switch
    {
        long[] l => string.Join(",", l),
        float[] f => string.Join(",", f.Select(x => BitConverter.SingleToInt32Bits(x))),
        byte[] b => Convert.ToHexString(b),
        Tensor t => $"tensor#{TensorId(t)}",
        float f => BitConverter.SingleToInt32Bits(f).ToString(),
        null => "",
        var o => o.ToString() ?? "",
    };

    private long TensorId(Tensor t) => _tensorIds.GetValue(t, _ => new StrongBox<long>(Interlocked.Increment(ref _nextTensorId))).Value;

    private static string Hash(StringBuilder text) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));

    /// <summary>The value a structure field names: a graph input or a node output.</summary>
    public static Value Value(Model model, string name)
    {
        foreach (var v in model.Graph.Inputs) if (v.Name == name) return v;
        foreach (var n in model.Graph.Nodes)
            foreach (var o in n.Outputs)
                if (o.Name == name) return o;
        throw new InvalidDataException($"structure metadata names value '{name}', which the graph does not have");
    }

    public void Dispose() => Clear();
}
