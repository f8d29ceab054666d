using FsCheck;
using FsCheck.Fluent;
using OnnxMoe.Ir;
using OnnxMoe.Passes.Quantization;

namespace OnnxMoe.Tests.Quantization;

public class BlockQuantizerTests
{
    /// <summary>A random quantization problem: shape, format, scale type and data seed.</summary>
    public sealed record Case(int K, int N, int Bits, int BlockSize, bool Symmetric, DataType ScaleType, int Seed)
    {
        public override string ToString() => $"K={K} N={N} bits={Bits} block={BlockSize} sym={Symmetric} scales={ScaleType.Name()} seed={Seed}";
    }

    private static readonly Arbitrary<Case> Cases =
        (from k in Gen.Choose(1, 700)
         from n in Gen.Choose(1, 9)
         from bits in Gen.Elements(4, 8)
         from log in Gen.Choose(4, 8)
         from sym in Gen.Elements(false, true)
         from st in Gen.Elements(DataType.Float, DataType.Float16, DataType.BFloat16)
         from seed in Gen.Choose(0, int.MaxValue)
         select new Case(k, n, bits, 1 << log, sym, st, seed)).ToArbitrary();

    private static (float[] graphW, QuantizedWeight q) Quantize(Case c)
    {
        var w = ScalarReference.RandomWeight(new Random(c.Seed), c.K, c.N);
        var q = BlockQuantizer.Quantize(ScalarReference.Transpose(w, c.K, c.N), c.N, c.K, new BlockQuantFormat(c.Bits, c.BlockSize, c.Symmetric), c.ScaleType);
        return (w, q);
    }

    [Fact]
    public void Dequantize_matches_the_scalar_reference_exactly()
    {
        Check.QuickThrowOnFailure(Prop.ForAll(Cases, c =>
        {
            var (_, q) = Quantize(c);
            var expected = ScalarReference.Dequantize(q.PackedCodes, q.Scales, q.PackedZeroPoints, c.K, c.N, c.Bits, c.BlockSize);
            var actual = BlockQuantizer.DequantizeToGraphLayout(q);
            return expected.AsSpan().SequenceEqual(actual);
        }));
    }

    [Fact]
    public void Large_matrices_quantized_in_parallel_match_the_reference_and_a_serial_run()
    {
        // 600 x 500 is above the size where rows are spread over threads.
        const int k = 600, n = 501;
        var w = ScalarReference.Transpose(ScalarReference.RandomWeight(new Random(9), k, n), k, n);
        var f = new BlockQuantFormat(4, 64);
        var q = BlockQuantizer.Quantize(w, n, k, f);
        Assert.Equal(ScalarReference.Dequantize(q.PackedCodes, q.Scales, q.PackedZeroPoints, k, n, 4, 64), BlockQuantizer.DequantizeToGraphLayout(q));
        // Row by row through the small-matrix path gives the same bytes.
        for (int row = 0; row < n; row += 50)
        {
            var one = BlockQuantizer.Quantize(w.AsSpan(row * k, k), 1, k, f);
            Assert.Equal(one.PackedCodes, q.PackedCodes.AsSpan(row * one.PackedCodes.Length, one.PackedCodes.Length).ToArray());
            Assert.Equal(one.PackedZeroPoints, q.PackedZeroPoints!.AsSpan(row * one.PackedZeroPoints!.Length, one.PackedZeroPoints.Length).ToArray());
        }
    }

    [Fact]
    public void Error_is_at_most_half_a_scale_per_element()
    {
        // Tolerance: scale/2 plus 1e-6 relative slack for the f32 rounding of w / scale and (q - z) * scale.
        Check.QuickThrowOnFailure(Prop.ForAll(Cases, c =>
        {
            var (w, q) = Quantize(c);
            var back = BlockQuantizer.DequantizeToGraphLayout(q);
            int blocks = q.BlockCount;
            for (int row = 0; row < c.K; row++)
                for (int col = 0; col < c.N; col++)
                {
                    float scale = q.Scales[col * blocks + row / c.BlockSize];
                    float err = Math.Abs(w[row * c.N + col] - back[row * c.N + col]);
                    if (err > scale / 2 * (1 + 1e-6f) + 1e-6f * Math.Abs(w[row * c.N + col])) return false;
                }
            return true;
        }));
    }

