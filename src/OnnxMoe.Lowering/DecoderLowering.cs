using OnnxMoe.Checkpoints;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Lowering.Families;
using OnnxMoe.Structure;

namespace OnnxMoe.Lowering;

/// <summary>Options of <see cref="DecoderLowering.Lower"/>.</summary>
public sealed record LoweringOptions
{
    /// <summary>Weight and activation element type of the artifact: f32 or f16 (norms, softmax and RoPE stay f32).</summary>
    public DataType WeightType { get; init; } = DataType.Float;
    /// <summary>Default-domain opset (21..23).</summary>
    public int Opset { get; init; } = 21;
}

/// <summary>The lowered decoder: the IR model (weights still lazy over the checkpoint), the spec it was built from, and its structure metadata.</summary>
public sealed record LoweredModel(Model Model, DecoderSpec Spec, DecoderStructure Structure);

/// <summary>
/// The one decoder lowering shared by every family: HF checkpoint -> ONNX IR with ORT GenAI I/O,
/// KV cache, causal+padding mask, GQA, RoPE, and MoE as a routed subgraph in standard ONNX ops
/// (only the selected experts' FLOPs). Conventions: src/OnnxMoe.Structure/GRAPH-CONVENTIONS.md.
/// </summary>
public static class DecoderLowering
{
    public static LoweredModel Lower(CheckpointFolder checkpoint, LoweringOptions? options = null)
    {
        options ??= new LoweringOptions();
        var family = ModelFamilies.ForConfig(checkpoint.Config);
        var spec = family.ReadSpec(checkpoint.Config);
        return Lower(checkpoint, spec, options);
    }

    public static LoweredModel Lower(CheckpointFolder checkpoint, DecoderSpec spec, LoweringOptions options)
    {
        if (options.WeightType is not (DataType.Float or DataType.Float16))
            throw new UserErrorException($"--dtype must be fp32 or fp16, not {options.WeightType.Name()}");
        if (options.Opset is < 21 or > 23) throw new UserErrorException($"opset {options.Opset} is not supported (21..23)");
        CheckpointConsistency.Check(checkpoint, spec);
        var graph = new Graph("onnxmoe_decoder");
        var model = new Model(graph) { IrVersion = 10, ProducerName = "onnxmoe", ProducerVersion = "0.1.0" };
        model.SetOpset("", options.Opset);
        var structure = new Builder(checkpoint, spec, options, graph).Build();
        structure.WriteTo(model);
        return new LoweredModel(model, spec, structure);
    }

    /// <summary>Holds the state of one lowering run.</summary>
    private sealed class Builder(CheckpointFolder ckpt, DecoderSpec spec, LoweringOptions options, Graph graph)
    {
        private readonly GraphBuilder b = new(graph);
        private readonly DataType dt = options.WeightType;
        private readonly ModelFamily fam = spec.Family;
        private Value _cos = null!, _sin = null!, _mask = null!;

