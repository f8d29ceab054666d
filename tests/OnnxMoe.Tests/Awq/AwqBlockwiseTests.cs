using OnnxMoe.Passes.Calibration;
using OnnxMoe.Passes.Quantization.Awq;
using OnnxMoe.Passes.Quantization;
using OnnxMoe.Structure;
using Xunit.Abstractions;

namespace OnnxMoe.Tests.Awq;

/// <summary>AWQ block by block: the part-wise module loss against the whole module's, and what sequential=quantized changes.</summary>
public sealed class AwqBlockwiseTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-awq-bw-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>The post-attention group splits into one part per routed expert (plus the shared expert), and the output error summed part by
    /// part equals the whole module's error with every trial weight fed at once (relative 1e-4: f32 sums in another order).</summary>
    [Theory]
    [InlineData("mixtral", 4, 0)]
    [InlineData("deepseek-moe", 4, 1)]
    [InlineData("qwen2-moe", 4, 1)]
    public void Part_wise_loss_equals_the_whole_module_loss(string family, int experts, int shared)
    {
        var model = AwqTestModels.RandomLowered(family, _dir, 4).Model;
        var structure = DecoderStructure.Read(model);
        var group = new ScaleGroupFinder(model, new LinearLayerSelector(QuantizeTargets.All, QuantizeInt4Options.DefaultExclude)).Find()
            .First(g => g.Name.EndsWith("post_attention_layernorm -> moe", StringComparison.Ordinal));
        var parts = ModuleParts.Split(group);
        Assert.Equal(experts + shared, parts.Count);
        Assert.Equal(experts, parts.Count(p => p.Indices != null));
        Assert.Equal(group.Quantized.Count, parts.Sum(p => p.Weights.Count));

        var o = AwqTestModels.SmallOptions();
        using var core = AwqTestModels.Core(AwqTestModels.MixtralTokenizer, o);
        var windows = core.Corpus.Windows(2, 32);
        var block = structure.Blocks.First(b => group.Name.StartsWith($"/model/layers.{b.Index}/", StringComparison.Ordinal));
        var x = new List<float>();
        long[]? shape = null;
        using (var states = core.Embed(model, structure, windows))
        {
            var input = states;
            IHiddenStates? next = null;
            for (int p = 0; p <= structure.Blocks.IndexOf(block); p++)
            {
                var outs = p == structure.Blocks.IndexOf(block) ? new[] { group.Input } : [];
                next = core.RunBlock(model, structure, p, input, windows, outs, (_, _, v) =>
                {
                    if (v.Count == 0) return;
                    x.AddRange(v.ToFloatArray(0));
                    shape ??= v.Shape(0);
                }, keepOutput: true);
                if (!ReferenceEquals(input, states)) input.Dispose();
                input = next!;
            }
            input.Dispose();
        }
        shape![0] = windows.Count;
        var xs = (x.ToArray(), shape);
        int channels = (int)shape[^1];
        var rng = new Random(5);
        var format = new BlockQuantFormat(4, 16, false);
        var buffers = new AwqCalibrator.TrialBuffers();
        List<float[]> Trial(PartRunner runner) => runner.Originals.Select(w =>
        {
            var q = new float[w.Data.Length];
            BlockQuantizer.FakeQuantize(w.Data, w.N, channels, format, q);
            return OnnxMoe.Tests.Quantization.ScalarReference.Transpose(q, w.N, channels);
        }).ToList();

        var whole = new ModulePart(parts.SelectMany(p => p.Weights).ToList(), group.ModuleOutput, null);
        using var wholeRunner = new PartRunner(core, model, structure, group, whole, xs, windows, 2, buffers, default);
        double expected = wholeRunner.Loss(Trial(wholeRunner));
        var error = new float[xs.Item1.Length];
        foreach (var part in parts)
        {
            using var runner = new PartRunner(core, model, structure, group, part, xs, windows, 2, buffers, default);
            runner.AddError(Trial(runner), error);
        }
        double actual = System.Numerics.Tensors.TensorPrimitives.SumOfSquares<float>(error) / error.Length;
        output.WriteLine($"{family}: whole {expected:G9}, part-wise {actual:G9}");
        Assert.True(expected > 0);
        Assert.True(Math.Abs(actual - expected) <= 1e-4 * expected, $"whole-module loss {expected}, part-wise {actual}");
    }

    /// <summary>sequential=quantized hands each block's quantized output on, so the blocks after the first calibrate on other inputs: their
    /// statistics, and with them some chosen scales, differ from sequential=float; the first block's are the same.</summary>
    [Fact]
    public void Sequential_quantized_changes_only_the_blocks_after_the_first()
    {
        var results = new Dictionary<AwqSequential, AwqResult>();
        foreach (var mode in new[] { AwqSequential.Float, AwqSequential.Quantized })
        {
            var model = AwqTestModels.RandomLowered("mixtral", Path.Combine(_dir, mode.ToString()), 2).Model;
            var o = AwqTestModels.SmallOptions() with { Search = AwqTestModels.SmallOptions().Search with { Sequential = mode } };
            using var core = AwqTestModels.Core(AwqTestModels.MixtralTokenizer, o);
            results[mode] = new AwqCalibrator(o, new BlockStateCache(core)).Run(model, new QuantizeInt4Options { BlockSize = 16 });
        }
        var f = results[AwqSequential.Float].Groups.ToDictionary(g => g.Name);
        var q = results[AwqSequential.Quantized].Groups.ToDictionary(g => g.Name);
        Assert.Equal(f.Keys.Order(), q.Keys.Order());
        foreach (var name in f.Keys.Where(n => n.StartsWith("/model/layers.0/", StringComparison.Ordinal)))
            Assert.Equal(f[name].RtnLoss, q[name].RtnLoss);
        var later = f.Keys.Where(n => !n.StartsWith("/model/layers.0/", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(later);
        Assert.Contains(later, n => f[n].RtnLoss != q[n].RtnLoss);
    }
}
