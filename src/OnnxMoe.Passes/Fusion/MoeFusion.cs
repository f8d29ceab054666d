using System.Buffers;
using System.Runtime.InteropServices;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Passes.Trimming;
using OnnxMoe.Structure;
using Attribute = OnnxMoe.Ir.Attribute;

namespace OnnxMoe.Passes.Fusion;

/// <summary>
/// Rewrites one MoE layer's routed experts (the standard form of GRAPH-CONVENTIONS.md: router TopK, one
/// Gather/MatMul/ScatterND branch per expert) into one com.microsoft node that routes, runs the selected experts
/// and sums their weighted outputs: <c>MoE</c> for float experts, <c>QMoE</c> for experts already quantized to
/// MatMulNBits. The node reads the router's logits (it takes the softmax over the experts and the top-k itself,
/// renormalising when the layer does), SwiGLU with the gate and up rows interleaved (swiglu_fusion=1, row 2i = gate
/// row i, row 2i+1 = up row i: the only form ORT's CPU kernels take), alpha 1 and beta 0 so that it computes
/// silu(gate) * up. Stacked weights are lazy: each expert's bytes are read when the writer streams them.
/// Shared experts and the Qwen2-MoE shared-expert gate stay standard ops and add to the node's output.
/// </summary>
internal static class MoeFusion
{
    public const string Domain = "com.microsoft";

    private sealed record ExpertLinears(Node Gate, Node Up, Node Down);