        public DecoderStructure Build()
        {
            var structure = new DecoderStructure
            {
                Family = fam.Name,
                Architecture = spec.Architecture,
                VocabSize = spec.VocabSize,
                HiddenSize = spec.HiddenSize,
                NumAttentionHeads = spec.NumAttentionHeads,
                NumKeyValueHeads = spec.NumKeyValueHeads,
                HeadDim = spec.HeadDim,
                RopeTheta = spec.RopeTheta,
                MaxPositionEmbeddings = spec.ContextLength,
                ComputeType = dt.Name(),
            };
            var inputIds = b.AddInput("input_ids", DataType.Int64, "batch_size", "sequence_length");
            var attentionMask = b.AddInput("attention_mask", DataType.Int64, "batch_size", "total_sequence_length");
            var positionIds = b.AddInput("position_ids", DataType.Int64, "batch_size", "sequence_length");
            var past = new (Value K, Value V)[spec.NumLayers];
            for (int i = 0; i < spec.NumLayers; i++)
                past[i] = (b.AddInput($"past_key_values.{i}.key", dt, "batch_size", spec.NumKeyValueHeads, "past_sequence_length", spec.HeadDim),
                           b.AddInput($"past_key_values.{i}.value", dt, "batch_size", spec.NumKeyValueHeads, "past_sequence_length", spec.HeadDim));

            Value h;
            using (b.PushScope("model/embed_tokens"))
            {
                var embed = Weight(fam.EmbedTokens, WeightConversion.Convert(Get(fam.EmbedTokens, spec.VocabSize, spec.HiddenSize), dt));
                h = b.Gather(embed, inputIds);
            }
            structure.EmbeddingOutput = h.Name;
            BuildRotary(positionIds);
            BuildMask(inputIds, attentionMask);
            structure.AttentionBias = _mask.Name;

            var presents = new List<(Value K, Value V)>();
            for (int i = 0; i < spec.NumLayers; i++)
            {
                var (block, next, present) = BuildBlock(spec.Layers[i], h, past[i]);
                structure.Blocks.Add(block);
                presents.Add(present);
                h = next;
            }

            Value logits;
            using (b.PushScope("model/norm"))
            {
                int before = graph.NodeCount;
                h = RmsNorm(h, Get(fam.FinalNorm, spec.HiddenSize), fam.FinalNorm);
                structure.FinalNormInputNode = graph.Nodes.Skip(before).First().Name;
            }
            using (b.PushScope("lm_head"))
            {
                var source = spec.TieWordEmbeddings && !ckpt.Contains(fam.LmHead)
                    ? Get(fam.EmbedTokens, spec.VocabSize, spec.HiddenSize)
                    : Get(fam.LmHead, spec.VocabSize, spec.HiddenSize);
                logits = b.Cast(b.MatMul(h, Weight(fam.LmHead, WeightConversion.TransposeLinear(source, dt))), DataType.Float);
            }
            b.AddOutput(logits, "logits", "batch_size", "sequence_length", spec.VocabSize);
            for (int i = 0; i < presents.Count; i++)
            {
                b.AddOutput(presents[i].K, $"present.{i}.key", "batch_size", spec.NumKeyValueHeads, "total_sequence_length", spec.HeadDim);
                b.AddOutput(presents[i].V, $"present.{i}.value", "batch_size", spec.NumKeyValueHeads, "total_sequence_length", spec.HeadDim);
            }
            return structure;
        }

        // ---- weights ----

        private FileTensor Get(string name, params long[] shape) => ckpt.GetTensor(name, shape);
        private Value Weight(string name, Tensor t) => b.AddInitializer(name, t);

        /// <summary>y = x W^T (+ bias) with the HF [out, in] weight stored transposed; node {scope}/MatMul.</summary>
        private Value Linear(Value x, string weightName, long outDim, long inDim, string? biasName = null)
        {
            var w = Weight(weightName, WeightConversion.TransposeLinear(Get(weightName, outDim, inDim), dt));
            var y = b.MatMul(x, w);
            if (biasName != null) y = b.Add(y, Weight(biasName, WeightConversion.Convert(Get(biasName, outDim), dt)));
            return y;
        }

        // ---- shared pieces ----

        /// <summary>x * rsqrt(mean(x^2) + eps) in f32, cast back, times the weight (as HF does).</summary>
        private Value RmsNorm(Value x, FileTensor weight, string weightName)
        {
            var xf = b.Cast(x, DataType.Float);
            var variance = b.ReduceMean(b.Mul(xf, xf), [-1], keepDims: true);
            var inv = b.Reciprocal(b.Sqrt(b.Add(variance, b.FloatScalar((float)spec.RmsNormEps))));
            var normed = b.Cast(b.Mul(xf, inv), dt);
            return b.Mul(normed, Weight(weightName, WeightConversion.Convert(weight, dt)));
        }

        private void BuildRotary(Value positionIds)
        {
            using var _ = b.PushScope("model/rotary_emb");
            int half = spec.HeadDim / 2;
            var invFreq = DecoderStructure.RotaryInverseFrequencies(spec.RopeTheta, spec.HeadDim);
            var pos = b.Unsqueeze(b.Cast(positionIds, DataType.Float), -1);                       // [B,S,1]
            var freqs = b.Mul(pos, b.Constant(InMemoryTensor.FromFloats([half], invFreq)));      // [B,S,D/2]
            var emb = b.Concat(-1, freqs, freqs);                                                 // [B,S,D]
            _cos = b.Unsqueeze(b.Cast(b.Cos(emb), dt), 1);                                        // [B,1,S,D]
            _sin = b.Unsqueeze(b.Cast(b.Sin(emb), dt), 1);
        }

