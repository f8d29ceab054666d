using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxMoe.Ir;

namespace OnnxMoe.Inference.Models;

/// <summary>
/// ORT GenAI's genai_config.json: the fields generation, eval and bench read (<see cref="Load"/>), and the file compile
/// writes (<see cref="ToJson"/>) in GenAI 0.18's format.
/// </summary>
public sealed record GenAiConfig
{
    /// <summary>GenAI's generic decoder-only type; it refuses the family names (mixtral, deepseek, qwen2_moe, ...) as model types.</summary>
    public const string DecoderModelType = "decoder";

    public string? ModelType { get; init; }
    public int? BosTokenId { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    public int? PadTokenId { get; init; }
    public int? ContextLength { get; init; }
    public int? VocabSize { get; init; }
    public string DecoderFileName { get; init; } = "model.onnx";
    public int? HeadSize { get; init; }
    public int? HiddenSize { get; init; }
    public int? NumAttentionHeads { get; init; }
    public int? NumHiddenLayers { get; init; }
    public int? NumKeyValueHeads { get; init; }
    public int? SearchMaxLength { get; init; }
    public bool? SearchDoSample { get; init; }
    public double? SearchTemperature { get; init; }
    public int? SearchTopK { get; init; }
    public double? SearchTopP { get; init; }
    /// <summary>decoder.session_options.intra_op_num_threads; 0 lets ORT choose (one thread per physical core).</summary>
    public int? IntraOpNumThreads { get; init; }
    /// <summary>search.past_present_share_buffer: true only for fused attention (GroupQueryAttention); the standard form grows the KV cache by Concat.</summary>
    public bool? PastPresentShareBuffer { get; init; }

    public static GenAiConfig Load(string path)
    {
        using var doc = ConfigJson.Parse(path);
        var root = doc.RootElement;
        var model = ConfigJson.Object(root, "model", path) ?? throw new UserErrorException($"{path}: missing \"model\" section");
        var decoder = ConfigJson.Object(model, "decoder", path);
        var search = ConfigJson.Object(root, "search", path);
        var sessionOptions = decoder is { } d0 ? ConfigJson.Object(d0, "session_options", path) : null;
        return new GenAiConfig
        {
            ModelType = ConfigJson.String(model, "type", path),
            BosTokenId = ConfigJson.Int(model, "bos_token_id", path),
            EosTokenIds = ConfigJson.IntOrList(model, "eos_token_id", path),
            PadTokenId = ConfigJson.Int(model, "pad_token_id", path),
            ContextLength = ConfigJson.Int(model, "context_length", path),
            VocabSize = ConfigJson.Int(model, "vocab_size", path),
            DecoderFileName = (decoder is { } d ? ConfigJson.String(d, "filename", path) : null) ?? "model.onnx",
            HeadSize = decoder is { } d1 ? ConfigJson.Int(d1, "head_size", path) : null,
            HiddenSize = decoder is { } d2 ? ConfigJson.Int(d2, "hidden_size", path) : null,
            NumAttentionHeads = decoder is { } d3 ? ConfigJson.Int(d3, "num_attention_heads", path) : null,
            NumHiddenLayers = decoder is { } d4 ? ConfigJson.Int(d4, "num_hidden_layers", path) : null,
            NumKeyValueHeads = decoder is { } d5 ? ConfigJson.Int(d5, "num_key_value_heads", path) : null,
            SearchMaxLength = search is { } s1 ? ConfigJson.Int(s1, "max_length", path) : null,
            SearchDoSample = search is { } s2 ? ConfigJson.Bool(s2, "do_sample", path) : null,
            SearchTemperature = search is { } s3 ? ConfigJson.Double(s3, "temperature", path) : null,
            SearchTopK = search is { } s4 ? ConfigJson.Int(s4, "top_k", path) : null,
            SearchTopP = search is { } s5 ? ConfigJson.Double(s5, "top_p", path) : null,
            IntraOpNumThreads = sessionOptions is { } o ? ConfigJson.Int(o, "intra_op_num_threads", path) : null,
            PastPresentShareBuffer = search is { } s6 ? ConfigJson.Bool(s6, "past_present_share_buffer", path) : null,
        };
    }

    /// <summary>
    /// genai_config.json as GenAI 0.18 reads it: exactly the keys it accepts (it rejects unknown keys in model, decoder,
    /// search, inputs and outputs), context_length and vocab_size always present, past and present in separate buffers.
    /// </summary>
    public string ToJson()
    {
        int Required(int? value, string name) =>
            value ?? throw new InvalidOperationException($"genai_config.json needs {name}");
        int eos = EosTokenIds.Count > 0 ? EosTokenIds[0] : 0;
        JsonNode eosNode = EosTokenIds.Count > 1 ? new JsonArray([.. EosTokenIds.Select(e => (JsonNode)JsonValue.Create(e))]) : JsonValue.Create(eos);
        var sessionOptions = new JsonObject { ["log_id"] = "onnxruntime-genai", ["provider_options"] = new JsonArray() };
        if (IntraOpNumThreads is { } threads) sessionOptions["intra_op_num_threads"] = threads;
        var json = new JsonObject
        {
            ["model"] = new JsonObject
            {
                ["bos_token_id"] = BosTokenId ?? 0,
                ["context_length"] = Required(ContextLength, "context_length"),
                ["decoder"] = new JsonObject
                {
                    ["session_options"] = sessionOptions,
                    ["filename"] = DecoderFileName,
                    ["head_size"] = Required(HeadSize, "head_size"),
                    ["hidden_size"] = Required(HiddenSize, "hidden_size"),
                    ["inputs"] = new JsonObject
                    {
                        ["input_ids"] = "input_ids",
                        ["attention_mask"] = "attention_mask",
                        ["position_ids"] = "position_ids",
                        ["past_key_names"] = "past_key_values.%d.key",
                        ["past_value_names"] = "past_key_values.%d.value",
                    },
                    ["outputs"] = new JsonObject
                    {
                        ["logits"] = "logits",
                        ["present_key_names"] = "present.%d.key",
                        ["present_value_names"] = "present.%d.value",
                    },
                    ["num_attention_heads"] = Required(NumAttentionHeads, "num_attention_heads"),
                    ["num_hidden_layers"] = Required(NumHiddenLayers, "num_hidden_layers"),
                    ["num_key_value_heads"] = Required(NumKeyValueHeads, "num_key_value_heads"),
                },
                ["eos_token_id"] = eosNode,
                ["pad_token_id"] = PadTokenId ?? eos,
                ["type"] = ModelType ?? DecoderModelType,
                ["vocab_size"] = Required(VocabSize, "vocab_size"),
            },
            ["search"] = new JsonObject
            {
                ["diversity_penalty"] = 0.0,
                ["do_sample"] = SearchDoSample ?? false,
                ["early_stopping"] = true,
                ["length_penalty"] = 1.0,
                ["max_length"] = SearchMaxLength ?? Required(ContextLength, "context_length"),
                ["min_length"] = 0,
                ["no_repeat_ngram_size"] = 0,
                ["num_beams"] = 1,
                ["num_return_sequences"] = 1,
                ["past_present_share_buffer"] = PastPresentShareBuffer ?? false,
                ["repetition_penalty"] = 1.0,
                ["temperature"] = SearchTemperature ?? 1.0,
                ["top_k"] = SearchTopK ?? 1,
                ["top_p"] = SearchTopP ?? 1.0,
            },
        };
        return json.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}

/// <summary>The fields of Hugging Face's generation_config.json that generation uses.</summary>
public sealed record GenerationConfig
{
    public int? BosTokenId { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    public int? PadTokenId { get; init; }
    public bool? DoSample { get; init; }
    public double? Temperature { get; init; }
    public int? TopK { get; init; }
    public double? TopP { get; init; }
    public int? MaxNewTokens { get; init; }

    public static GenerationConfig Load(string path)
    {
        using var doc = ConfigJson.Parse(path);
        var root = doc.RootElement;
        return new GenerationConfig
        {
            BosTokenId = ConfigJson.Int(root, "bos_token_id", path),
            EosTokenIds = ConfigJson.IntOrList(root, "eos_token_id", path),
            PadTokenId = ConfigJson.Int(root, "pad_token_id", path),
            DoSample = ConfigJson.Bool(root, "do_sample", path),
            Temperature = ConfigJson.Double(root, "temperature", path),
            TopK = ConfigJson.Int(root, "top_k", path),
            TopP = ConfigJson.Double(root, "top_p", path),
            MaxNewTokens = ConfigJson.Int(root, "max_new_tokens", path),
        };
    }
}

/// <summary>Typed reads of optional JSON config fields; a wrong type is a user error naming the file and field.</summary>
internal static class ConfigJson
{
    public static JsonDocument Parse(string path)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new UserErrorException($"{path}: cannot read: {e.Message}", e); }
        var doc = JsonText.Parse(bytes, default, problem => new UserErrorException($"{path}: {problem}"));
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            doc.Dispose();
            throw new UserErrorException($"{path}: the top level must be a JSON object");
        }
        return doc;
    }