    [Fact]
    public void Layout_sizes_padding_and_code_ranges_follow_MatMulNBits()
    {
        Check.QuickThrowOnFailure(Prop.ForAll(Cases, c =>
        {
            var (_, q) = Quantize(c);
            int blocks = (c.K + c.BlockSize - 1) / c.BlockSize;
            bool ok = q.PackedCodes.Length == c.N * blocks * c.BlockSize * c.Bits / 8
                && q.Scales.Length == c.N * blocks
                && (c.Symmetric ? q.PackedZeroPoints == null : q.PackedZeroPoints!.Length == c.N * ((blocks * c.Bits + 7) / 8));
            int defaultZp = 1 << (c.Bits - 1);
            // Padded tail of the last block holds the block's zero point, so it dequantizes to 0.
            for (int col = 0; col < c.N && ok; col++)
            {
                int zp = ZeroPointOf(q, col, blocks - 1, c.Bits) ?? defaultZp;
                for (int row = c.K; row < blocks * c.BlockSize; row++)
                    ok &= ScalarReference.Code(q.PackedCodes, c.K, c.N, row, col, c.Bits, c.BlockSize) == zp;
                // Unused high nibble of an odd block count is zero.
                if (!c.Symmetric && c.Bits == 4 && blocks % 2 == 1)
                    ok &= q.PackedZeroPoints![(col + 1) * ((blocks + 1) / 2) - 1] >> 4 == 0;
            }
            // Symmetric codes stay within zp +- (2^(bits-1) - 1).
            if (c.Symmetric)
                for (int col = 0; col < c.N && ok; col++)
                    for (int row = 0; row < c.K; row++)
                        ok &= Math.Abs(ScalarReference.Code(q.PackedCodes, c.K, c.N, row, col, c.Bits, c.BlockSize) - defaultZp) <= defaultZp - 1;
            return ok;
        }));
    }

    private static int? ZeroPointOf(QuantizedWeight q, int col, int block, int bits)
    {
        if (q.PackedZeroPoints == null) return null;
        int row = (q.BlockCount * bits + 7) / 8;
        return bits == 8 ? q.PackedZeroPoints[col * row + block] : (q.PackedZeroPoints[col * row + block / 2] >> (block % 2 * 4)) & 0xF;
    }

