using OnnxMoe.Ir.Building;
using System.Runtime.InteropServices;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Tests.Perf;

/// <summary>
/// The fast kernels (SIMD conversions, cache-blocked parallel transpose) equal plain scalar definitions
/// byte for byte: exhaustive over all 65,536 16-bit patterns, random and special f32/f64 values, and
/// transposes of odd shapes that are not multiples of the 8x8 block or 64x64 tile.
/// </summary>
public sealed class TensorKernelsTests
{
    // ---- scalar references ----

    internal static float RefToFloat(ReadOnlySpan<byte> raw, DataType t, int i) => t switch
    {
        DataType.Float => MemoryMarshal.Cast<byte, float>(raw)[i],
        DataType.Float16 => (float)MemoryMarshal.Cast<byte, Half>(raw)[i],
        DataType.BFloat16 => BitConverter.Int32BitsToSingle(MemoryMarshal.Cast<byte, ushort>(raw)[i] << 16),
        DataType.Double => (float)MemoryMarshal.Cast<byte, double>(raw)[i],
        _ => throw new ArgumentException(t.ToString()),
    };

    /// <summary>Scalar conversion: to f32 as above, then to f16 with the C# cast (round to nearest even).</summary>
    internal static byte[] RefConvert(byte[] raw, DataType from, DataType to)
    {
        if (from == to) return (byte[])raw.Clone();
        int n = raw.Length / (from.BitWidth() / 8);
        var result = new byte[to.ByteCount(n)];
        for (int i = 0; i < n; i++)
        {
            float f = RefToFloat(raw, from, i);
            if (to == DataType.Float) MemoryMarshal.Cast<byte, float>(result.AsSpan())[i] = f;
            else MemoryMarshal.Cast<byte, Half>(result.AsSpan())[i] = (Half)f;
        }
        return result;
    }

