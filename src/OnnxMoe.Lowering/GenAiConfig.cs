using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxMoe.Lowering.Families;

namespace OnnxMoe.Lowering;

/// <summary>genai_config.json in ONNX Runtime GenAI's format for a lowered decoder (KV cache by concat, so no shared past/present buffer).</summary>
public static class GenAiConfig
{
    /// <param name="numLayers">KV-cache layers in the graph (after block drop, fewer than the spec's).</param>
    public static JsonObject Build(DecoderSpec spec, string modelFileName = "model.onnx", int? numLayers = null)
    {
        int eos = spec.EosTokenIds.Count > 0 ? spec.EosTokenIds[0] : 0;
        JsonNode eosNode = spec.EosTokenIds.Count > 1 ? new JsonArray(spec.EosTokenIds.Select(e => (JsonNode)JsonValue.Create(e)).ToArray()) : JsonValue.Create(eos);
        return new JsonObject
        {
            ["model"] = new JsonObject
            {
                ["bos_token_id"] = spec.BosTokenId ?? 0,
                ["context_length"] = spec.ContextLength,
                ["decoder"] = new JsonObject
                {
                    ["session_options"] = new JsonObject { ["log_id"] = "onnxruntime-genai", ["provider_options"] = new JsonArray() },
                    ["filename"] = modelFileName,
                    ["head_size"] = spec.HeadDim,
                    ["hidden_size"] = spec.HiddenSize,
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
                    ["num_attention_heads"] = spec.NumAttentionHeads,
                    ["num_hidden_layers"] = numLayers ?? spec.NumLayers,
                    ["num_key_value_heads"] = spec.NumKeyValueHeads,
                },
                ["eos_token_id"] = eosNode,
                ["pad_token_id"] = spec.PadTokenId ?? eos,
                ["type"] = spec.Family.ModelType,
                ["vocab_size"] = spec.VocabSize,
            },
            ["search"] = new JsonObject
            {
                ["diversity_penalty"] = 0.0,
                ["do_sample"] = false,
                ["early_stopping"] = true,
                ["length_penalty"] = 1.0,
                ["max_length"] = spec.ContextLength,
                ["min_length"] = 0,
                ["no_repeat_ngram_size"] = 0,
                ["num_beams"] = 1,
                ["num_return_sequences"] = 1,
                ["past_present_share_buffer"] = false,
                ["repetition_penalty"] = 1.0,
                ["temperature"] = 1.0,
                ["top_k"] = 1,
                ["top_p"] = 1.0,
            },
        };
    }

    public static string ToJson(DecoderSpec spec, string modelFileName = "model.onnx", int? numLayers = null) =>
        Build(spec, modelFileName, numLayers).ToJsonString(new JsonSerializerOptions { WriteIndented = true });
}
