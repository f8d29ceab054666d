using System.Numerics.Tensors;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Passes.Calibration;
using Tensor = OnnxMoe.Ir.Tensors.Tensor;

namespace OnnxMoe.Passes.Quantization.Awq;

/// <summary>
/// AWQ's clip search with the output error computed by the region runner: a small graph takes sampled inputs
/// x [T, G, block] and the weight error d = W - Q(W) [G, block, N] and returns, per block g and
/// output channel n, mean_t (x_g . d_g[:, n])^2. Owns its opened region.
/// </summary>
internal sealed class ClipErrorGraph : IDisposable
{
    private readonly IRegion _region;
    private readonly int _blockSize;

    public ClipErrorGraph(int blockSize, IRegionRunner runner)
    {
        _blockSize = blockSize;
        var graph = new Graph("awq_clip_error");
        var b = new GraphBuilder(graph);
        var x = b.AddInput("x", DataType.Float, "tokens", "blocks", blockSize);
        var d = b.AddInput("d", DataType.Float, "blocks", blockSize, "n");
        var partial = b.MatMul(b.Transpose(x, 1, 0, 2), d);                       // [G, T, N]
        b.AddOutput(b.ReduceMean(b.Mul(partial, partial), [1], keepDims: false), "error", "blocks", "n");
        var model = new Model(graph);
        model.SetOpset("", 21);
        _region = runner.Open(model, "awq_clip_error");
    }

    /// <summary>
    /// Clip values [N, k_blocks] for the (already scaled) weight: per row and block the shrink of its
    /// max |w| with the least output error; +infinity where no shrink helps.
    /// <paramref name="activations"/> holds rows of <paramref name="k"/> channels before the scale, divided here by <paramref name="inputScales"/>.
    /// </summary>
    public float[] Search(Tensor weight, float[] activations, int k, float[]? inputScales, BlockQuantFormat format, int maxTokens, double maxShrink)
    {
        int n = (int)weight.Shape[1];
        if (weight.Shape[0] != k) throw new ArgumentException($"weight has K={weight.Shape[0]}, activations have {k} channels");
        int blocks = format.BlockCount(k), kp = blocks * _blockSize;
        var w = WeightMatrixReader.ReadTransposed(weight);            // [N, K]

        int rows = activations.Length / k;
        int take = Math.Min(rows, maxTokens);
        var x = new float[(long)take * kp];
        for (int t = 0; t < take; t++)
        {
            long source = (long)t * rows / take * k;                   // evenly strided tokens
            var dst = x.AsSpan(t * kp, k);
            activations.AsSpan((int)source, k).CopyTo(dst);
            if (inputScales != null) TensorPrimitives.Divide(dst, inputScales, dst);
        }

        var absMax = new float[(long)n * blocks];
        for (int row = 0; row < n; row++)
            for (int bl = 0; bl < blocks; bl++)
            {
                var block = w.AsSpan(row * k + bl * _blockSize, Math.Min(_blockSize, k - bl * _blockSize));
                absMax[row * blocks + bl] = MathF.Abs(TensorPrimitives.MaxMagnitude(block));
            }

        var bestError = new float[(long)n * blocks];
        Array.Fill(bestError, float.PositiveInfinity);
        var bestClip = new float[(long)n * blocks];
        var clip = new float[(long)n * blocks];
        var q = new float[w.Length];
        var d = new float[(long)kp * n];
        int steps = Math.Max(1, (int)(maxShrink * 20));
        var xInput = new RegionInput("x", x, [take, blocks, _blockSize]);
        for (int i = 0; i < steps; i++)
        {
            float factor = 1f - i / 20f;
            for (int j = 0; j < clip.Length; j++) clip[j] = i == 0 || absMax[j] == 0 ? float.PositiveInfinity : absMax[j] * factor;
            BlockQuantizer.FakeQuantize(w, n, k, format, q, weight.DataType == DataType.Float16 ? DataType.Float16 : DataType.Float, clip);
            for (int row = 0; row < n; row++)
                for (int c = 0; c < k; c++)
                    d[(long)c * n + row] = w[row * k + c] - q[row * k + c];
            using var result = _region.Run([xInput, new RegionInput("d", d, [blocks, _blockSize, n])], ["error"]);
            var error = result.Floats(0);                     // [G, N]
            for (int row = 0; row < n; row++)
                for (int bl = 0; bl < blocks; bl++)
                {
                    float e = error[bl * n + row];
                    if (e < bestError[row * blocks + bl])
                    {
                        bestError[row * blocks + bl] = e;
                        bestClip[row * blocks + bl] = clip[row * blocks + bl];
                    }
                }
        }
        return bestClip;
    }

    public void Dispose() => _region.Dispose();
}
