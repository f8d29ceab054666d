using OnnxMoe.Ir;
using System.Text.Json;

namespace OnnxMoe.Inference.Tokenization;

/// <summary>
/// A Hugging Face tokenizer.json (BPE model) for encoding prompts and decoding generated ids, following the
/// HF tokenizers pipeline: added tokens, normalizer, pre-tokenizer, BPE by merge rank, post-processor; decode via the decoder chain.
/// Immutable after loading and safe to use from several threads.
/// </summary>
public sealed class Tokenizer
{
    private readonly BpeModel _model;
    private readonly INormalizer? _normalizer;
    private readonly IPreTokenizer? _preTokenizer;
    private readonly IPostProcessor? _postProcessor;
    private readonly ITokenDecoder? _decoder;
    private readonly AddedTokenMatcher _rawMatcher;
    private readonly AddedTokenMatcher _normalizedMatcher;
    private readonly Dictionary<int, AddedToken> _addedById;
    private readonly Dictionary<string, AddedToken> _addedByContent;

    private Tokenizer(BpeModel model, INormalizer? normalizer, IPreTokenizer? preTokenizer, IPostProcessor? postProcessor,
        ITokenDecoder? decoder, IReadOnlyList<AddedToken> addedTokens)
    {
        _model = model;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        _postProcessor = postProcessor;
        _decoder = decoder;
        AddedTokens = addedTokens;
        _addedById = new Dictionary<int, AddedToken>();
        _addedByContent = new Dictionary<string, AddedToken>(StringComparer.Ordinal);
        foreach (var t in addedTokens)
        {
            _addedById[t.Id] = t;
            _addedByContent[t.Content] = t;
        }
        _rawMatcher = new AddedTokenMatcher(addedTokens.Where(t => !t.Normalized).Select(t => (t.Content, t)));
        _normalizedMatcher = new AddedTokenMatcher(addedTokens.Where(t => t.Normalized)
            .Select(t => (normalizer?.Normalize(t.Content) ?? t.Content, t)));
        VocabSize = Math.Max(model.MaxId, addedTokens.Count == 0 ? -1 : addedTokens.Max(t => t.Id)) + 1;
    }

    /// <summary>Number of ids: one more than the largest id of the model vocabulary or the added tokens.</summary>
    public int VocabSize { get; }

    /// <summary>The added tokens (special and not) in file order.</summary>
    public IReadOnlyList<AddedToken> AddedTokens { get; }

    /// <summary>Loads a tokenizer.json; a malformed or unsupported file throws <see cref="InvalidDataException"/> naming the file and component.</summary>
    public static Tokenizer Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: tokenizer file not found", path);
        return FromJson(File.ReadAllText(path), path);
    }

    /// <summary>Parses tokenizer.json text; <paramref name="source"/> names it in error messages.</summary>
    public static Tokenizer FromJson(string json, string source = "tokenizer.json")
    {
        var document = JsonText.Parse(json, new JsonDocumentOptions { MaxDepth = 256 }, problem => new InvalidDataException($"{source}: {problem}"));
        using (document)
        {
            var root = new JsonConfig(document.RootElement, source, "tokenizer");
            if (root.Element.ValueKind != JsonValueKind.Object) throw root.Error("the top level must be an object");
            var modelConfig = root.Child("model");
            if (modelConfig.IsNull) throw root.Error("missing \"model\"");
            var model = BpeModel.Parse(modelConfig);
            var added = new List<AddedToken>();
            foreach (var t in root.Items("added_tokens"))
            {
                var id = t.GetInt("id", -1);
                if (id < 0) throw t.Error("added token needs a non-negative \"id\"");
                added.Add(new AddedToken(id, t.RequireString("content"), t.GetBool("special", false), t.GetBool("single_word", false),
                    t.GetBool("lstrip", false), t.GetBool("rstrip", false), t.GetBool("normalized", !t.GetBool("special", false))));
            }
            return new Tokenizer(model,
                Normalizers.Parse(root.Child("normalizer")),
                PreTokenizers.Parse(root.Child("pre_tokenizer")),
                PostProcessors.Parse(root.Child("post_processor")),
                Decoders.Parse(root.Child("decoder")),
                added);
        }
    }

    /// <summary>Encodes text to ids; <paramref name="addSpecialTokens"/> applies the post-processor template (e.g. BOS).</summary>
    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var raw = new List<TextPiece>();
        _rawMatcher.Split(new TextPiece(text, true, null), raw);

        var pieces = new List<TextPiece>(raw.Count);
        foreach (var piece in raw)
        {
            if (piece.TokenId is not null)
            {
                pieces.Add(piece);
                continue;
            }
            var normalized = _normalizer?.Normalize(piece.Text) ?? piece.Text;
            _normalizedMatcher.Split(piece with { Text = normalized }, pieces);
        }

        var ids = new List<int>();
        foreach (var piece in pieces)
        {
            if (piece.TokenId is int id)
            {
                ids.Add(id);
                continue;
            }
            if (piece.Text.Length == 0) continue;
            var splits = new List<Split> { new(piece.Text, piece.AtInputStart) };
            if (_preTokenizer is not null) splits = _preTokenizer.PreTokenize(splits);
            foreach (var split in splits) _model.Tokenize(split.Text, ids);
        }
        if (addSpecialTokens && _postProcessor is not null) ids = _postProcessor.Process(ids);
        return ids.ToArray();
    }

    /// <summary>Decodes ids to text through the decoder chain; unknown ids are skipped (as HF does).</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var tokens = new List<string>(ids.Length);
        foreach (var id in ids)
        {
            if (_addedById.TryGetValue(id, out var added))
            {
                if (!(skipSpecialTokens && added.Special)) tokens.Add(added.Content);
                continue;
            }
            var token = _model.IdToToken(id);
            if (token is null) continue;
            if (skipSpecialTokens && _addedByContent.TryGetValue(token, out var named) && named.Special) continue;
            tokens.Add(token);
        }
        return _decoder is null ? string.Join(' ', tokens) : string.Concat(_decoder.DecodeChain(tokens));
    }

    /// <summary>The id of a token string (added tokens first, then the model vocabulary), or null.</summary>
    public int? TokenToId(string token) =>
        _addedByContent.TryGetValue(token, out var added) ? added.Id : _model.TryGetId(token, out var id) ? id : null;

    /// <summary>The token string of an id, or null when the id is unknown.</summary>
    public string? IdToToken(int id) => _addedById.TryGetValue(id, out var added) ? added.Content : _model.IdToToken(id);

    /// <summary>True when the id is an added token marked special (BOS, EOS, PAD, ...).</summary>
    public bool IsSpecial(int id) => _addedById.TryGetValue(id, out var added) && added.Special;

    /// <summary>
    /// A decoder that turns ids pushed one by one into text deltas; <paramref name="context"/> (typically the prompt ids)
    /// is decoded first but never emitted, so the first generated word keeps its leading space.
    /// </summary>
    public StreamingDecoder CreateStreamingDecoder(ReadOnlySpan<int> context = default, bool skipSpecialTokens = true) =>
        new(this, context, skipSpecialTokens);
}