    internal static byte[] RefTranspose(byte[] raw, int rows, int cols, int elementSize)
    {
        var result = new byte[raw.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                raw.AsSpan((i * cols + j) * elementSize, elementSize).CopyTo(result.AsSpan((j * rows + i) * elementSize));
        return result;
    }

    /// <summary>Random finite values of several magnitudes plus specials (±0, ±inf, subnormals, f16 overflow and ties).</summary>
    internal static byte[] RandomRaw(DataType t, int n, int seed)
    {
        var rng = new Random(seed);
        float[] specials = [0f, -0f, float.PositiveInfinity, float.NegativeInfinity, 1e-40f, -3e-42f, 65504f, 65520f, 70000f, 6e-8f, 2.98e-8f,
            1.0009765625f /* exactly between two f16 */, 1.00146484375f, 3.4e38f, -1e-5f];
        float Next(int i) => i < specials.Length && seed % 2 == 0 ? specials[i]
            : (float)((rng.NextDouble() * 2 - 1) * Math.Pow(10, rng.Next(-9, 6)));
        var raw = new byte[t.ByteCount(n)];
        for (int i = 0; i < n; i++)
        {
            float f = Next(i);
            switch (t)
            {
                case DataType.Float: MemoryMarshal.Cast<byte, float>(raw.AsSpan())[i] = f; break;
                case DataType.Double: MemoryMarshal.Cast<byte, double>(raw.AsSpan())[i] = f * (1 + rng.NextDouble() * 1e-7); break;
                default: MemoryMarshal.Cast<byte, ushort>(raw.AsSpan())[i] = (ushort)rng.Next(0, 65536); break;    // any 16-bit pattern
            }
        }
        return raw;
    }

    private static readonly DataType[] Sources = [DataType.Float, DataType.Float16, DataType.BFloat16, DataType.Double];
    private static readonly DataType[] Targets = [DataType.Float, DataType.Float16];

    public static TheoryData<DataType, DataType> Pairs()
    {
        var d = new TheoryData<DataType, DataType>();
        foreach (var s in Sources) foreach (var t in Targets) d.Add(s, t);
        return d;
    }

    [Fact]
    public void BFloat16ToSingleIsExactForEvery16BitPattern()
    {
        var all = new ushort[65536 + 13];     // a tail that is not a multiple of the vector width
        for (int i = 0; i < all.Length; i++) all[i] = (ushort)i;
        var fast = new float[all.Length];
        TensorKernels.BFloat16ToSingle(all, fast);
        for (int i = 0; i < all.Length; i++)
            Assert.Equal((uint)all[i] << 16, BitConverter.SingleToUInt32Bits(fast[i]));
    }

    [Fact]
    public void SixteenBitSourcesConvertLikeTheScalarReferenceForEveryPattern()
    {
        var raw = new byte[65536 * 2];
        for (int i = 0; i < 65536; i++) BitConverter.TryWriteBytes(raw.AsSpan(2 * i), (ushort)i);
        foreach (var from in new[] { DataType.Float16, DataType.BFloat16 })
            foreach (var to in Targets)
            {
                var fast = new byte[to.ByteCount(65536)];
                TensorKernels.Convert(raw, from, fast, to);
                AssertSameBits(RefConvert(raw, from, to), fast, to, $"{from}->{to}");
            }
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public void ConvertEqualsScalarReference(DataType from, DataType to)
    {
        foreach (int n in new[] { 0, 1, 7, 8, 15, 17, 31, 33, 2047, 2049, 5000 })
            for (int seed = 0; seed < 2; seed++)
            {
                var raw = RandomRaw(from, n, seed + n);
                var fast = new byte[to.ByteCount(n)];
                TensorKernels.Convert(raw, from, fast, to);
                AssertSameBits(RefConvert(raw, from, to), fast, to, $"{from}->{to} n={n}");
            }
    }

    public static TheoryData<int, int> Shapes => new()
    {
        { 1, 1 }, { 1, 9 }, { 9, 1 }, { 7, 7 }, { 8, 8 }, { 13, 17 }, { 17, 13 }, { 63, 65 }, { 64, 64 }, { 65, 129 },
        { 130, 70 }, { 3, 200 }, { 200, 3 }, { 1031, 1029 },     // the last one runs the parallel path
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void TransposeEqualsScalarReference(int rows, int cols)
    {
        foreach (int size in new[] { 1, 2, 4, 8 })
        {
            var raw = new byte[rows * cols * size];
            new Random(rows * 31 + cols + size).NextBytes(raw);
            var expected = RefTranspose(raw, rows, cols, size);
            var fast = new byte[raw.Length];
            switch (size)
            {
                case 1: TensorKernels.Transpose<byte>(raw, rows, cols, fast); break;
                case 2: TensorKernels.Transpose(MemoryMarshal.Cast<byte, ushort>(raw.AsSpan()), rows, cols, MemoryMarshal.Cast<byte, ushort>(fast.AsSpan())); break;
                case 4: TensorKernels.Transpose(MemoryMarshal.Cast<byte, uint>(raw.AsSpan()), rows, cols, MemoryMarshal.Cast<byte, uint>(fast.AsSpan())); break;
                default: TensorKernels.Transpose(MemoryMarshal.Cast<byte, ulong>(raw.AsSpan()), rows, cols, MemoryMarshal.Cast<byte, ulong>(fast.AsSpan())); break;
            }
            Assert.True(expected.AsSpan().SequenceEqual(fast), $"[{rows},{cols}] element size {size}: first difference at byte {expected.AsSpan().CommonPrefixLength(fast)}");
        }
    }

    [Theory]
    [InlineData(16, 70, 86, 80)]      // a stripe of 16 rows of a 70-column matrix into the columns of its [70, 80] transpose
    [InlineData(13, 129, 129, 13)]    // edges on both sides of the 8 x 8 tiles
    [InlineData(64, 130, 140, 100)]
    public void TransposeStridedMovesEachElementAndTouchesNothingElse(int rows, int cols, int sourceStride, int destinationStride)
    {
        var random = new Random(rows + cols);
        var source = Enumerable.Range(0, (rows - 1) * sourceStride + cols).Select(_ => (float)random.NextDouble()).ToArray();
        var destination = Enumerable.Repeat(-1f, (cols - 1) * destinationStride + rows + 5).ToArray();
        TensorKernels.TransposeStrided<float>(source, sourceStride, rows, cols, destination, destinationStride);
        for (int j = 0; j < cols; j++)
            for (int x = 0; x < destinationStride && j * destinationStride + x < destination.Length; x++)
            {
                float expected = x < rows ? source[x * sourceStride + j] : -1f;
                Assert.Equal(expected, destination[j * destinationStride + x]);
            }
        var u16 = source.Select(v => (ushort)(v * 60000)).ToArray();
        var d16 = new ushort[(cols - 1) * destinationStride + rows];
        TensorKernels.TransposeStrided<ushort>(u16, sourceStride, rows, cols, d16, destinationStride);
        for (int j = 0; j < cols; j++)
            for (int i = 0; i < rows; i++) Assert.Equal(u16[i * sourceStride + j], d16[j * destinationStride + i]);
        Assert.Throws<ArgumentException>(() => TensorKernels.TransposeStrided<float>(source, sourceStride, rows, cols, new float[rows], destinationStride));
    }

    [Fact]
    public void FloatTensorsRoundTo16BitTypesAsTheScalarDefinitions()
    {
        // Random bit patterns (NaNs, infinities, subnormals, ties included) and a tail past the vector width.
        var random = new Random(9);
        var bits = Enumerable.Range(0, 100_003).Select(_ => (uint)random.NextInt64(0, 1L << 32)).ToList();
        bits.AddRange([0u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFFFFFFFu, 0x3F808000u, 0x3F818000u, 0x7F7FFFFFu, 0x00000001u]);
        var values = bits.Select(BitConverter.UInt32BitsToSingle).ToArray();
        var bf = MemoryMarshal.Cast<byte, ushort>(GraphBuilder.FloatTensor(DataType.BFloat16, [values.Length], values).GetBytes());
        var f16 = MemoryMarshal.Cast<byte, Half>(GraphBuilder.FloatTensor(DataType.Float16, [values.Length], values).GetBytes());
        for (int i = 0; i < values.Length; i++)
        {
            uint b = bits[i];
            ushort expected = float.IsNaN(values[i]) ? (ushort)0x7FC0 : (ushort)((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
            Assert.True(expected == bf[i], $"bf16 of 0x{b:X8}: expected 0x{expected:X4}, got 0x{bf[i]:X4}");
            var h = (Half)values[i];
            Assert.True(Half.IsNaN(h) ? Half.IsNaN(f16[i]) : BitConverter.HalfToUInt16Bits(h) == BitConverter.HalfToUInt16Bits(f16[i]),
                $"f16 of 0x{b:X8}: expected {h}, got {f16[i]}");
        }
    }

    [Fact]
    public void TransposeRowsGivesBandsOfTheFullTranspose()
    {
        const int rows = 75, cols = 203;
        var raw = new byte[rows * cols * 4];
        new Random(5).NextBytes(raw);
        var expected = RefTranspose(raw, rows, cols, 4);
        var src = MemoryMarshal.Cast<byte, float>(raw.AsSpan()).ToArray();
        foreach (var (first, count) in new[] { (0, 0), (0, 1), (3, 9), (64, 64), (130, 73), (202, 1) })
        {
            var band = new float[count * rows + 3];
            band[^1] = 42f;          // nothing written past the band
            TensorKernels.TransposeRows<float>(src, rows, cols, first, count, band);
            Assert.True(expected.AsSpan(first * rows * 4, count * rows * 4).SequenceEqual(MemoryMarshal.AsBytes(band.AsSpan(0, count * rows))), $"band {first}+{count}");
            Assert.Equal(42f, band[^1]);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => TensorKernels.TransposeRows<float>(src, rows, cols, 200, 4, new float[4 * rows]));
    }

    [Theory]
    [InlineData(DataType.Float)]
    [InlineData(DataType.Float16)]
    [InlineData(DataType.BFloat16)]
    [InlineData(DataType.Double)]
    public void ToFloatArrayOfFileAndMemoryTensorsEqualsScalarReference(DataType t)
    {
        const int n = 1037;
        var raw = RandomRaw(t, n, 11);
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, [.. new byte[24], .. raw]);
            using var file = new SharedFile(path);
            foreach (Tensor tensor in new Tensor[] { new FileTensor(t, [n], file, 24, raw.Length), new InMemoryTensor(t, [n], raw) })
            {
                var f = tensor.ToFloatArray();
                Assert.Equal(n, f.Length);
                for (int i = 0; i < n; i++)
                    Assert.Equal(BitConverter.SingleToUInt32Bits(RefToFloat(raw, t, i)), BitConverter.SingleToUInt32Bits(f[i]));
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>Exact bit equality (NaN payloads included), reporting the first differing element.</summary>
    internal static void AssertSameBits(byte[] expected, ReadOnlySpan<byte> actual, DataType t, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        if (expected.AsSpan().SequenceEqual(actual)) return;
        int size = t.BitWidth() / 8;
        for (int i = 0; i < expected.Length; i += size)
        {
            var e = expected.AsSpan(i, size);
            var a = actual.Slice(i, size);
            if (e.SequenceEqual(a)) continue;
            Assert.Fail($"{what}: element {i / size} differs: expected {Convert.ToHexString(e)}, got {Convert.ToHexString(a)}");
        }
    }
}
