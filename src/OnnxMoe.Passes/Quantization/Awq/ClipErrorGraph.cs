using System.Numerics.Tensors;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Passes.Calibration;
using Tensor = OnnxMoe.Ir.Tensors.Tensor;

namespace OnnxMoe.Passes.Quantization.Awq;

/// <summary>
/// AWQ's clip search with the output error computed by the region runner. The error of a row's block under a trial clip is
/// mean_t (x_t,g . d_g)^2 = d_g^T H_g d_g, with d = W - Q(W) and H_g = mean_t x_t,g^T x_t,g the block's [block, block] Gram matrix
/// of the sampled inputs: one small graph computes the Grams once per weight, another the quadratic forms of every row and block
/// per trial, so a trial costs N x K x block multiply-adds instead of N x K x tokens (AWQ samples 512 tokens: a quarter). Owns its
/// opened regions.
/// </summary>
internal sealed class ClipErrorGraph : IDisposable
{
    private readonly IRegion _gram, _error;
    private readonly int _blockSize;

    /// <param name="largestWeight">Elements of the largest weight the graph will search (its error trials are computed between runs).</param>
    public ClipErrorGraph(int blockSize, IRegionRunner runner, long largestWeight = 0)
    {
        _blockSize = blockSize;
        _gram = runner.Open(GramModel(blockSize), "awq_clip_gram");
        try
        {
            _error = runner.Open(ErrorModel(blockSize), "awq_clip_error", AwqCalibrator.BusyBetweenRuns(largestWeight));
        }
        catch
        {
            _gram.Dispose();
            throw;
        }
    }

    /// <summary>x [T, G, block] -> H [G, block, block] = mean over t of x_t,g^T x_t,g.</summary>
    private static Model GramModel(int blockSize)
    {
        var graph = new Graph("awq_clip_gram");
        var b = new GraphBuilder(graph);
        var x = b.AddInput("x", DataType.Float, "tokens", "blocks", blockSize);
        var inverseTokens = b.AddInput("inverse_tokens", DataType.Float);
        var xt = b.Transpose(x, 1, 0, 2);                                            // [G, T, block]
        var gram = b.MatMul(b.Transpose(x, 1, 2, 0), xt);                            // [G, block, block]
        b.AddOutput(b.Mul(gram, inverseTokens), "gram", "blocks", blockSize, blockSize);
        return Finish(graph);
    }

    /// <summary>H [G, block, block] and d [N, G, block] -> error [G, N] = d[n, g]^T H_g d[n, g].</summary>
    private static Model ErrorModel(int blockSize)
    {
        var graph = new Graph("awq_clip_error");
        var b = new GraphBuilder(graph);
        var h = b.AddInput("gram", DataType.Float, "blocks", blockSize, blockSize);
        var d = b.AddInput("d", DataType.Float, "n", "blocks", blockSize);
        var dt = b.Transpose(d, 1, 0, 2);                                            // [G, N, block]
        b.AddOutput(b.ReduceSum(b.Mul(b.MatMul(dt, h), dt), [2], keepDims: false), "error", "blocks", "n");
        return Finish(graph);
    }

    private static Model Finish(Graph graph)
    {
        var model = new Model(graph);
        model.SetOpset("", 21);
        return model;
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

        float[] gram;
        using (var g = _gram.Run([new RegionInput("x", x, [take, blocks, _blockSize]), new RegionInput("inverse_tokens", new[] { 1f / take }, [])], ["gram"]))
            gram = g.Floats(0).ToArray();
        var gramInput = new RegionInput("gram", gram, [blocks, _blockSize, _blockSize]);

        var bestError = new float[(long)n * blocks];
        Array.Fill(bestError, float.PositiveInfinity);
        var bestClip = new float[(long)n * blocks];
        var clip = new float[(long)n * blocks];
        var d = new float[(long)n * kp];                                  // [N, G, block], zero past K
        int steps = Math.Max(1, (int)(maxShrink * 20));
        for (int i = 0; i < steps; i++)
        {
            float factor = 1f - i / 20f;
            for (int j = 0; j < clip.Length; j++) clip[j] = i == 0 || absMax[j] == 0 ? float.PositiveInfinity : absMax[j] * factor;
            BlockQuantizer.QuantizationError(w, n, k, format, d, kp, weight.DataType == DataType.Float16 ? DataType.Float16 : DataType.Float, clip);
            using var result = _error.Run([gramInput, new RegionInput("d", d, [n, blocks, _blockSize])], ["error"]);
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

    public void Dispose()
    {
        _gram.Dispose();
        _error.Dispose();
    }
}
