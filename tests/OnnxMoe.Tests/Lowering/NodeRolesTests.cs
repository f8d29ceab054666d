using OnnxMoe.Structure;
using OnnxMoe.Tests.Trimming;
using static OnnxMoe.Tests.Trimming.TrimmingFixture;

namespace OnnxMoe.Tests.Lowering;

/// <summary>
/// <see cref="NodeRoles"/> against an independent source of roles: the Hugging Face name of the checkpoint tensor a node reads
/// (each family's own naming: block_sparse_moe.experts.3.w1, mlp.experts.3.gate_proj, mlp.shared_expert_gate, ...), on the five
/// random family checkpoints, in the standard form and after pass fuse.
/// </summary>
public sealed class NodeRolesTests
{
    public static TheoryData<string> Families => new(FamilyData.Names);

    /// <summary>The role a checkpoint tensor's reader has, from the tensor's Hugging Face name alone.</summary>
    private static NodeRole Expected(string tensor) =>
        tensor.Contains("embed_tokens") ? NodeRole.Embedding
        : tensor.StartsWith("lm_head.") ? NodeRole.LmHead
        : tensor.Contains("norm") ? NodeRole.Norm
        : tensor.Contains(".self_attn.") ? NodeRole.Attention
        : tensor.Contains(".shared_expert_gate.") ? NodeRole.SharedExpertGate
        : tensor.Contains(".shared_expert") ? NodeRole.SharedExpert
        : tensor.Contains(".experts.") ? NodeRole.RoutedExpert
        : tensor.EndsWith(".gate.weight") ? NodeRole.Router
        : tensor.Contains(".mlp.") ? NodeRole.DenseMlp
        : NodeRole.Other;

    [Theory]
    [MemberData(nameof(Families))]
    public void Every_weight_reader_has_the_role_its_checkpoint_tensor_names(string family)
    {
        foreach (var pipeline in new[] { "", "quantize-int4{block-size=16},fuse" })
        {
            using var lowered = new LoweredCheckpoint(FamilyData.Dir(family));
            if (pipeline.Length > 0) RunPipeline(lowered.Model, pipeline);
            var seen = new HashSet<NodeRole>();
            int checkedWeights = 0;
            foreach (var weight in lowered.Model.Graph.Initializers.Where(v => !v.Name.StartsWith('/') && v.Uses.Count > 0))
            {
                // Stacked or packed weights of the fused form are named after their scope, not a checkpoint tensor.
                if (!weight.Name.EndsWith(".weight", StringComparison.Ordinal) && !weight.Name.EndsWith(".bias", StringComparison.Ordinal)) continue;
                var expected = Expected(weight.Name);
                foreach (var use in weight.Uses)
                    Assert.True(expected == NodeRoles.Of(use.Node.Name), $"{family} [{pipeline}]: {weight.Name} is read by {use.Node.Name}: {NodeRoles.Of(use.Node.Name)}, expected {expected}");
                seen.Add(expected);
                checkedWeights++;
            }
            Assert.True(checkedWeights > (pipeline.Length == 0 ? 10 : 5), $"{family} [{pipeline}]: only {checkedWeights} checkpoint weights found");
            // Quantized weights (pass quantize-int4) are renamed; the float ones keep their checkpoint names.
            Assert.Superset(pipeline.Length == 0
                ? new HashSet<NodeRole> { NodeRole.Embedding, NodeRole.Norm, NodeRole.Attention, NodeRole.Router, NodeRole.RoutedExpert, NodeRole.LmHead }
                : new HashSet<NodeRole> { NodeRole.Embedding, NodeRole.Norm, NodeRole.Router }, seen);
            // Fused routed experts: the com.microsoft MoE/QMoE node itself.
            foreach (var n in lowered.Model.Graph.Nodes.Where(n => n.Domain == "com.microsoft" && n.OpType is "MoE" or "QMoE"))
                Assert.Equal(NodeRole.RoutedExpert, NodeRoles.Of(n.Name));
        }
    }

    [Fact]
    public void Query_and_key_projections_are_told_from_value_and_output()
    {
        Assert.True(NodeRoles.IsQueryOrKeyProjection("/model/layers.3/attn/q_proj/MatMul"));
        Assert.True(NodeRoles.IsQueryOrKeyProjection("/model/layers.3/attn/k_proj/Add"));
        Assert.False(NodeRoles.IsQueryOrKeyProjection("/model/layers.3/attn/v_proj/MatMul"));
        Assert.False(NodeRoles.IsQueryOrKeyProjection("/model/layers.3/attn/o_proj/MatMul"));
        Assert.False(NodeRoles.IsQueryOrKeyProjection("/model/layers.3/moe/experts.1/w1/MatMul"));
    }
}
