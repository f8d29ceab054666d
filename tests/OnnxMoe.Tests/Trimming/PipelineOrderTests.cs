using OnnxMoe.Tests.Lowering;
using static OnnxMoe.Tests.Trimming.TrimmingFixture;

namespace OnnxMoe.Tests.Trimming;

/// <summary>Cleanup before a structural pass must not hide what the structure metadata names
/// (dedupe-constants once merged identical router expert-id tables of two layers, and prune-experts
/// then failed to find the second).</summary>
public sealed class PipelineOrderTests
{
    [Fact]
    public void Cleanup_before_pruning_gives_the_same_logits_as_pruning_alone()
    {
        const string prune = "prune-experts{experts=0:1,1:2}";
        using var first = new LoweredCheckpoint(FamilyData.Dir("mixtral"));
        using var second = new LoweredCheckpoint(FamilyData.Dir("mixtral"));
        var ids = Prompt(first.Structure.VocabSize);

        RunPipeline(first.Model, $"cleanup,{prune},cleanup");
        RunPipeline(second.Model, $"{prune},cleanup");

        double diff = MaxAbsDiff(Logits(first.Model, ids), Logits(second.Model, ids));
        Assert.True(diff == 0, $"cleanup-first pipeline differs from pruning alone by {diff:E3}");
    }
}
