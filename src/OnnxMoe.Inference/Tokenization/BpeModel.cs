using System.Collections.Concurrent;
using System.Text.Json;

namespace OnnxMoe.Inference.Tokenization;

/// <summary>
/// HF "BPE" model: a word becomes its characters (or byte-fallback tokens, or unk), then pairs are merged
/// lowest merge rank first, leftmost first among equal ranks.
/// </summary>
internal sealed class BpeModel
{
    private const int CacheCapacity = 10_000;

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<int, string> _idToToken;
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;
    private readonly int[] _byteTokenIds;
    private readonly int? _unkId;
    private readonly bool _byteFallback;
    private readonly bool _fuseUnk;
    private readonly bool _ignoreMerges;
    private readonly string? _continuingSubwordPrefix;
    private readonly string? _endOfWordSuffix;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);

    private BpeModel(Dictionary<string, int> vocab, Dictionary<long, (int, int)> merges, int? unkId, bool byteFallback,
        bool fuseUnk, bool ignoreMerges, string? prefix, string? suffix)
    {
        _vocab = vocab;
        _idToToken = new Dictionary<int, string>(vocab.Count);
        foreach (var (token, id) in vocab) _idToToken[id] = token;
        _merges = merges;
        _unkId = unkId;
        _byteFallback = byteFallback;
        _fuseUnk = fuseUnk;
        _ignoreMerges = ignoreMerges;
        _continuingSubwordPrefix = prefix;
        _endOfWordSuffix = suffix;
        _byteTokenIds = new int[256];
        for (int b = 0; b < 256; b++)
            _byteTokenIds[b] = byteFallback && vocab.TryGetValue($"<0x{b:X2}>", out var id) ? id : -1;
    }

    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    public int MaxId => _idToToken.Count == 0 ? -1 : _idToToken.Keys.Max();

    public bool TryGetId(string token, out int id) => _vocab.TryGetValue(token, out id);

    public string? IdToToken(int id) => _idToToken.GetValueOrDefault(id);

    public static BpeModel Parse(JsonConfig config)
    {
        var type = config.GetString("type") ?? "BPE";
        if (type != "BPE")
            throw config.Error($"model \"{type}\" is not supported (supported: BPE)");
        if (config.Has("dropout") && config.Element.GetProperty("dropout").ValueKind == JsonValueKind.Number
            && config.Element.GetProperty("dropout").GetDouble() > 0)
            throw config.Error("BPE dropout is not supported for inference");

        var vocabConfig = config.Child("vocab");
        if (vocabConfig.Element.ValueKind != JsonValueKind.Object) throw config.Error("\"vocab\" must be an object of token -> id");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in vocabConfig.Element.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out var id) || id < 0)
                throw vocabConfig.Error($"token \"{entry.Name}\" has an invalid id");
            vocab[entry.Name] = id;
        }

        var prefix = config.GetString("continuing_subword_prefix");
        var suffix = config.GetString("end_of_word_suffix");
        var merges = new Dictionary<long, (int, int)>();
        int rank = 0;
        foreach (var merge in config.Items("merges"))
        {
            string left, right;
            if (merge.Element.ValueKind == JsonValueKind.String)
            {
                var parts = merge.Element.GetString()!.Split(' ');
                if (parts.Length != 2) throw merge.Error($"merge \"{merge.Element.GetString()}\" must be two tokens separated by one space");
                (left, right) = (parts[0], parts[1]);
            }
            else if (merge.Element.ValueKind == JsonValueKind.Array && merge.Element.GetArrayLength() == 2
                     && merge.Element[0].ValueKind == JsonValueKind.String && merge.Element[1].ValueKind == JsonValueKind.String)
            {
                (left, right) = (merge.Element[0].GetString()!, merge.Element[1].GetString()!);
            }
            else throw merge.Error("a merge must be \"a b\" or [\"a\", \"b\"]");

            if (!vocab.TryGetValue(left, out var leftId)) throw merge.Error($"merge token \"{left}\" is not in the vocabulary");
            if (!vocab.TryGetValue(right, out var rightId)) throw merge.Error($"merge token \"{right}\" is not in the vocabulary");
            var merged = left + (prefix is not null && right.StartsWith(prefix, StringComparison.Ordinal) ? right[prefix.Length..] : right);
            if (!vocab.TryGetValue(merged, out var newId)) throw merge.Error($"merged token \"{merged}\" is not in the vocabulary");
            merges.TryAdd(Key(leftId, rightId), (rank, newId));
            rank++;
        }

        int? unkId = null;
        var unk = config.GetString("unk_token");
        if (unk is not null)
        {
            if (!vocab.TryGetValue(unk, out var id)) throw config.Error($"unk_token \"{unk}\" is not in the vocabulary");
            unkId = id;
        }
        return new BpeModel(vocab, merges, unkId, config.GetBool("byte_fallback", false), config.GetBool("fuse_unk", false),
            config.GetBool("ignore_merges", false), prefix, suffix);
    }

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>Appends the ids of one pre-tokenized word to <paramref name="output"/>.</summary>
    public void Tokenize(string word, List<int> output)
    {
        if (word.Length == 0) return;
        if (_ignoreMerges && _vocab.TryGetValue(word, out var whole))
        {
            output.Add(whole);
            return;
        }
        if (_cache.TryGetValue(word, out var cached))
        {
            output.AddRange(cached);
            return;
        }
        var ids = Merge(InitialSymbols(word));
        if (_cache.Count < CacheCapacity) _cache.TryAdd(word, ids);
        output.AddRange(ids);
    }

    private List<int> InitialSymbols(string word)
    {
        var symbols = new List<int>(word.Length);
        int? pendingUnk = null;
        int i = 0;
        foreach (var ch in Patterns.Chars(word))
        {
            bool isFirst = i == 0;
            i += ch.Length;
            bool isLast = i == word.Length;
            var s = ch;
            if (!isFirst && _continuingSubwordPrefix is not null) s = _continuingSubwordPrefix + s;
            if (isLast && _endOfWordSuffix is not null) s += _endOfWordSuffix;

            if (_vocab.TryGetValue(s, out var id))
            {
                FlushUnk(ref pendingUnk, symbols);
                symbols.Add(id);
                continue;
            }
            if (TryByteFallback(s, out var byteIds))
            {
                FlushUnk(ref pendingUnk, symbols);
                symbols.AddRange(byteIds);
                continue;
            }
            if (_unkId is int unkId)
            {
                if (pendingUnk is not null && !_fuseUnk) symbols.Add(pendingUnk.Value);
                pendingUnk = unkId;
            }
            // Without an unk token HF drops the character silently.
        }
        FlushUnk(ref pendingUnk, symbols);
        return symbols;
    }

    private static void FlushUnk(ref int? pendingUnk, List<int> symbols)
    {
        if (pendingUnk is int unk) symbols.Add(unk);
        pendingUnk = null;
    }

    private bool TryByteFallback(string s, out int[] ids)
    {
        ids = [];
        if (!_byteFallback) return false;
        var bytes = Patterns.Utf8.GetBytes(s);
        var result = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++)
        {
            result[i] = _byteTokenIds[bytes[i]];
            if (result[i] == -1) return false;
        }
        ids = result;
        return true;
    }

    /// <summary>Priority-queue merge over a linked list of symbols: O(n log n) in the word length.</summary>
    private int[] Merge(List<int> initial)
    {
        int n = initial.Count;
        if (n <= 1) return initial.ToArray();
        var ids = initial.ToArray();
        var prev = new int[n];
        var next = new int[n];
        var alive = new bool[n];
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            alive[i] = true;
        }
        var queue = new PriorityQueue<(int Pos, int NewId), (int Rank, int Pos)>();
        for (int i = 0; i + 1 < n; i++)
            if (_merges.TryGetValue(Key(ids[i], ids[i + 1]), out var m))
                queue.Enqueue((i, m.NewId), (m.Rank, i));

        while (queue.TryDequeue(out var top, out _))
        {
            int pos = top.Pos;
            if (!alive[pos] || next[pos] == -1) continue;
            int right = next[pos];
            // Skip stale entries: the pair at pos changed since this entry was queued.
            if (!_merges.TryGetValue(Key(ids[pos], ids[right]), out var current) || current.NewId != top.NewId) continue;

            ids[pos] = top.NewId;
            alive[right] = false;
            next[pos] = next[right];
            if (next[pos] != -1) prev[next[pos]] = pos;

            if (prev[pos] != -1 && _merges.TryGetValue(Key(ids[prev[pos]], ids[pos]), out var left))
                queue.Enqueue((prev[pos], left.NewId), (left.Rank, prev[pos]));
            if (next[pos] != -1 && _merges.TryGetValue(Key(ids[pos], ids[next[pos]]), out var after))
                queue.Enqueue((pos, after.NewId), (after.Rank, pos));
        }

        var result = new List<int>(n);
        for (int i = 0; i != -1; i = next[i]) result.Add(ids[i]);
        return result.ToArray();
    }
}
