using OnnxMoe.Passes.Calibration;
using OnnxMoe.Passes.Quantization.Awq;
using OnnxMoe.Passes.Quantization;
using Xunit.Abstractions;

namespace OnnxMoe.Tests.Awq;

/// <summary>
/// Folding the searched scales must leave the float model's function unchanged: logits within fp32
/// rounding (max abs diff 2e-4 on logits of magnitude ~1-10; the folds change only the rounding of
/// w/s and s*w) and every MoE layer's top-k expert choice identical, because the router's columns
/// carry s too.
/// </summary>
public sealed class AwqFoldingTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-awq-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("mixtral", 2)]      // GQA: no v -> o group
    [InlineData("deepseek-moe", 4)] // dense first layer, shared experts, v -> o group
    [InlineData("qwen2-moe", 4)]    // q/k/v biases, gated shared expert
    public void FoldedScalesLeaveLogitsAndRoutingUnchanged(string family, int kvHeads)
    {
        var lowered = AwqTestModels.RandomLowered(family, _dir, kvHeads);
        var evalTokens = AwqTestModels.HeldOutWindows(AwqTestModels.MixtralTokenizer, 2, 48);
        var (logits, routing) = AwqTestModels.Evaluate(lowered.Model, evalTokens);

        var o = AwqTestModels.SmallOptions();
        using var core = AwqTestModels.Core(AwqTestModels.MixtralTokenizer, o);
        var result = new AwqCalibrator(o, new BlockStateCache(core)).Run(lowered.Model, new QuantizeInt4Options { BlockSize = 16 });
        foreach (var g in result.Groups) output.WriteLine($"{g.Name}: a={g.Ratio:0.00} loss {g.RtnLoss:G4} -> {g.BestLoss:G4}");
        foreach (var s in result.Skipped) output.WriteLine($"skipped {s}");
        Assert.Contains(result.Groups, g => g.Ratio > 0); // otherwise nothing was folded and the test proves nothing
        Assert.All(result.Groups, g => Assert.True(g.BestLoss <= g.RtnLoss));
        if (kvHeads == 4) Assert.Contains(result.Groups, g => g.Name.Contains("v_proj -> o_proj"));
        else Assert.Contains(result.Skipped, s => s.Contains("v_proj -> o_proj"));

        var (folded, foldedRouting) = AwqTestModels.Evaluate(lowered.Model, evalTokens);
        double maxDiff = 0;
        for (int i = 0; i < logits.Length; i++) maxDiff = Math.Max(maxDiff, Math.Abs(logits[i] - folded[i]));
        output.WriteLine($"max |logits diff| = {maxDiff:G3} over {logits.Length} logits (max |logit| {logits.Max(Math.Abs):G3})");
        Assert.True(maxDiff < 2e-4, $"folded logits differ by {maxDiff}");
        Assert.Equal(routing, foldedRouting);
    }
}
