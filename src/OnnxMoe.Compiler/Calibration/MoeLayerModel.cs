using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Structure;

namespace OnnxMoe.Compiler.Calibration;

/// <summary>
/// One MoE layer of a lowered decoder as a standalone model, for reconstruction scoring: input
/// <see cref="Input"/> (the layer's normed input, [tokens, hidden]), input <see cref="Mask"/> ([experts] f32,
/// added to the router logits before the softmax: 0 keeps a router column, -inf removes the expert, which
/// is exactly what pruning it does), output <see cref="Output"/> (the MoE output). Nodes are copies of the
/// layer's nodes (its node-name prefix); weights are shared with the source model's tensors.
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
        var src = source.Graph;
        var g = new Graph($"moe_layer_{layer}");
        var model = new Model(g) { IrVersion = source.IrVersion, ProducerName = "onnxmoe" };
        foreach (var o in source.OpsetImports) model.SetOpset(o.Domain, o.Version);

        var map = new Dictionary<Value, Value>(ReferenceEqualityComparer.Instance);
        var srcNodes = src.Nodes.Where(n => n.Name.StartsWith(ffn.Prefix, StringComparison.Ordinal)).ToList();
        var ffnInput = srcNodes.SelectMany(n => n.Inputs).FirstOrDefault(v => v?.Name == ffn.Input)
            ?? throw new InvalidDataException($"layer {layer}: no node under {ffn.Prefix} reads the MoE input {ffn.Input}");
        var elem = ffnInput.ElementType ?? (s.ComputeType == "f16" ? DataType.Float16 : DataType.Float);
        var x = new Value(Input, new TensorType(elem, [new Dim(null, "tokens"), s.HiddenSize]));
        g.Inputs.Add(x);
        map[ffnInput] = x;
        var mask = new Value(Mask, new TensorType(DataType.Float, [moe.ExpertIds.Count]));
        g.Inputs.Add(mask);

        Value Map(Value v)
        {
            if (map.TryGetValue(v, out var m)) return m;
            if (v.ConstValue != null)
            {
                var c = new Value(v.Name, v.Type, v.ConstValue);
                g.AddInitializer(c);
                return map[v] = c;
            }
            throw new InvalidDataException($"layer {layer}: the MoE reads {v.Name}, which is produced outside {ffn.Prefix}");
        }

        Value? softmaxInput = null;
        foreach (var n in srcNodes)
        {
            var outputs = n.Outputs.Select(o => new Value(o.Name, o.Type)).ToList();
            var copy = new Node(n.Domain, n.OpType, n.Inputs.Select(v => v == null ? null : Map(v)), outputs, n.Name);
            foreach (var a in n.Attributes) copy.SetAttribute(a);
            g.Append(copy);
            for (int k = 0; k < outputs.Count; k++) map[n.Outputs[k]] = outputs[k];
            if (n.OpType == "Softmax" && n.Name.StartsWith(ffn.Prefix + "router/", StringComparison.Ordinal)) softmaxInput = copy.Inputs[0];
        }
        var softmax = g.Nodes.FirstOrDefault(n => n.OpType == "Softmax" && n.Name.StartsWith(ffn.Prefix + "router/", StringComparison.Ordinal))
            ?? throw new InvalidDataException($"layer {layer}: no router Softmax under {ffn.Prefix}router/");
        var b = new GraphBuilder(g);
        using (b.PushScope(ffn.Prefix + "router/expert_mask"))
        {
            var masked = b.Add(softmaxInput!, mask);
            softmax.SetInput(0, masked);
        }
        g.SortTopologically();
        var output = map.TryGetValue(srcNodes.SelectMany(n => n.Outputs).First(o => o.Name == ffn.Output), out var y) ? y
            : throw new InvalidDataException($"layer {layer}: MoE output {ffn.Output} is not under {ffn.Prefix}");
        b.AddOutput(output, Output, new Dim(null, "tokens"), s.HiddenSize);
        return model;
    }
}
