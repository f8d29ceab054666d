using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxMoe.Checkpoints;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Lowering.Families;

namespace OnnxMoe.Lowering;

/// <summary>Shape of a random checkpoint. Null <see cref="NumLayers"/> derives it from <see cref="TargetBytes"/>.</summary>
public sealed record RandomCheckpointOptions
{
    /// <summary>Family name (mixtral, deepseek-moe, qwen2-moe, qwen3-moe, olmoe).</summary>
    public required string Family { get; init; }
    /// <summary>Approximate total weight bytes; used when <see cref="NumLayers"/> is null.</summary>
    public long TargetBytes { get; init; } = 64L << 20;
    /// <summary>Element type of the weights: f32, f16 or bf16.</summary>
    public DataType DType { get; init; } = DataType.BFloat16;
    public int Seed { get; init; } = 1;
    public int? NumLayers { get; init; }
    public int HiddenSize { get; init; } = 1024;
    public int NumAttentionHeads { get; init; } = 16;
    public int NumKeyValueHeads { get; init; } = 4;
    public int NumExperts { get; init; } = 8;
    public int TopK { get; init; } = 2;
    /// <summary>Routed-expert width; dense and shared widths are derived from it.</summary>
    public int IntermediateSize { get; init; } = 2816;
    public int VocabSize { get; init; } = 32000;
    public bool TieWordEmbeddings { get; init; }
    /// <summary>Shard size cap; more than one shard writes model.safetensors.index.json.</summary>
    public long ShardBytes { get; init; } = 2L << 30;
}

/// <summary>
/// Writes a random Hugging Face checkpoint folder (config.json + safetensors, sharded when large)
/// of a family, streaming: each tensor's values are generated chunk by chunk as the file is written,
/// so memory stays small whatever the size. Same options, same bytes.
/// </summary>
public static class RandomCheckpointGenerator
{
    public static DecoderSpec Generate(string directory, RandomCheckpointOptions o)
    {
        var family = ModelFamilies.FindByName(o.Family)
            ?? throw new UserErrorException($"unknown family '{o.Family}'; supported: {string.Join(", ", ModelFamilies.All.Select(f => f.Name))}");
        if (o.DType is not (DataType.Float or DataType.Float16 or DataType.BFloat16))
            throw new UserErrorException($"random checkpoints are f32, f16 or bf16, not {o.DType.Name()}");
        int layers = o.NumLayers ?? LayersFor(family, o);
        var config = Config(family, o, layers);
        Directory.CreateDirectory(directory);
        string configJson = config.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        var spec = family.ReadSpec(HfConfig.Parse(configJson, Path.Combine(directory, "config.json")));
        var tensors = CheckpointLayout.ExpectedTensors(spec)
            .Select((t, index) => new KeyValuePair<string, Tensor>(t.Name, new RandomTensor(o.DType, t.Shape, Seed(o.Seed, t.Name), Kind(t.Name, t.Shape))))
            .ToList();

        var shards = new List<List<KeyValuePair<string, Tensor>>> { new() };
        long size = 0;
        foreach (var t in tensors)
        {
            if (size > 0 && size + t.Value.ByteLength > o.ShardBytes) { shards.Add(new()); size = 0; }
            shards[^1].Add(t);
            size += t.Value.ByteLength;
        }
        if (shards.Count == 1) SafetensorsWriter.Write(Path.Combine(directory, "model.safetensors"), shards[0], new Dictionary<string, string> { ["format"] = "pt" });
        else
        {
            var map = new JsonObject();
            for (int s = 0; s < shards.Count; s++)
            {
                string file = $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
                SafetensorsWriter.Write(Path.Combine(directory, file), shards[s], new Dictionary<string, string> { ["format"] = "pt" });
                foreach (var t in shards[s]) map[t.Key] = file;
            }
            var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = tensors.Sum(t => t.Value.ByteLength) }, ["weight_map"] = map };
            File.WriteAllText(Path.Combine(directory, CheckpointFolder.IndexFileName), index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        File.WriteAllText(Path.Combine(directory, "config.json"), configJson);
        return spec;
    }

    private static int LayersFor(ModelFamily family, RandomCheckpointOptions o)
    {
        var one = family.ReadSpec(HfConfig.Parse(Config(family, o, 1).ToJsonString()));
        var two = family.ReadSpec(HfConfig.Parse(Config(family, o, 2).ToJsonString()));
        long bytesPerParam = o.DType.ByteCount(1);
        long fixedBytes = (2 * CheckpointLayout.ParameterCount(one) - CheckpointLayout.ParameterCount(two)) * bytesPerParam;
        long perLayer = (CheckpointLayout.ParameterCount(two) - CheckpointLayout.ParameterCount(one)) * bytesPerParam;
        return (int)Math.Max(1, Math.Round((double)(o.TargetBytes - fixedBytes) / perLayer));
    }