        /// <summary>Additive f32 bias [B,1,1,S,T]: 0 where key j &lt;= past+i and attention_mask[b,j] = 1, else float.MinValue.</summary>
        private void BuildMask(Value inputIds, Value attentionMask)
        {
            using var _ = b.PushScope("model/attn_mask");
            var seq = b.Squeeze(b.Shape(inputIds, 1, 2), 0);
            var total = b.Squeeze(b.Shape(attentionMask, 1, 2), 0);
            var pastLen = b.Sub(total, seq);
            var one = b.Int64Scalar(1);
            var queryPos = b.Unsqueeze(b.Range(pastLen, total, one), 1);                          // [S,1]
            var keyPos = b.Unsqueeze(b.Range(b.Int64Scalar(0), total, one), 0);                  // [1,T]
            var causal = b.LessOrEqual(keyPos, queryPos);                                         // [S,T]
            var padding = b.Unsqueeze(b.Cast(attentionMask, DataType.Bool), 1, 2);                // [B,1,1,T]
            var allowed = b.And(padding, causal);                                                 // [B,1,S,T]
            var bias = b.Where(allowed, b.FloatScalar(0f), b.FloatScalar(float.MinValue));
            _mask = b.Unsqueeze(bias, 1);                                                         // [B,1,1,S,T]
        }

        private Value Rotate(Value x)
        {
            var halves = b.Split(x, -1, 2);
            var rotated = b.Concat(-1, b.Neg(halves[1]), halves[0]);
            return b.Add(b.Mul(x, _cos), b.Mul(rotated, _sin));
        }

        // ---- block ----

        private (BlockStructure, Value, (Value K, Value V)) BuildBlock(LayerSpec layer, Value h, (Value K, Value V) past)
        {
            int i = layer.Index;
            using var _ = b.PushScope($"model/layers.{i}");
            var block = new BlockStructure { Index = i, Input = h.Name };
            block.Attention.PastKey = past.K.Name;
            block.Attention.PastValue = past.V.Name;
            block.Attention.PresentKey = $"present.{i}.key";
            block.Attention.PresentValue = $"present.{i}.value";

            Value xn;
            using (b.PushScope("input_layernorm")) xn = RmsNorm(h, Get(fam.InputNorm(i), spec.HiddenSize), fam.InputNorm(i));
            var (attn, present) = Attention(i, xn, past, block.Attention);
            Value hAttn;
            using (b.PushScope("residual_attn")) hAttn = b.Add(h, attn);
            block.Attention.ResidualAdd = hAttn.Producer!.Name;
            block.Attention.Output = hAttn.Name;

            var ffn = new FfnStructure { NormPrefix = b.Scope + "post_attention_layernorm/" };
            Value xn2;
            using (b.PushScope("post_attention_layernorm")) xn2 = RmsNorm(hAttn, Get(fam.PostAttentionNorm(i), spec.HiddenSize), fam.PostAttentionNorm(i));
            ffn.Input = xn2.Name;
            Value f;
            if (layer.Moe is { } moe)
            {
                ffn.Kind = FfnKind.Moe;
                ffn.Prefix = b.Scope + "moe/";
                ffn.IntermediateSize = moe.IntermediateSize;
                using (b.PushScope("moe")) (f, ffn.Moe) = Moe(i, xn2, moe);
            }
            else
            {
                ffn.Kind = FfnKind.Dense;
                ffn.Prefix = b.Scope + "mlp/";
                ffn.IntermediateSize = layer.DenseIntermediateSize;
                using (b.PushScope("mlp")) f = SwiGlu(xn2, p => fam.DenseMlpWeight(i, p), layer.DenseIntermediateSize);
            }
            ffn.Output = f.Name;
            Value hOut;
            using (b.PushScope("residual_ffn")) hOut = b.Add(hAttn, f);
            ffn.ResidualAdd = hOut.Producer!.Name;
            block.Ffn = ffn;
            block.Output = hOut.Name;
            return (block, hOut, present);
        }

