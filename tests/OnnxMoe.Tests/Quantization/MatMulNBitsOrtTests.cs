using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx;
using OnnxMoe.Passes.Quantization;
using OnnxMoe.Runtime;

namespace OnnxMoe.Tests.Quantization;

/// <summary>
/// The rewrite's MatMulNBits, written by the ONNX writer (lazy tensors streamed), run by ORT's CPU
/// kernel, against ORT MatMul with the weight dequantized by the independent scalar reference.
/// </summary>
public class MatMulNBitsOrtTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-quant-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static TheoryData<int, int, bool> Formats()
    {
        var data = new TheoryData<int, int, bool>();
        foreach (int bits in new[] { 4, 8 })
            foreach (int block in new[] { 16, 32, 64, 128, 256 })
                foreach (bool symmetric in new[] { false, true })
                    data.Add(bits, block, symmetric);
        return data;
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void MatMulNBits_through_ORT_matches_MatMul_with_the_dequantized_weight(int bits, int blockSize, bool symmetric)
    {
        int k = 2 * blockSize + 5, n = 13, m = 3; // K not a multiple of the block size, odd N
        var rng = new Random(blockSize * 31 + bits + (symmetric ? 1 : 0));
        var w = ScalarReference.RandomWeight(rng, k, n);
        var x = Enumerable.Range(0, m * k).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();

        var g = new Graph("g");
        var xv = new Value("x", new TensorType(DataType.Float, [m, k]));
        g.Inputs.Add(xv);
        var wv = g.AddInitializer(new Value("w", null, InMemoryTensor.FromFloats([k, n], w)));
        var y = new Value("y", new TensorType(DataType.Float, [m, n]));
        g.Append(new Node("", "MatMul", [xv, wv], [y], "/model/layers.0/mlp/w1/MatMul"));
        g.Outputs.Add(y);
        var model = new Model(g);
        model.SetOpset("", 21);
        // accuracy level 1: fp32 activations, so ORT's result is the dequantized weight's to float rounding (4 adds int8 activation error).
        var result = new QuantizeInt4Rewrite(new QuantizeInt4Options { Bits = bits, BlockSize = blockSize, Symmetric = symmetric, AccuracyLevel = 1 }).Apply(model);
        Assert.Equal(1, result.MatMulsQuantized);

        // Reference weight: the packed tensors as the writer will see them, read by the scalar reference.
        var nbits = g.Nodes.Single(nd => nd.OpType == "MatMulNBits");
        var scales = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(nbits.Inputs[2]!.ConstValue!.GetBytes()).ToArray();
        var zp = symmetric ? null : nbits.Inputs[3]!.ConstValue!.GetBytes().ToArray();
        var wq = ScalarReference.Dequantize(nbits.Inputs[1]!.ConstValue!.GetBytes().ToArray(), scales, zp, k, n, bits, blockSize);
        var wqv = g.AddInitializer(new Value("w_dequantized", null, InMemoryTensor.FromFloats([k, n], wq)));
        var yRef = new Value("y_ref", new TensorType(DataType.Float, [m, n]));
        g.Append(new Node("", "MatMul", [xv, wqv], [yRef], "/reference/MatMul"));
        g.Outputs.Add(yRef);

        string path = Path.Combine(_dir, "model.onnx");
        OnnxWriter.Write(model, path);
        using var session = new InferenceSession(path, new SessionConfig { IntraOpThreads = 1 });
        using var input = OrtValue.CreateTensor<float>(x, [m, k]);
        using var outputs = session.Run([new("x", input)]);
        var actual = outputs["y"].ToArray<float>();
        var expected = outputs["y_ref"].ToArray<float>();

        // Tolerance: both are f32 dot products of the same exact values in different summation orders:
        // |diff| <= 1e-5 * sum_k |x_k * w'_kn| + 1e-6.
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double bound = 1e-6;
                double exact = 0;
                for (int kk = 0; kk < k; kk++)
                {
                    bound += 1e-5 * Math.Abs((double)x[i * k + kk] * wq[kk * n + j]);
                    exact += (double)x[i * k + kk] * wq[kk * n + j];
                }
                Assert.True(Math.Abs(actual[i * n + j] - expected[i * n + j]) <= bound,
                    $"y[{i},{j}]: MatMulNBits {actual[i * n + j]}, MatMul {expected[i * n + j]}, bound {bound}");
                Assert.True(Math.Abs(actual[i * n + j] - exact) <= bound, $"y[{i},{j}]: MatMulNBits {actual[i * n + j]}, exact {exact}");

                // And against the original float weight: each w' is within half its block's scale of w.
                double original = 0, quantBound = bound;
                int blocks = (k + blockSize - 1) / blockSize;
                for (int kk = 0; kk < k; kk++)
                {
                    original += (double)x[i * k + kk] * w[kk * n + j];
                    quantBound += Math.Abs(x[i * k + kk]) * (scales[j * blocks + kk / blockSize] / 2 * (1 + 1e-6) + 1e-6 * Math.Abs(w[kk * n + j]));
                }
                Assert.True(Math.Abs(actual[i * n + j] - original) <= quantBound,
                    $"y[{i},{j}]: MatMulNBits {actual[i * n + j]}, float MatMul {original}, quantization bound {quantBound}");
            }
    }

    [Fact]
    public void Fp16_activations_with_fp16_scales_run_through_ORT()
    {
        const int k = 69, n = 9, m = 2, block = 32;
        var rng = new Random(4);
        var w = ScalarReference.RandomWeight(rng, k, n).Select(v => (Half)v).ToArray();
        var x = Enumerable.Range(0, m * k).Select(_ => (Half)(rng.NextDouble() * 2 - 1)).ToArray();
        var g = new Graph("g");
        var xv = new Value("x", new TensorType(DataType.Float16, [m, k]));
        g.Inputs.Add(xv);
        var wv = g.AddInitializer(new Value("w", null, InMemoryTensor.FromHalves([k, n], w)));
        var y = new Value("y", new TensorType(DataType.Float16, [m, n]));
        g.Append(new Node("", "MatMul", [xv, wv], [y], "/model/layers.0/attn/o_proj/MatMul"));
        g.Outputs.Add(y);
        var model = new Model(g);
        model.SetOpset("", 21);
        new QuantizeInt4Rewrite(new QuantizeInt4Options { BlockSize = block, AccuracyLevel = 1 }).Apply(model);
        var nb = g.Nodes.Single();
        var scales = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(nb.Inputs[2]!.ConstValue!.GetBytes()).ToArray().Select(h => (float)h).ToArray();
        var wq = ScalarReference.Dequantize(nb.Inputs[1]!.ConstValue!.GetBytes().ToArray(), scales, nb.Inputs[3]!.ConstValue!.GetBytes().ToArray(), k, n, 4, block);

        string path = Path.Combine(_dir, "model16.onnx");
        OnnxWriter.Write(model, path);
        using var session = new InferenceSession(path, new SessionConfig { IntraOpThreads = 1 });
        using var input = OrtValue.CreateTensor<Half>(x, [m, k]);
        var actual = session.RunToArray<Half>([new("x", input)], "y");
        // Tolerance: f16 output (relative 2^-11) plus f16 accumulation error, bounded by 2e-3 * sum |x w'| + 1e-3.
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double exact = 0, mag = 0;
                for (int kk = 0; kk < k; kk++)
                {
                    exact += (double)(float)x[i * k + kk] * wq[kk * n + j];
                    mag += Math.Abs((double)(float)x[i * k + kk] * wq[kk * n + j]);
                }
                Assert.True(Math.Abs((float)actual[i * n + j] - exact) <= 2e-3 * mag + 1e-3, $"y[{i},{j}] = {(float)actual[i * n + j]}, exact {exact}");
            }
    }
}