    /// <summary>A config.json for <paramref name="family"/> with the given dimensions.</summary>
    public static JsonObject Config(ModelFamily family, RandomCheckpointOptions o, int layers)
    {
        var c = new JsonObject
        {
            ["architectures"] = new JsonArray(family.Architecture),
            ["model_type"] = family.ModelType,
            ["hidden_size"] = o.HiddenSize,
            ["num_hidden_layers"] = layers,
            ["num_attention_heads"] = o.NumAttentionHeads,
            ["num_key_value_heads"] = o.NumKeyValueHeads,
            ["vocab_size"] = o.VocabSize,
            ["rms_norm_eps"] = 1e-6,
            ["rope_theta"] = 10000.0,
            ["max_position_embeddings"] = 4096,
            ["tie_word_embeddings"] = o.TieWordEmbeddings,
            ["num_experts_per_tok"] = o.TopK,
            ["bos_token_id"] = 1,
            ["eos_token_id"] = 2,
            ["torch_dtype"] = o.DType switch { DataType.Float => "float32", DataType.Float16 => "float16", _ => "bfloat16" },
        };
        switch (family)
        {
            case MixtralFamily:
                c["num_local_experts"] = o.NumExperts;
                c["intermediate_size"] = o.IntermediateSize;
                break;
            case DeepSeekMoeFamily:
                c["n_routed_experts"] = o.NumExperts;
                c["moe_intermediate_size"] = o.IntermediateSize;
                c["intermediate_size"] = o.IntermediateSize * 4;
                c["n_shared_experts"] = 2;
                c["first_k_dense_replace"] = 1;
                c["moe_layer_freq"] = 1;
                c["norm_topk_prob"] = false;
                c["scoring_func"] = "softmax";
                c["attention_bias"] = false;
                break;
            case Qwen2MoeFamily:
                c["num_experts"] = o.NumExperts;
                c["moe_intermediate_size"] = o.IntermediateSize;
                c["intermediate_size"] = o.IntermediateSize * 4;
                c["shared_expert_intermediate_size"] = o.IntermediateSize * 2;
                c["decoder_sparse_step"] = 1;
                c["mlp_only_layers"] = new JsonArray();
                c["norm_topk_prob"] = false;
                break;
            case Qwen3MoeFamily:
                c["num_experts"] = o.NumExperts;
                c["moe_intermediate_size"] = o.IntermediateSize;
                c["intermediate_size"] = o.IntermediateSize * 4;
                c["decoder_sparse_step"] = 1;
                c["mlp_only_layers"] = new JsonArray();
                c["norm_topk_prob"] = true;
                c["head_dim"] = o.HiddenSize / o.NumAttentionHeads;
                c["attention_bias"] = false;
                break;
            case OlmoeFamily:
                c["num_experts"] = o.NumExperts;
                c["intermediate_size"] = o.IntermediateSize;
                c["norm_topk_prob"] = false;
                c["clip_qkv"] = null;
                break;
            default:
                throw new ArgumentException($"no config template for {family.Name}");
        }
        return c;
    }

    private enum ValueKind { Linear, Norm, Bias }

    private static ValueKind Kind(string name, long[] shape) =>
        name.EndsWith(".bias", StringComparison.Ordinal) ? ValueKind.Bias : shape.Length == 1 ? ValueKind.Norm : ValueKind.Linear;

    private static ulong Seed(int seed, string name)
    {
        ulong h = 14695981039346656037UL ^ (ulong)seed;
        foreach (char ch in name) h = (h ^ ch) * 1099511628211UL;
        return h == 0 ? 1 : h;
    }

    /// <summary>Deterministic pseudo-random values (xorshift64*), generated chunk by chunk when written.</summary>
    private sealed class RandomTensor : Tensor
    {
        private readonly ulong _seed;
        private readonly ValueKind _kind;

        public RandomTensor(DataType type, long[] shape, ulong seed, ValueKind kind) : base(type, shape)
        {
            _seed = seed;
            _kind = kind;
        }

        public override bool IsMaterialized => false;

        public override ReadOnlySpan<byte> GetBytes()
        {
            using var ms = new MemoryStream((int)ByteLength);
            WriteTo(ms);
            return ms.ToArray();
        }

        public override void WriteTo(Stream destination)
        {
            float scale = _kind switch
            {
                ValueKind.Linear => (float)(1.0 / Math.Sqrt(Shape[^1])),
                ValueKind.Bias => 0.05f,
                _ => 0.1f,
            };
            float offset = _kind == ValueKind.Norm ? 1f : 0f;
            ulong state = _seed;
            const int Chunk = 1 << 20;
            var f = new float[Chunk];
            var bytes = new byte[Chunk * 4];
            for (long done = 0; done < ElementCount;)
            {
                int n = (int)Math.Min(Chunk, ElementCount - done);
                for (int k = 0; k < n; k++)
                {
                    state ^= state >> 12; state ^= state << 25; state ^= state >> 27;
                    ulong r = state * 2685821657736338717UL;
                    f[k] = offset + scale * ((r >> 40) * (2.0f / (1 << 24)) - 1f);
                }
                int len = (int)DataType.ByteCount(n);
                var span = f.AsSpan(0, n);
                switch (DataType)
                {
                    case DataType.Float: MemoryMarshal.AsBytes(span).CopyTo(bytes); break;
                    case DataType.Float16: System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(span, MemoryMarshal.Cast<byte, Half>(bytes.AsSpan(0, len))); break;
                    default:
                        var bf = MemoryMarshal.Cast<byte, ushort>(bytes.AsSpan(0, len));
                        for (int k = 0; k < n; k++) bf[k] = (ushort)(BitConverter.SingleToUInt32Bits(span[k]) >> 16);
                        break;
                }
                destination.Write(bytes, 0, len);
                done += n;
            }
        }
    }
}
