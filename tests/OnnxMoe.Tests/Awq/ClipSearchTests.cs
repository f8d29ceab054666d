using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Passes.Quantization;
using OnnxMoe.Passes.Quantization.Awq;
using OnnxMoe.Tests.Quantization;

namespace OnnxMoe.Tests.Awq;

/// <summary>
/// AWQ's clip search (ClipErrorGraph: the output error through each block's Gram matrix, run in ORT) against a scalar reference
/// written from the definition: for each output channel, block and shrink, the quantized weight's error on every sampled token,
/// (sum_k x_tk (w_k - q_k))^2 averaged over tokens, in double.
/// </summary>
public class ClipSearchTests
{
    [Theory]
    [InlineData(96, 20, 40, 32, false)]    // K a multiple of the block; fewer tokens than the block
    [InlineData(80, 7, 300, 32, true)]     // a short last block, more tokens than the block, input scales
    [InlineData(64, 16, 500, 16, false)]
    public void Chosen_clips_reach_the_reference_minimum(int k, int n, int tokens, int blockSize, bool withInputScales)
    {
        var rng = new Random(k * 31 + n);
        var wKN = ScalarReference.RandomWeight(rng, k, n);
        // A few outliers per row so that clipping pays for some blocks and not for others.
        for (int i = 0; i < wKN.Length; i += 37) wKN[i] *= 6f;
        var weight = InMemoryTensor.FromFloats([k, n], wKN);
        var x = new float[tokens * k];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1) * (1 + (i % k) % 5);
        float[]? scales = withInputScales ? Enumerable.Range(0, k).Select(c => 0.5f + (c % 7) * 0.25f).ToArray() : null;
        var format = new BlockQuantFormat(4, blockSize);
        const int maxTokens = 256;
        const double maxShrink = 0.5;

        using var runner = AwqTestModels.Core(AwqTestModels.MixtralTokenizer, AwqTestModels.SmallOptions());
        using var graph = new ClipErrorGraph(blockSize, runner);
        var chosen = graph.Search(weight, x, k, scales, format, maxTokens, maxShrink);

        // The reference: the same token sample (evenly strided), x / s, and every candidate's error from the definition.
        int take = Math.Min(tokens, maxTokens);
        var xs = new double[take, k];
        for (int t = 0; t < take; t++)
        {
            long source = (long)t * tokens / take * k;
            for (int c = 0; c < k; c++) xs[t, c] = x[source + c] / (scales?[c] ?? 1f);
        }
        var wNK = ScalarReference.Transpose(wKN, k, n);
        int blocks = format.BlockCount(k), steps = (int)(maxShrink * 20);
        var absMax = new float[n * blocks];
        for (int row = 0; row < n; row++)
            for (int b = 0; b < blocks; b++)
                for (int c = b * blockSize; c < Math.Min(k, (b + 1) * blockSize); c++)
                    absMax[row * blocks + b] = Math.Max(absMax[row * blocks + b], Math.Abs(wNK[row * k + c]));
        var q = new float[wNK.Length];
        var best = new double[n * blocks];
        var errorOfChosen = new double[n * blocks];
        Array.Fill(best, double.PositiveInfinity);
        for (int i = 0; i < steps; i++)
        {
            var clip = absMax.Select(a => i == 0 ? float.PositiveInfinity : a * (1f - i / 20f)).ToArray();
            BlockQuantizer.FakeQuantize(wNK, n, k, format, q, DataType.Float, clip);
            for (int row = 0; row < n; row++)
                for (int b = 0; b < blocks; b++)
                {
                    double e = 0;
                    for (int t = 0; t < take; t++)
                    {
                        double dot = 0;
                        for (int c = b * blockSize; c < Math.Min(k, (b + 1) * blockSize); c++) dot += xs[t, c] * (wNK[row * k + c] - q[row * k + c]);
                        e += dot * dot;
                    }
                    e /= take;
                    int j = row * blocks + b;
                    best[j] = Math.Min(best[j], e);
                    if (clip[j] == chosen[j]) errorOfChosen[j] = e;
                }
        }
        int clipped = 0;
        for (int j = 0; j < best.Length; j++)
        {
            // The chosen clip is one of the candidates, and its error is the least up to f32 rounding of the Gram form.
            Assert.True(errorOfChosen[j] <= best[j] * (1 + 1e-4) + 1e-9, $"row {j / blocks} block {j % blocks}: chosen error {errorOfChosen[j]:G6}, least {best[j]:G6}");
            if (float.IsFinite(chosen[j])) clipped++;
        }
        Assert.InRange(clipped, 1, best.Length - 1);   // the data makes some blocks clip and leaves others whole
    }
}