    /// <summary>Fuses <paramref name="block"/>'s routed experts; returns null when done, else why the layer keeps standard ops.
    /// Float experts become an MoE node only when <paramref name="floatExperts"/> is set; otherwise such a layer returns "" (left
    /// as it is by choice, not for a reason).</summary>
    public static string? Fuse(DecoderSurgery s, BlockStructure block, bool floatExperts)
    {
        var ffn = block.Ffn!;
        var moe = ffn.Moe!;
        var router = s.NodeNamed(moe.RouterMatMul);
        var flat = router.Inputs[0]!;
        var logits = router.Outputs[0];
        var type = flat.ElementType ?? DataType.Undefined;
        if (type is not (DataType.Float or DataType.Float16)) return $"its activations are {type.Name()}, not f32 or f16";

        // The layer's nodes by name, gathered once (an expert's linears are MatMul or, quantized, MatMulNBits).
        var layer = new Dictionary<string, Node>(StringComparer.Ordinal);
        foreach (var n in s.Graph.Nodes) if (n.Name.StartsWith(ffn.Prefix, StringComparison.Ordinal)) layer.TryAdd(n.Name, n);
        var experts = new List<ExpertLinears>();
        foreach (var e in moe.ExpertIds)
        {
            var scope = ffn.ExpertScope(e);
            Node? Find(string proj) => layer.GetValueOrDefault($"{scope}{proj}/MatMul") ?? layer.GetValueOrDefault($"{scope}{proj}/MatMulNBits");
            if (Find("w1") is not { } gate || Find("w3") is not { } up || Find("w2") is not { } down)
                return $"expert {e} has no w1/w3/w2 linear layers under {scope}";
            experts.Add(new ExpertLinears(gate, up, down));
        }
        var lastScatter = s.NodeWithPrefix(ffn.ExpertScope(moe.ExpertIds[^1]), "ScatterND");

        var names = NameAuthority.ForGraph(s.Graph);
        var anchor = experts[0].Gate.Inputs[1]!;
        Node fused;
        if (experts.All(x => IsFloatLinear(x.Gate) && IsFloatLinear(x.Up) && IsFloatLinear(x.Down)))
        {
            if (!floatExperts) return "";
            if (experts.SelectMany(x => new[] { x.Gate, x.Up, x.Down }).Any(n => n.Inputs[1]!.ConstValue!.DataType != type))
                return $"its expert weights are not all {type.Name()} like its activations";
            var fc1 = s.AddInitializerBefore(anchor, StackFc1Float(names.Unique($"{ffn.Prefix}experts.fc1"), experts, type));
            var fc2 = s.AddInitializerBefore(anchor, StackFc2Float(names.Unique($"{ffn.Prefix}experts.fc2"), experts, type));
            fused = NewNode("MoE", names.Unique($"{ffn.Prefix}experts/MoE"), [flat, logits, fc1, null, fc2], flat, moe);
        }
        else if (experts.All(x => x.Gate.OpType == "MatMulNBits" && x.Up.OpType == "MatMulNBits" && x.Down.OpType == "MatMulNBits"))
        {
            var why = CheckQuantized(experts, out var bits, out var blockSize, out var zeroPoints);
            if (why != null) return why;
            var fc1 = s.AddInitializerBefore(anchor, StackRows(names.Unique($"{ffn.Prefix}experts.fc1.q{bits}"), experts, 1, interleave: true));
            var fc1Scales = s.AddInitializerBefore(anchor, StackRows(names.Unique($"{ffn.Prefix}experts.fc1.scales"), experts, 2, interleave: true));
            var fc1Zero = zeroPoints ? s.AddInitializerBefore(anchor, StackRows(names.Unique($"{ffn.Prefix}experts.fc1.zero_points"), experts, 3, interleave: true)) : null;
            var fc2 = s.AddInitializerBefore(anchor, StackRows(names.Unique($"{ffn.Prefix}experts.fc2.q{bits}"), experts, 1, interleave: false));
            var fc2Scales = s.AddInitializerBefore(anchor, StackRows(names.Unique($"{ffn.Prefix}experts.fc2.scales"), experts, 2, interleave: false));
            var fc2Zero = zeroPoints ? s.AddInitializerBefore(anchor, StackRows(names.Unique($"{ffn.Prefix}experts.fc2.zero_points"), experts, 3, interleave: false)) : null;
            var name = names.Unique($"{ffn.Prefix}experts/QMoE");
            // QMoE selects the top-k of the logits and, without router_weights, mixes with the softmax over those k only (a
            // renormalised top-k). A layer without renormalisation mixes with the full softmax's probabilities instead.
            Value? routerWeights = null;
            if (!moe.NormTopKProb)
            {
                var softmax = new Node("", "Softmax", [logits], [new Value($"{name}/router_weights/output_0", logits.Type)], $"{name}/router_weights");
                softmax.SetAttribute(Attribute.Int("axis", -1));
                s.Graph.InsertBefore(lastScatter, softmax);
                routerWeights = softmax.Outputs[0];
            }
            fused = NewNode("QMoE", name,
                [flat, logits, fc1, fc1Scales, null, fc2, fc2Scales, null, null, null, null, fc1Zero, fc2Zero, null, routerWeights], flat, moe);
            fused.SetAttribute(Attribute.Int("expert_weight_bits", bits))
                .SetAttribute(Attribute.Int("block_size", blockSize))
                .SetAttribute(Attribute.Int("accuracy_level", experts[0].Gate.GetInt("accuracy_level", 0)));
        }
        else
        {
            return "its experts mix float and quantized linear layers";
        }

        s.Graph.InsertBefore(lastScatter, fused);
        var output = fused.Outputs[0];
        // The standard form accumulates in f32 and casts back; an f16 node output re-enters that cast losslessly.
        var accumulator = lastScatter.Outputs[0];
        if (accumulator.ElementType != type)
        {
            var cast = new Node("", "Cast", [output], [new Value($"{fused.Name}/Cast/output_0", new TensorType(DataType.Float, flat.Shape?.ToArray()))], $"{fused.Name}/Cast");
            cast.SetAttribute(Attribute.Int("to", (long)DataType.Float));
            s.Graph.InsertBefore(lastScatter, cast);
            output = cast.Outputs[0];
        }
        accumulator.ReplaceAllUsesWith(output);
        s.RemoveDead([lastScatter]);
        moe.FusedNode = fused.Name;
        moe.TopKNode = "";
        moe.ExpertIdTable = "";
        moe.AccumulatorInit = "";
        s.Counters.Add("experts-fused", experts.Count);
        s.Counters.Add(fused.OpType == "MoE" ? "moe-nodes" : "qmoe-nodes");
        return null;
    }

    private static Node NewNode(string opType, string name, Value?[] inputs, Value flat, MoeStructure moe)
    {
        var output = new Value($"{name}/output_0", flat.Type);
        var node = new Node(Domain, opType, inputs, [output], name);
        node.SetAttribute(Attribute.Int("k", moe.TopK))
            .SetAttribute(Attribute.String("activation_type", "swiglu"))
            .SetAttribute(Attribute.Int("swiglu_fusion", 1))
            .SetAttribute(Attribute.Float("activation_alpha", 1f))
            .SetAttribute(Attribute.Float("activation_beta", 0f))
            .SetAttribute(Attribute.Int("normalize_routing_weights", moe.NormTopKProb ? 1 : 0));
        return node;
    }

