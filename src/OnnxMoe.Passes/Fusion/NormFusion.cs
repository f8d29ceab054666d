using OnnxMoe.Ir;
using OnnxMoe.Passes.Trimming;
using Attribute = OnnxMoe.Ir.Attribute;

namespace OnnxMoe.Passes.Fusion;

/// <summary>
/// Rewrites every RMSNorm of the standard form (GRAPH-CONVENTIONS.md: Cast to f32 when the graph is f16, Mul(x, x),
/// ReduceMean over the last axis, Add(eps), Sqrt, Reciprocal, Mul, Cast back, Mul(weight)) into one ONNX-domain
/// <c>SimplifiedLayerNormalization</c> (ONNX Runtime's RMSNorm kernel; statistics in f32, stash_type 1). Found by the op
/// chain, not by names: block norms, the final norm and q/k norms alike. The norm's output value keeps its name, so the
/// structure metadata still finds it. <see cref="SkipNormFusion"/> then folds the residual Add before a block norm or the final
/// norm into it.
/// </summary>
internal static class NormFusion
{
    /// <summary>Fuses every RMSNorm chain in the graph; returns how many.</summary>
    public static int Run(DecoderSurgery s)
    {
        int fused = 0;
        var names = NameAuthority.ForGraph(s.Graph);
        foreach (var mean in s.Graph.Nodes.Where(n => n.OpType == "ReduceMean" && n.Domain == "").ToList())
        {
            if (mean.Graph == null || Match(mean) is not { } m) continue;
            var output = m.Scale.Outputs[0];
            var name = output.Name;
            output.Name = names.Unique(name + "/standard");
            var y = new Value(name, output.Type);
            // The node takes the scope of the chain's last Mul (e.g. /model/layers.3/post_attention_layernorm/).
            var scope = m.Scale.Name[..(m.Scale.Name.LastIndexOf('/') + 1)];
            var node = new Node("", "SimplifiedLayerNormalization", [m.Input, m.Weight], [y], names.Unique(scope + "SimplifiedLayerNormalization"));
            SetAttributes(node, m.Epsilon);
            s.Graph.InsertBefore(m.Scale, node);
            output.ReplaceAllUsesWith(y);
            // The structure names the final norm by its first node (input 0 = the last block's output): now the fused node.
            if (m.First.Name == s.Structure.FinalNormInputNode) s.Structure.FinalNormInputNode = node.Name;
            s.RemoveDead([m.Scale]);
            fused++;
        }
        if (fused > 0)
        {
            s.InvalidateNames();
            s.Counters.Add("norms-fused", fused);
        }
        return fused;
    }

    /// <summary>The last axis, <paramref name="epsilon"/>, f32 statistics.</summary>
    public static void SetAttributes(Node norm, float epsilon) =>
        norm.SetAttribute(Attribute.Int("axis", -1)).SetAttribute(Attribute.Float("epsilon", epsilon)).SetAttribute(Attribute.Int("stash_type", 1));

    /// <summary>A matched chain: its input, weight and epsilon, its first node (the f32 Cast, or the square) and its last (the weight Mul).</summary>
    private sealed record Chain(Value Input, Value Weight, float Epsilon, Node First, Node Scale);

    /// <summary>The RMSNorm chain around <paramref name="mean"/>, or null when it is not exactly one.</summary>
    private static Chain? Match(Node mean)
    {
        if (mean.GetInt("keepdims", 1) != 1 || !LastAxisOnly(mean)) return null;
        if (mean.Inputs[0]?.Producer is not { OpType: "Mul", Domain: "" } square || square.Inputs.Count != 2 || !ReferenceEquals(square.Inputs[0], square.Inputs[1]))
            return null;
        var xf = square.Inputs[0]!;
        if (Single(mean.Outputs[0]) is not { OpType: "Add" } addEps || Scalar(addEps, mean.Outputs[0]) is not { } eps) return null;
        if (Single(addEps.Outputs[0]) is not { OpType: "Sqrt" } sqrt) return null;
        if (Single(sqrt.Outputs[0]) is not { OpType: "Reciprocal" } reciprocal) return null;
        if (Single(reciprocal.Outputs[0]) is not { OpType: "Mul" } normalize || !normalize.Inputs.Contains(xf)) return null;
        var x = xf.Producer is { OpType: "Cast" } up && up.GetInt("to", 0) == (long)DataType.Float ? up.Inputs[0]! : xf;
        // xf is read by the square and the normalization only (and is x itself in an f32 graph, which may have other readers).
        if (!ReferenceEquals(x, xf) && xf.Uses.Count != 3) return null;
        var normed = normalize.Outputs[0];
        var next = Single(normed);
        if (next is { OpType: "Cast" } down)
        {
            if (down.GetInt("to", 0) != (long)(x.ElementType ?? DataType.Undefined)) return null;
            next = Single(down.Outputs[0]);
        }
        else if (x.ElementType != DataType.Float) return null;
        if (next is not { OpType: "Mul", Domain: "" } scale || scale.Inputs.Count != 2) return null;
        var weight = scale.Inputs.FirstOrDefault(v => v?.ConstValue is { Shape.Length: 1 } && !ReferenceEquals(v, normed));
        if (weight?.ConstValue is not { } w || w.DataType != x.ElementType) return null;
        if (x.Shape is { Count: > 0 } shape && shape[^1].Value is { } last && last != w.Shape[0]) return null;
        return new Chain(x, weight, eps, ReferenceEquals(x, xf) ? square : xf.Producer!, scale);
    }

    private static Node? Single(Value v) => v.Uses.Count == 1 && !v.IsGraphOutput ? v.Uses[0].Node : null;

    private static bool LastAxisOnly(Node mean)
    {
        long[]? axes = mean.Inputs.Count > 1 && mean.Inputs[1]?.ConstValue is { } t ? t.GetSpan<long>().ToArray() : mean.GetAttribute("axes")?.AsInts();
        return axes is [-1];
    }

    /// <summary>The f32 scalar constant <paramref name="add"/> adds to <paramref name="value"/>, or null.</summary>
    private static float? Scalar(Node add, Value value)
    {
        if (add.Inputs.Count != 2) return null;
        var other = ReferenceEquals(add.Inputs[0], value) ? add.Inputs[1] : add.Inputs[0];
        var t = other?.ConstValue ?? (other?.Producer is { OpType: "Constant" } c ? c.GetAttribute("value")?.AsTensor() : null);
        return t is { DataType: DataType.Float, ElementCount: 1 } ? t.GetSpan<float>()[0] : null;
    }
}