        private (Value, (Value K, Value V)) Attention(int i, Value x, (Value K, Value V) past, AttentionStructure info)
        {
            using var _ = b.PushScope("attn");
            int H = spec.HiddenSize, nH = spec.NumAttentionHeads, kvH = spec.NumKeyValueHeads, D = spec.HeadDim;
            Value Proj(char p, int outDim)
            {
                using var __ = b.PushScope($"{p}_proj");
                return Linear(x, fam.Attention(i, p), outDim, H, spec.QkvBias ? fam.Attention(i, p, "bias") : null);
            }
            var q = Proj('q', nH * D);
            var k = Proj('k', kvH * D);
            var v = Proj('v', kvH * D);
            if (spec.QkNorm == QkNormKind.Full)
            {
                using (b.PushScope("q_norm")) q = RmsNorm(q, Get(fam.QNorm(i), nH * D), fam.QNorm(i));
                using (b.PushScope("k_norm")) k = RmsNorm(k, Get(fam.KNorm(i), kvH * D), fam.KNorm(i));
            }
            if (spec.ClipQkv is { } c)
            {
                using var __ = b.PushScope("clip_qkv");
                var lo = b.FloatScalar(-(float)c, dt);
                var hi = b.FloatScalar((float)c, dt);
                q = b.Clip(q, lo, hi);
                k = b.Clip(k, lo, hi);
                v = b.Clip(v, lo, hi);
            }
            q = b.Reshape(q, 0, 0, nH, D);                                                        // [B,S,nH,D]
            k = b.Reshape(k, 0, 0, kvH, D);
            v = b.Reshape(v, 0, 0, kvH, D);
            if (spec.QkNorm == QkNormKind.PerHead)
            {
                using (b.PushScope("q_norm")) q = RmsNorm(q, Get(fam.QNorm(i), D), fam.QNorm(i));
                using (b.PushScope("k_norm")) k = RmsNorm(k, Get(fam.KNorm(i), D), fam.KNorm(i));
            }
            (info.QueryHeads, info.KeyHeads, info.ValueHeads) = (q.Name, k.Name, v.Name);
            q = b.Transpose(q, 0, 2, 1, 3);                                                       // [B,nH,S,D]
            k = b.Transpose(k, 0, 2, 1, 3);                                                       // [B,kvH,S,D]
            v = b.Transpose(v, 0, 2, 1, 3);
            using (b.PushScope("rotary_q")) q = Rotate(q);
            using (b.PushScope("rotary_k")) k = Rotate(k);
            Value presentK, presentV;
            using (b.PushScope("kv_cache"))
            {
                presentK = b.Concat(2, past.K, k);                                                // [B,kvH,T,D]
                presentV = b.Concat(2, past.V, v);
            }
            Value ctx;
            using (b.PushScope("sdpa"))
            {
                // Grouped-query attention by broadcasting: q [B,kvH,rep,S,D] x k^T [B,kvH,1,D,T].
                int rep = nH / kvH;
                var q5 = b.Reshape(q, 0, kvH, rep, -1, D);
                var kT = b.Transpose(b.Unsqueeze(presentK, 2), 0, 1, 2, 4, 3);
                var scores = b.Cast(b.MatMul(q5, kT), DataType.Float);
                scores = b.Add(b.Mul(scores, b.FloatScalar((float)(1.0 / Math.Sqrt(D)))), _mask);
                var probs = b.Cast(b.Softmax(scores, -1), dt);
                var out5 = b.MatMul(probs, b.Unsqueeze(presentV, 2));                            // [B,kvH,rep,S,D]
                var heads = b.Transpose(b.Reshape(out5, 0, nH, -1, D), 0, 2, 1, 3);               // [B,S,nH,D]
                ctx = b.Reshape(heads, 0, 0, nH * D);
            }
            info.Context = ctx.Name;
            Value o;
            using (b.PushScope("o_proj")) o = Linear(ctx, fam.Attention(i, 'o'), H, nH * D, spec.OutputBias ? fam.Attention(i, 'o', "bias") : null);
            return (o, (presentK, presentV));
        }