    private static bool IsFloatLinear(Node n) =>
        n.OpType == "MatMul" && n.Domain is "" && n.Inputs.Count == 2 && n.Inputs[1]?.ConstValue is { Shape.Length: 2 };

    /// <summary>Every expert linear must be MatMulNBits of one bit width, block size, accuracy level and zero-point use,
    /// with K a multiple of the block so that a row's packed bytes are exactly K * bits / 8 (QMoE's layout).</summary>
    private static string? CheckQuantized(List<ExpertLinears> experts, out int bits, out int blockSize, out bool zeroPoints)
    {
        var first = experts[0].Gate;
        bits = (int)first.GetInt("bits", 4);
        blockSize = (int)first.GetInt("block_size", 0);
        zeroPoints = HasZeroPoints(first);
        long level = first.GetInt("accuracy_level", 0);
        foreach (var n in experts.SelectMany(x => new[] { x.Gate, x.Up, x.Down }))
        {
            if (n.GetInt("bits", 4) != bits || n.GetInt("block_size", 0) != blockSize || n.GetInt("accuracy_level", 0) != level || HasZeroPoints(n) != zeroPoints)
                return $"its experts are quantized with different settings ({n.Name} differs from {first.Name})";
            if (n.Inputs[1]?.ConstValue == null || n.Inputs[2]?.ConstValue == null || zeroPoints && n.Inputs[3]!.ConstValue == null)
                return $"{n.Name} has no constant codes and scales";
            if (n.Inputs.Count > 4 && n.Inputs.Skip(4).Any(v => v != null)) return $"{n.Name} has a group index or bias input";
            if (blockSize <= 0 || n.GetInt("K", 0) % blockSize != 0) return $"{n.Name} has K={n.GetInt("K", 0)}, not a multiple of the block size {blockSize}";
        }
        if (bits is not (4 or 8)) return $"its experts are {bits}-bit; QMoE takes 4 or 8";
        return null;
    }

    private static bool HasZeroPoints(Node n) => n.Inputs.Count > 3 && n.Inputs[3] != null;

    /// <summary>fc1 [E, 2I, H]: per expert, gate^T and up^T rows interleaved (the MatMul weights are [H, I]).</summary>
    private static Tensor StackFc1Float(string name, List<ExpertLinears> experts, DataType type)
    {
        // The tensors are taken now: the nodes are gone by the time the writer asks for the bytes.
        var gates = experts.Select(x => x.Gate.Inputs[1]!.ConstValue!).ToList();
        var ups = experts.Select(x => x.Up.Inputs[1]!.ConstValue!).ToList();
        int h = checked((int)gates[0].Shape[0]), inter = checked((int)gates[0].Shape[1]);
        int rowBytes = checked((int)type.ByteCount(h)), matrixBytes = checked(inter * rowBytes);
        return Stacked(name, type, [experts.Count, 2L * inter, h], experts.Count, 2 * matrixBytes, (e, slice, scratch) =>
        {
            var gate = scratch[..matrixBytes];
            var up = scratch.Slice(matrixBytes, matrixBytes);
            Transpose(gates[e], h, inter, gate);
            Transpose(ups[e], h, inter, up);
            InterleaveRows(gate, up, inter, rowBytes, slice);
        });
    }

    /// <summary>fc2 [E, H, I]: per expert, down^T (the MatMul weight is [I, H]).</summary>
    private static Tensor StackFc2Float(string name, List<ExpertLinears> experts, DataType type)
    {
        var downs = experts.Select(x => x.Down.Inputs[1]!.ConstValue!).ToList();
        int inter = checked((int)downs[0].Shape[0]), h = checked((int)downs[0].Shape[1]);
        return Stacked(name, type, [experts.Count, h, inter], experts.Count, 0, (e, slice, _) => Transpose(downs[e], inter, h, slice));
    }