    private static JsonElement? Get(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var p) && p.ValueKind != JsonValueKind.Null ? p : null;

    public static JsonElement? Object(JsonElement obj, string name, string path) => Get(obj, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.Object } p => p,
        _ => throw new UserErrorException($"{path}: \"{name}\" must be an object"),
    };

    public static string? String(JsonElement obj, string name, string path) => Get(obj, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.String } p => p.GetString(),
        _ => throw new UserErrorException($"{path}: \"{name}\" must be a string"),
    };

    public static int? Int(JsonElement obj, string name, string path) => Get(obj, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.Number } p when p.TryGetInt32(out var v) => v,
        _ => throw new UserErrorException($"{path}: \"{name}\" must be an integer"),
    };

    public static double? Double(JsonElement obj, string name, string path) => Get(obj, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.Number } p when p.TryGetDouble(out var v) && double.IsFinite(v) => v,
        _ => throw new UserErrorException($"{path}: \"{name}\" must be a finite number"),
    };

    public static bool? Bool(JsonElement obj, string name, string path) => Get(obj, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.True } => true,
        { ValueKind: JsonValueKind.False } => false,
        _ => throw new UserErrorException($"{path}: \"{name}\" must be true or false"),
    };

    public static IReadOnlyList<int> IntOrList(JsonElement obj, string name, string path)
    {
        var p = Get(obj, name);
        if (p is null) return [];
        if (p.Value.ValueKind == JsonValueKind.Number && p.Value.TryGetInt32(out var single)) return [single];
        if (p.Value.ValueKind == JsonValueKind.Array)
            return p.Value.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out var v)
                ? v : throw new UserErrorException($"{path}: \"{name}\" must hold integers")).ToArray();
        throw new UserErrorException($"{path}: \"{name}\" must be an integer or a list of integers");
    }
}