        /// <summary>down(silu(gate x) * up x) with nodes w1/MatMul, w3/MatMul, act/*, w2/MatMul under the current scope.</summary>
        private Value SwiGlu(Value x, Func<FfnProjection, string> name, int inter)
        {
            int H = spec.HiddenSize;
            Value g, u, a;
            using (b.PushScope("w1")) g = Linear(x, name(FfnProjection.Gate), inter, H);
            using (b.PushScope("w3")) u = Linear(x, name(FfnProjection.Up), inter, H);
            using (b.PushScope("act")) a = b.Mul(b.Mul(g, b.Sigmoid(g)), u);
            using (b.PushScope("w2")) return Linear(a, name(FfnProjection.Down), H, inter);
        }

        private (Value, MoeStructure) Moe(int i, Value x, MoeSpec moe)
        {
            int H = spec.HiddenSize, E = moe.NumExperts;
            var info = new MoeStructure { ExpertIds = Enumerable.Range(0, E).ToList(), TopK = moe.TopK, NormTopKProb = moe.NormTopKProb };
            var flat = b.Reshape(x, -1, H);                                                       // [T,H]
            Value weights, expertIds;
            using (b.PushScope("router"))
            {
                var logits = Linear(flat, fam.RouterWeight(i), E, H);                             // [T,E]
                info.RouterMatMul = (logits.Producer!).Name;
                var probs = b.Softmax(b.Cast(logits, DataType.Float), -1);
                var kConst = b.AddInitializer(b.Scope + "top_k", InMemoryTensor.FromInt64s([1], [moe.TopK]));
                var (topValues, topIndices) = b.TopK(probs, kConst);                              // [T,k]
                info.TopKNode = topValues.Producer!.Name;
                if (moe.NormTopKProb) topValues = b.Div(topValues, b.ReduceSum(topValues, [-1], keepDims: true));
                weights = b.Cast(topValues, dt);
                var table = b.AddInitializer(b.Scope + "expert_ids", InMemoryTensor.FromInt64s([E], info.ExpertIds.Select(e => (long)e).ToArray()));
                info.ExpertIdTable = table.Name;
                expertIds = b.Gather(table, topIndices);                                          // [T,k] original expert ids
            }
            // The scatter-add accumulator is f32 (ORT CPU has no f16 ScatterND add, and f32 sums are more accurate).
            var acc = b.ConstantOfShape(b.Shape(flat), GraphBuilder.FloatTensor(DataType.Float, [1], [0f]));
            info.AccumulatorInit = acc.Producer!.Name;
            for (int e = 0; e < E; e++)
            {
                using var _ = b.PushScope($"experts.{e}");
                var id = b.AddInitializer(b.Scope + "expert_id", InMemoryTensor.FromInt64s([], [e]));
                var hit = b.Cast(b.Equal(expertIds, id), dt);                                     // [T,k] 0/1
                var tokenWeight = b.ReduceSum(b.Mul(hit, weights), [1], keepDims: false);         // [T]
                var routed = b.ReduceMax(hit, [1], keepDims: false);                              // [T] 1 where routed
                var tokens = b.Reshape(b.NonZero(routed), -1);                                    // [n]
                var xs = b.Gather(flat, tokens);                                                  // [n,H]
                var y = SwiGlu(xs, p => fam.ExpertWeight(i, e, p), moe.IntermediateSize);         // [n,H]
                var yw = b.Mul(y, b.Unsqueeze(b.Gather(tokenWeight, tokens), 1));
                acc = b.ScatterND(acc, b.Unsqueeze(tokens, 1), b.Cast(yw, DataType.Float), "add");
            }
            acc = b.Cast(acc, dt);
            if (moe.Shared is { } shared)
            {
                info.SharedExpert = new SharedExpertStructure { IntermediateSize = shared.IntermediateSize, Count = shared.Count, Gated = shared.Gated };
                Value s;
                using (b.PushScope("shared_experts")) s = SwiGlu(flat, p => fam.SharedExpertWeight(i, p), shared.IntermediateSize);
                if (shared.Gated)
                    using (b.PushScope("shared_expert_gate"))
                        s = b.Mul(s, b.Sigmoid(Linear(flat, fam.SharedExpertGateWeight(i), 1, H)));
                using (b.PushScope("shared_experts")) acc = b.Add(acc, s);
            }
            return (b.Reshape(acc, b.Shape(x)), info);
        }
    }
}