    /// <summary>Input <paramref name="input"/> (1 = packed codes [N, blocks, block bytes], 2 = scales [N, blocks], 3 = packed
    /// zero points [N, ceil(blocks * bits / 8)]) of the
    /// MatMulNBits nodes stacked per expert as [E, rows, row bytes]: fc1 interleaves gate and up rows, fc2 is down.</summary>
    private static Tensor StackRows(string name, List<ExpertLinears> experts, int input, bool interleave)
    {
        var gates = experts.Select(x => x.Gate.Inputs[input]!.ConstValue!).ToList();
        var ups = experts.Select(x => x.Up.Inputs[input]!.ConstValue!).ToList();
        var downs = experts.Select(x => x.Down.Inputs[input]!.ConstValue!).ToList();
        var first = interleave ? gates[0] : downs[0];
        long rows = first.Shape[0];
        long rowElements = first.ElementCount / rows;
        int rowBytes = checked((int)(first.ByteLength / rows));
        var shape = new[] { experts.Count, interleave ? 2 * rows : rows, rowElements };
        return Stacked(name, first.DataType, shape, experts.Count, 0, (e, slice, _) =>
        {
            if (interleave) InterleaveRows(Bytes(gates[e], first), Bytes(ups[e], first), checked((int)rows), rowBytes, slice);
            else Bytes(downs[e], first).CopyTo(slice);
        });
    }

    private static ReadOnlySpan<byte> Bytes(Tensor t, Tensor like)
    {
        if (t.DataType != like.DataType || t.ByteLength != like.ByteLength)
            throw new InvalidOperationException($"expert tensor {t.Name} is {t}, expected the layout of {like}");
        return t.GetBytes();
    }

    /// <summary>The [rows, cols] matrix <paramref name="t"/> transposed into <paramref name="destination"/> ([cols, rows]).</summary>
    private static void Transpose(Tensor t, int rows, int cols, Span<byte> destination)
    {
        var src = t.GetBytes();
        if (t.DataType.ByteCount(1) == 4) TensorKernels.Transpose(MemoryMarshal.Cast<byte, float>(src), rows, cols, MemoryMarshal.Cast<byte, float>(destination));
        else TensorKernels.Transpose(MemoryMarshal.Cast<byte, ushort>(src), rows, cols, MemoryMarshal.Cast<byte, ushort>(destination));
    }

    /// <summary>Rows a0, b0, a1, b1, ... of two [rows, rowBytes] blocks, into <paramref name="destination"/>.</summary>
    private static void InterleaveRows(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, int rows, int rowBytes, Span<byte> destination)
    {
        for (int r = 0; r < rows; r++)
        {
            a.Slice(r * rowBytes, rowBytes).CopyTo(destination.Slice(2 * r * rowBytes, rowBytes));
            b.Slice(r * rowBytes, rowBytes).CopyTo(destination.Slice((2 * r + 1) * rowBytes, rowBytes));
        }
    }

    /// <summary>
    /// A lazy [E, ...] tensor whose expert slices <paramref name="fill"/> writes (expert, its slice, a scratch buffer of
    /// <paramref name="scratchBytes"/>). The writer streams it one expert at a time through one pooled slice and scratch, so
    /// writing holds one expert's bytes, not one garbage array per expert awaiting the GC.
    /// </summary>
    private static Tensor Stacked(string name, DataType type, long[] shape, int count, int scratchBytes, SliceFiller fill)
    {
        int expertBytes = checked((int)type.ByteCount(shape.Skip(1).Aggregate(1L, (a, b) => a * b)));
        return new LazyTensor(type, shape,
            () =>
            {
                var all = new byte[checked((long)count * expertBytes)];
                var scratch = ArrayPool<byte>.Shared.Rent(Math.Max(scratchBytes, 1));
                try
                {
                    for (int e = 0; e < count; e++) fill(e, all.AsSpan(e * expertBytes, expertBytes), scratch.AsSpan(0, scratchBytes));
                }
                finally { ArrayPool<byte>.Shared.Return(scratch); }
                return all;
            },
            stream =>
            {
                var slice = ArrayPool<byte>.Shared.Rent(expertBytes);
                var scratch = ArrayPool<byte>.Shared.Rent(Math.Max(scratchBytes, 1));
                try
                {
                    for (int e = 0; e < count; e++)
                    {
                        fill(e, slice.AsSpan(0, expertBytes), scratch.AsSpan(0, scratchBytes));
                        stream.Write(slice, 0, expertBytes);
                    }
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(slice);
                    ArrayPool<byte>.Shared.Return(scratch);
                }
            }) { Name = name };
    }

    private delegate void SliceFiller(int expert, Span<byte> slice, Span<byte> scratch);
}