    [Fact]
    public void Scales_are_representable_in_their_storage_type_and_round_trip_as_bytes()
    {
        Check.QuickThrowOnFailure(Prop.ForAll(Cases, c =>
        {
            var (_, q) = Quantize(c);
            var bytes = q.ScaleBytes();
            var decoded = c.ScaleType switch
            {
                DataType.Float => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray(),
                DataType.Float16 => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(bytes).ToArray().Select(h => (float)h).ToArray(),
                _ => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bytes).ToArray().Select(u => BitConverter.Int32BitsToSingle(u << 16)).ToArray(),
            };
            return decoded.AsSpan().SequenceEqual(q.Scales) && q.Scales.All(s => s > 0);
        }));
    }

    [Fact]
    public void Pack_then_unpack_returns_the_codes()
    {
        Check.QuickThrowOnFailure(Prop.ForAll(Gen.Choose(0, int.MaxValue).ToArbitrary(), seed =>
        {
            var rng = new Random(seed);
            int bits = rng.Next(2) == 0 ? 4 : 8;
            int len = 1 << rng.Next(4, 9);
            var codes = new byte[len];
            for (int i = 0; i < len; i++) codes[i] = (byte)rng.Next(1 << bits);
            var packed = new byte[len * bits / 8];
            BlockQuantizer.PackCodes(codes, packed, bits);
            var back = new byte[len];
            BlockQuantizer.UnpackCodes(packed, back, bits);
            // Low nibble first: element 0 in bits 0..3 of byte 0.
            bool order = bits == 8 || (packed[0] & 0xF) == codes[0] && packed[0] >> 4 == codes[1];
            return order && back.AsSpan().SequenceEqual(codes);
        }));
    }

    [Fact]
    public void Asymmetric_block_follows_the_AWQ_formula_when_it_straddles_zero()
    {
        float[] block = [-0.7f, -0.1f, 0f, 0.2f, 0.55f, 1.3f, -0.35f, 0.9f, 0.01f, -0.02f, 0.4f, 0.6f, 0.8f, -0.5f, 0.3f, 0.1f];
        var codes = new byte[16];
        var p = BlockQuantizer.QuantizeBlock(block, codes, new BlockQuantFormat(4, 16));
        float scale = (1.3f - -0.7f) / 15;
        int zero = Math.Clamp(-(int)MathF.Round(-0.7f / scale), 0, 15);
        Assert.Equal(scale, p.Scale);
        Assert.Equal(zero, p.ZeroPoint);
        for (int i = 0; i < 16; i++) Assert.Equal(Math.Clamp((int)MathF.Round(block[i] / scale) + zero, 0, 15), codes[i]);
    }

    [Fact]
    public void One_signed_block_keeps_its_far_end()
    {
        // AWQ's min/max formula would give scale 1/15 and clamp 6.0 to code 15 (value 1.0); widening to 0 keeps the error within scale/2.
        float[] block = Enumerable.Range(0, 16).Select(i => 5f + i / 15f).ToArray();
        var codes = new byte[16];
        var p = BlockQuantizer.QuantizeBlock(block, codes, new BlockQuantFormat(4, 16));
        for (int i = 0; i < 16; i++) Assert.InRange(Math.Abs((codes[i] - p.ZeroPoint) * p.Scale - block[i]), 0, p.Scale / 2 * (1 + 1e-6f) + 1e-6f * block[i]);
    }

    [Fact]
    public void Clip_limits_the_range_before_scaling()
    {
        float[] block = [-4f, 0.5f, -0.5f, 0.25f, 0.1f, 0f, 3f, -0.3f, 0.2f, 0.4f, -0.1f, 0.05f, 0.15f, -0.25f, 0.35f, 0.45f];
        var codes = new byte[16];
        var p = BlockQuantizer.QuantizeBlock(block, codes, new BlockQuantFormat(4, 16), clip: 1f);
        Assert.Equal(2f / 15, p.Scale);
        // The clipped ends -4 and 3 land within half a scale of -1 and 1.
        Assert.InRange((codes[0] - p.ZeroPoint) * p.Scale, -1 - p.Scale / 2 * 1.000001f, -1 + p.Scale / 2 * 1.000001f);
        Assert.InRange((codes[6] - p.ZeroPoint) * p.Scale, 1 - p.Scale / 2 * 1.000001f, 1 + p.Scale / 2 * 1.000001f);
    }

    [Fact]
    public void Zero_block_dequantizes_to_zero()
    {
        foreach (var sym in new[] { false, true })
        {
            var q = BlockQuantizer.Quantize(new float[40], 1, 40, new BlockQuantFormat(4, 32, sym));
            Assert.All(BlockQuantizer.Dequantize(q), v => Assert.Equal(0f, v));
            Assert.All(q.Scales, s => Assert.True(s > 0));
        }
    }

    [Fact]
    public void Scale_rounding_up_gives_the_next_representable_value()
    {
        var rng = new Random(7);
        for (int i = 0; i < 2000; i++)
        {
            float s = (float)Math.Pow(10, rng.NextDouble() * 8 - 7);
            float h = BlockQuantizer.RoundScaleUp(s, DataType.Float16);
            Assert.True(h >= s && (float)(Half)h == h && (float)Half.BitDecrement((Half)h) < s, $"f16 {s} -> {h}");
            float b = BlockQuantizer.RoundScaleUp(s, DataType.BFloat16);
            uint bits = BitConverter.SingleToUInt32Bits(b);
            Assert.True(b >= s && (bits & 0xFFFF) == 0 && BitConverter.UInt32BitsToSingle(bits - 0x10000) < s, $"bf16 {s} -> {b}");
        }
    }

    [Theory]
    [InlineData(4, 32, false, DataType.Float, false)]
    [InlineData(4, 16, true, DataType.Float16, false)]
    [InlineData(8, 32, false, DataType.BFloat16, true)]
    [InlineData(4, 64, true, DataType.Float, true)]
    public void Fake_quantize_equals_dequantized_quantize(int bits, int blockSize, bool symmetric, DataType scaleType, bool clipped)
    {
        // 70 columns: the last block is short. Rows big enough (> 2^18 values) to take the parallel path as well.
        foreach (int n in new[] { 5, 4000 })
        {
            var w = ScalarReference.RandomWeight(new Random(3 + n), 70, n);
            var t = ScalarReference.Transpose(w, 70, n);
            var f = new BlockQuantFormat(bits, blockSize, symmetric);
            int blocks = f.BlockCount(70);
            float[] clip = clipped ? Enumerable.Range(0, n * blocks).Select(i => i % 3 == 0 ? float.PositiveInfinity : 0.05f + i % 5 * 0.01f).ToArray() : [];
            var expected = BlockQuantizer.Dequantize(BlockQuantizer.Quantize(t, n, 70, f, scaleType, clip));
            var fake = new float[t.Length];
            BlockQuantizer.FakeQuantize(t, n, 70, f, fake, scaleType, clip);
            Assert.Equal(expected, fake);
            BlockQuantizer.FakeQuantize(t, n, 70, f, t, scaleType, clip);   // in place
            Assert.Equal(expected, t);
        }
    }

    [Theory]
    [InlineData(4, 32, false, DataType.Float, false)]
    [InlineData(4, 128, false, DataType.BFloat16, true)]
    [InlineData(8, 16, true, DataType.Float16, true)]
    public void Scaled_transposed_trial_weights_and_quantization_errors_equal_the_composed_steps(int bits, int blockSize, bool symmetric, DataType scaleType, bool clipped)
    {
        // What an AWQ scale trial is by definition, step by step on the scalar reference's transpose: W s quantized and dequantized,
        // divided by s, as [K, N]; and a clip trial's error W - Q(W) in rows padded to a stride. 70 columns: a short last block;
        // 4000 rows: the parallel stripes, with a short last stripe.
        const int k = 70;
        foreach (int n in new[] { 5, 4001 })
        {
            var t = ScalarReference.Transpose(ScalarReference.RandomWeight(new Random(11 + n), k, n), k, n);   // [N, K]
            var random = new Random(n);
            var s = Enumerable.Range(0, k).Select(_ => (float)(0.05 + 4 * random.NextDouble())).ToArray();
            var f = new BlockQuantFormat(bits, blockSize, symmetric);
            int blocks = f.BlockCount(k);
            float[] clip = clipped ? Enumerable.Range(0, n * blocks).Select(i => i % 4 == 0 ? float.PositiveInfinity : 0.04f + i % 7 * 0.02f).ToArray() : [];

            var scaled = new float[t.Length];
            for (int i = 0; i < t.Length; i++) scaled[i] = t[i] * s[i % k];
            var expected = BlockQuantizer.Dequantize(BlockQuantizer.Quantize(scaled, n, k, f, scaleType, clip));
            for (int i = 0; i < expected.Length; i++) expected[i] /= s[i % k];
            var trial = new float[t.Length];
            BlockQuantizer.FakeQuantizeScaledTransposed(t, n, k, s, f, trial, scaleType, clip);
            Assert.Equal(ScalarReference.Transpose(expected, n, k), trial);

            var plain = BlockQuantizer.Dequantize(BlockQuantizer.Quantize(t, n, k, f, scaleType, clip));
            BlockQuantizer.FakeQuantizeScaledTransposed(t, n, k, default, f, trial, scaleType, clip);
            Assert.Equal(ScalarReference.Transpose(plain, n, k), trial);

            const int stride = 80;
            var error = Enumerable.Repeat(-7f, n * stride).ToArray();
            BlockQuantizer.QuantizationError(t, n, k, f, error, stride, scaleType, clip);
            for (int row = 0; row < n; row++)
            {
                for (int c = 0; c < k; c++) Assert.Equal(t[row * k + c] - plain[row * k + c], error[row * stride + c]);
                for (int c = k; c < stride; c++) Assert.Equal(-7f, error[row * stride + c]);
            }
        }
    }

    [Fact]
    public void Non_finite_weights_are_rejected()
    {
        var w = new float[32];
        w[5] = float.NaN;
        var e = Assert.Throws<InvalidDataException>(() => BlockQuantizer.Quantize(w, 1, 32, new BlockQuantFormat(4, 32)));
        Assert.Contains("NaN", e.Message);
        // The trial-weight paths (vectorized for whole blocks) reject them the same way, with and without input scales.
        foreach (var bad in new[] { float.NaN, float.PositiveInfinity })
        {
            w[5] = bad;
            var f = new BlockQuantFormat(4, 32);
            Assert.Contains("NaN", Assert.Throws<InvalidDataException>(() => BlockQuantizer.FakeQuantize(w, 1, 32, f, new float[32])).Message);
            Assert.Contains("NaN", Assert.Throws<InvalidDataException>(() =>
                BlockQuantizer.FakeQuantizeScaledTransposed(w, 1, 32, Enumerable.Repeat(2f, 32).ToArray(), f, new float[32])).Message);
        }
    }

    [Theory]
    [InlineData(4, 24, "block size 24 is not a power of two between 16 and 256")]
    [InlineData(4, 8, "block size 8 is not a power of two between 16 and 256")]
    [InlineData(4, 512, "block size 512 is not a power of two between 16 and 256")]
    [InlineData(3, 128, "bits 3 is not supported: use 4 or 8")]
    public void Bad_formats_are_rejected_with_a_clear_message(int bits, int blockSize, string message)
    {
        var e = Assert.Throws<UserErrorException>(() => new BlockQuantFormat(bits, blockSize));
        Assert.Equal(message, e.Message);
    }
}
