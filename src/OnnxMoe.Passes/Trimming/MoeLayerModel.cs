using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Passes.Calibration;
using OnnxMoe.Structure;

namespace OnnxMoe.Passes.Trimming;

/// <summary>
/// One MoE layer of a lowered decoder as a standalone model, for reconstruction scoring: input
/// <see cref="Input"/> (the layer's normed input, as the graph has it), input <see cref="Mask"/> ([experts] f32,
/// added to the router logits before the softmax: 0 keeps a router column, -inf removes the expert, which
/// is exactly what pruning it does), output <see cref="Output"/> (the MoE output). The region between the
/// structure's FFN input and output, extracted from the IR; weights are shared with the source model's tensors.
/// </summary>
public static class MoeLayerModel
{
    public const string Input = "x";
    public const string Mask = "expert_mask";
    public const string Output = "moe_output";

    public static Model Extract(Model source, DecoderStructure s, int layer)
    {
        var block = s.Blocks.FirstOrDefault(x => x.Index == layer) ?? throw new ArgumentException($"no layer {layer}");
        if (block.Ffn is not { Kind: FfnKind.Moe, Moe: { } moe } ffn) throw new ArgumentException($"layer {layer} is not an MoE layer");
        var model = RegionExtractor.Extract(source, [BlockStateCache.Value(source, ffn.Input)], [BlockStateCache.Value(source, ffn.Output)]);
        var g = model.Graph;
        if (g.Inputs.Count != 1)
            throw new InvalidDataException($"layer {layer}: the MoE reads {string.Join(", ", g.Inputs.Skip(1).Select(v => v.Name))} besides its input");
        g.Inputs[0].Name = Input;
        g.Outputs[0].Name = Output;
        var router = g.Nodes.FirstOrDefault(n => n.Name == moe.RouterMatMul)
            ?? throw new InvalidDataException($"structure metadata names router node '{moe.RouterMatMul}', which layer {layer}'s MoE does not compute");
        // The router's softmax: the first Softmax reached from the router logits through casts.
        var logits = router.Outputs[0];
        Node? softmax = null;
        while (softmax == null)
        {
            var next = logits.Uses.Select(u => u.Node).ToList();
            softmax = next.FirstOrDefault(n => n.OpType == "Softmax");
            if (softmax != null) break;
            var cast = next.FirstOrDefault(n => n.OpType == "Cast")
                ?? throw new InvalidDataException($"layer {layer}: no Softmax reads the router logits of {moe.RouterMatMul}");
            logits = cast.Outputs[0];
        }
        var mask = new Value(Mask, new TensorType(DataType.Float, [moe.ExpertIds.Count]));
        g.Inputs.Add(mask);
        var b = new GraphBuilder(g);
        using (b.PushScope(ffn.Prefix + "router/expert_mask"))
            softmax.SetInput(0, b.Add(softmax.Inputs[0]!, mask));
        g.SortTopologically();
        return model;
    }
}
