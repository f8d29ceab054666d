using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using OnnxMoe.Ir;

namespace OnnxMoe.Passes.Quantization;

/// <summary>Scale and zero point chosen for one block; the zero point is the code that dequantizes to 0.</summary>
public readonly record struct BlockParameters(float Scale, int ZeroPoint);

/// <summary>
/// Round-to-nearest block quantization (FACTS sections 2 and 3) and its inverse.
/// <para>Asymmetric: the block's range [min, max] is widened to contain 0 (identical for blocks
/// holding both signs, the norm; for one-signed blocks AWQ's formula would clamp the far end),
/// scale = max(max - min, 1e-5) / max_code, zero = clamp(-round(min / scale), 0, max_code),
/// code = clamp(round(w / scale) + zero, 0, max_code).</para>
/// <para>Symmetric: zero = 2^(bits-1) (not stored), scale = max(absmax, 1e-5) / (2^(bits-1) - 1) so
/// code - zero covers [-absmax, absmax].</para>
/// <para>Scales are rounded up to the storage type (f16/bf16) before the codes are computed, so the
/// codes are chosen for the scale the kernel will use and |w - w'| &lt;= scale / 2 holds with the stored
/// scale (up to f32 rounding of w / scale). Rounding is half to even, as torch.round.</para>
/// </summary>
public static class BlockQuantizer
{
    /// <summary>Smallest range (asymmetric) or magnitude (symmetric) a block is given, so a constant block still gets a positive scale.</summary>
    public const float MinimumRange = 1e-5f;

    /// <summary>
    /// Quantizes one block of at most <c>format.BlockSize</c> values into one code per byte of
    /// <paramref name="codes"/> (unpacked, same length as <paramref name="values"/>). When
    /// <paramref name="clip"/> is finite, values are first clamped to [-clip, clip] (AWQ clip search).
    /// </summary>
    public static BlockParameters QuantizeBlock(ReadOnlySpan<float> values, Span<byte> codes, BlockQuantFormat format,
        DataType scaleType = DataType.Float, float clip = float.PositiveInfinity)
    {
        if (values.Length == 0 || values.Length > format.BlockSize)
            throw new ArgumentException($"a block holds 1..{format.BlockSize} values, got {values.Length}");
        if (codes.Length != values.Length) throw new ArgumentException("codes must have one byte per value");
        Span<float> work = stackalloc float[values.Length];
        var p = Codes(values, work, format, scaleType, clip);
        TensorPrimitives.ConvertToInteger<float, byte>(work, codes);
        return p;
    }

    /// <summary>The block's parameters, and its codes as floats in <paramref name="work"/> (the block's length): the scalar reference
    /// shared by <see cref="QuantizeBlock"/> and the fake-quantize paths (whose vectorized blocks apply the same operations).</summary>
    private static BlockParameters Codes(ReadOnlySpan<float> values, Span<float> work, BlockQuantFormat format, DataType scaleType, float clip)
    {
        if (!(clip > 0)) throw new ArgumentException($"clip {clip} must be positive");
        if (float.IsPositiveInfinity(clip)) values.CopyTo(work);
        else TensorPrimitives.Clamp(values, -clip, clip, work);

        var p = Parameters(TensorPrimitives.Min(work), TensorPrimitives.Max(work), format, scaleType);
        TensorPrimitives.Divide(work, p.Scale, work);
        TensorPrimitives.Round(work, work);
        TensorPrimitives.Add(work, (float)p.ZeroPoint, work);
        TensorPrimitives.Clamp(work, 0f, format.MaxCode, work);
        return p;
    }

    /// <summary>
    /// The scale and zero point of a block whose (clipped) values span [<paramref name="min"/>, <paramref name="max"/>]: the one place
    /// the rule lives. Symmetric: the larger magnitude over 2^(bits-1) - 1, zero 2^(bits-1). Asymmetric: the range widened to hold 0
    /// over the largest code, zero the code of 0. The scale is rounded up to <paramref name="scaleType"/> first.
    /// </summary>
    private static BlockParameters Parameters(float min, float max, BlockQuantFormat format, DataType scaleType)
    {
        if (!float.IsFinite(min) || !float.IsFinite(max)) throw new InvalidDataException("block contains a NaN or infinite weight");
        if (format.Symmetric)
        {
            float absMax = MathF.Max(-min, max);
            return new BlockParameters(RoundScaleUp(MathF.Max(absMax, MinimumRange) / (format.DefaultZeroPoint - 1), scaleType), format.DefaultZeroPoint);
        }
        float lo = MathF.Min(min, 0f), hi = MathF.Max(max, 0f);
        float scale = RoundScaleUp(MathF.Max(hi - lo, MinimumRange) / format.MaxCode, scaleType);
        return new BlockParameters(scale, Math.Clamp(-(int)MathF.Round(lo / scale), 0, format.MaxCode));
    }

    /// <summary>
    /// Quantizes W given transposed as <paramref name="weightNK"/> [N, K] (one output channel per row,
    /// the layout MatMulNBits blocks along). <paramref name="clipMax"/>, when not empty, holds one clip
    /// value per (output channel, block): [N, k_blocks].
    /// </summary>
    public static QuantizedWeight Quantize(ReadOnlySpan<float> weightNK, int n, int k, BlockQuantFormat format,
        DataType scaleType = DataType.Float, ReadOnlySpan<float> clipMax = default)
    {
        int blocks = CheckArguments(weightNK, n, k, format, scaleType, clipMax);

        var packed = new byte[checked((long)n * blocks * format.BlockBytes)];
        var scales = new float[(long)n * blocks];
        int zpRow = format.ZeroPointBytesPerRow(k);
        var zeroPoints = format.Symmetric ? null : new byte[(long)n * zpRow];
        // Rows are independent and each writes only its own slices, so the output does not depend on scheduling.
        unsafe
        {
            fixed (float* wp = weightNK)
            fixed (float* cp = clipMax)
            {
                float* wPtr = wp, cPtr = cp;
                bool clipped = !clipMax.IsEmpty;
                ForEachRow(n, k, row =>
                {
                    Span<byte> codes = stackalloc byte[format.BlockSize];
                    var w = new ReadOnlySpan<float>(wPtr + (long)row * k, k);
                    for (int b = 0; b < blocks; b++)
                    {
                        int start = b * format.BlockSize;
                        int len = Math.Min(format.BlockSize, k - start);
                        float clip = clipped ? cPtr[(long)row * blocks + b] : float.PositiveInfinity;
                        var p = QuantizeBlock(w.Slice(start, len), codes[..len], format, scaleType, clip);
                        codes[len..].Fill((byte)p.ZeroPoint);
                        scales[(long)row * blocks + b] = p.Scale;
                        PackCodes(codes, packed.AsSpan((int)(((long)row * blocks + b) * format.BlockBytes), format.BlockBytes), format.Bits);
                        if (zeroPoints != null) SetPacked(zeroPoints.AsSpan(row * zpRow, zpRow), b, p.ZeroPoint, format.Bits);
                    }
                });
            }
        }
        return new QuantizedWeight(k, n, format, scaleType, packed, scales, zeroPoints);
    }

    /// <summary>Dequantizes to [N, K] (transposed graph layout).</summary>
    public static float[] Dequantize(QuantizedWeight q)
    {
        var result = new float[(long)q.N * q.K];
        int blocks = q.BlockCount, bytes = q.Format.BlockBytes, zpRow = q.Format.ZeroPointBytesPerRow(q.K);
        ForEachRow(q.N, q.K, row =>
        {
            Span<byte> codes = stackalloc byte[q.Format.BlockSize];
            Span<float> values = stackalloc float[q.Format.BlockSize];
            for (int b = 0; b < blocks; b++)
            {
                int start = b * q.Format.BlockSize;
                int len = Math.Min(q.Format.BlockSize, q.K - start);
                UnpackCodes(q.PackedCodes.AsSpan((int)(((long)row * blocks + b) * bytes), bytes), codes, q.Format.Bits);
                int zero = q.PackedZeroPoints == null ? q.Format.DefaultZeroPoint : GetPacked(q.PackedZeroPoints.AsSpan(row * zpRow, zpRow), b, q.Format.Bits);
                TensorPrimitives.ConvertChecked<byte, float>(codes[..len], values[..len]);
                TensorPrimitives.Subtract(values[..len], zero, values[..len]);
                TensorPrimitives.Multiply(values[..len], q.Scales[(long)row * blocks + b], result.AsSpan((int)((long)row * q.K + start), len));
            }
        });
        return result;
    }

    /// <summary>Dequantizes to [K, N], the graph's MatMul weight layout.</summary>
    public static float[] DequantizeToGraphLayout(QuantizedWeight q) => Transpose(Dequantize(q), q.N, q.K);

    /// <summary>
    /// Quantize-then-dequantize of W given as [N, K] into <paramref name="destinationNK"/> (may alias the
    /// source): the trial weight Q(W) an AWQ scale or clip search evaluates.
    /// </summary>
    public static void FakeQuantize(ReadOnlySpan<float> weightNK, int n, int k, BlockQuantFormat format, Span<float> destinationNK,
        DataType scaleType = DataType.Float, ReadOnlySpan<float> clipMax = default)
    {
        if (destinationNK.Length != weightNK.Length) throw new ArgumentException("destination must match the weight's size");
        FakeQuantizeRows(weightNK, n, k, format, scaleType, clipMax, destinationNK, k, subtract: false);
    }

    /// <summary>
    /// The quantization error W - Q(W) of W given as [N, K] into <paramref name="errorNK"/>, whose rows are
    /// <paramref name="errorStride"/> &gt;= K floats apart (the floats past K in each row are left as they are): what a clip
    /// search weighs by the inputs' Gram matrices.
    /// </summary>
    public static void QuantizationError(ReadOnlySpan<float> weightNK, int n, int k, BlockQuantFormat format, Span<float> errorNK, int errorStride,
        DataType scaleType = DataType.Float, ReadOnlySpan<float> clipMax = default)
    {
        if (errorStride < k || errorNK.Length < (long)(n - 1) * errorStride + k) throw new ArgumentException($"error rows of {errorStride} floats cannot hold [N={n}, K={k}] in {errorNK.Length}");
        FakeQuantizeRows(weightNK, n, k, format, scaleType, clipMax, errorNK, errorStride, subtract: true);
    }

    /// <summary>
    /// An AWQ scale search's trial weight Q(W diag(s)) diag(s)^-1 of W given as [N, K], written transposed into
    /// <paramref name="destinationKN"/> [K, N], the graph's MatMul layout: the same values as multiplying each row by
    /// <paramref name="inputScales"/> (s, one per input channel), <see cref="FakeQuantize"/>, dividing by s and transposing,
    /// in one parallel pass over stripes of rows.
    /// </summary>
    public static void FakeQuantizeScaledTransposed(ReadOnlySpan<float> weightNK, int n, int k, ReadOnlySpan<float> inputScales, BlockQuantFormat format,
        Span<float> destinationKN, DataType scaleType = DataType.Float, ReadOnlySpan<float> clipMax = default)
    {
        if (destinationKN.Length != weightNK.Length) throw new ArgumentException("destination must match the weight's size");
        if (!inputScales.IsEmpty && inputScales.Length != k) throw new ArgumentException($"input scales hold {inputScales.Length} values, the weight has K={k}");
        int blocks = CheckArguments(weightNK, n, k, format, scaleType, clipMax);
        const int stripe = 16;   // rows per work item: the transposed writes are runs of 16 floats
        int stripes = (n + stripe - 1) / stripe;
        unsafe
        {
            fixed (float* wp = weightNK)
            fixed (float* dp = destinationKN)
            fixed (float* cp = clipMax)
            fixed (float* sp = inputScales)
            {
                float* wPtr = wp, dPtr = dp, cPtr = cp, sPtr = sp;
                int clipLength = clipMax.Length, scaleLength = inputScales.Length;
                ForEach(stripes, (long)n * k, first =>
                {
                    int row0 = first * stripe, rows = Math.Min(stripe, n - row0);
                    // Tile rows padded past K: rows 2^m floats apart would share cache sets when the tile is read down a column.
                    int tileStride = k + 16;
                    var tile = System.Buffers.ArrayPool<float>.Shared.Rent(rows * tileStride);
                    try
                    {
                        var clip = new ReadOnlySpan<float>(cPtr, clipLength);
                        var scales = new ReadOnlySpan<float>(sPtr, scaleLength);
                        for (int r = 0; r < rows; r++)
                        {
                            int row = row0 + r;
                            FakeQuantizeRow(new ReadOnlySpan<float>(wPtr + (long)row * k, k), tile.AsSpan(r * tileStride, k), format, scaleType,
                                clip.IsEmpty ? default : clip.Slice(row * blocks, blocks), scales, subtract: false);
                        }
                        Ir.Tensors.TensorKernels.TransposeStrided<float>(tile, tileStride, rows, k, new Span<float>(dPtr + row0, (k - 1) * n + rows), n);
                    }
                    finally
                    {
                        System.Buffers.ArrayPool<float>.Shared.Return(tile);
                    }
                });
            }
        }
    }

    /// <summary>Rows of <see cref="FakeQuantize"/> (or, with <paramref name="subtract"/>, of W - Q(W)) into destination rows
    /// <paramref name="stride"/> floats apart, in parallel when the matrix is large.</summary>
    private static unsafe void FakeQuantizeRows(ReadOnlySpan<float> weightNK, int n, int k, BlockQuantFormat format, DataType scaleType, ReadOnlySpan<float> clipMax,
        Span<float> destination, int stride, bool subtract)
    {
        int blocks = CheckArguments(weightNK, n, k, format, scaleType, clipMax);
        fixed (float* wp = weightNK)
        fixed (float* dp = destination)
        fixed (float* cp = clipMax)
        {
            float* wPtr = wp, dPtr = dp, cPtr = cp;
            int clipLength = clipMax.Length;
            ForEachRow(n, k, row => FakeQuantizeRow(new ReadOnlySpan<float>(wPtr + (long)row * k, k), new Span<float>(dPtr + (long)row * stride, k), format,
                scaleType, clipLength == 0 ? default : new ReadOnlySpan<float>(cPtr + (long)row * blocks, blocks), default, subtract));
        }
    }

    /// <summary>
    /// One row's values Dequantize(Quantize(w s)) / s, (code - zero) * scale with the same f32 operations, without the packed codes
    /// (no s when <paramref name="inputScales"/> is empty; with <paramref name="subtract"/>, w minus them). Each block is read whole before
    /// it is written, so <paramref name="row"/> may alias <paramref name="destination"/>.
    /// </summary>
    private static void FakeQuantizeRow(ReadOnlySpan<float> row, Span<float> destination, BlockQuantFormat format, DataType scaleType,
        ReadOnlySpan<float> clipRow, ReadOnlySpan<float> inputScales, bool subtract)
    {
        Span<float> work = stackalloc float[format.BlockSize];
        Span<float> original = subtract ? stackalloc float[format.BlockSize] : default;
        int k = row.Length;
        for (int b = 0, start = 0; start < k; b++, start += format.BlockSize)
        {
            int len = Math.Min(format.BlockSize, k - start);
            scoped ReadOnlySpan<float> values = row.Slice(start, len);
            var blockScales = inputScales.IsEmpty ? default : inputScales.Slice(start, len);
            float clip = clipRow.IsEmpty ? float.PositiveInfinity : clipRow[b];
            var output = destination.Slice(start, len);
            if (FakeQuantizeBlockVectorized(values, blockScales, output, work, format, scaleType, clip, subtract)) continue;
            var codes = work[..len];
            if (subtract) values.CopyTo(original);
            if (!blockScales.IsEmpty)
            {
                TensorPrimitives.Multiply(values, blockScales, codes);
                values = codes;
            }
            var p = Codes(values, codes, format, scaleType, clip);
            TensorPrimitives.Subtract(codes, p.ZeroPoint, codes);
            TensorPrimitives.Multiply(codes, p.Scale, output);
            if (!blockScales.IsEmpty) TensorPrimitives.Divide(output, blockScales, output);
            if (subtract) TensorPrimitives.Subtract(original[..len], output, output);
        }
    }

    /// <summary>
    /// <see cref="FakeQuantizeRow"/>'s block in 256-bit vectors, one pass for the range and one for the codes: the same f32 operations
    /// element by element as <see cref="Codes"/> and the steps around it (multiply by s, clamp to the clip, divide by the scale, round
    /// half to even, add the zero point, clamp to the codes, subtract the zero point, multiply by the scale, divide by s, subtract from
    /// w), so the same values. False, with nothing written, where it does not apply: a block whose length is not a multiple of the
    /// vector width, no vector hardware, or a non-finite value (the scalar path then reports it). The scale and zero point come from
    /// <see cref="Parameters"/>, as in the scalar path. The hardware min and max differ from the IEEE ones only on NaN (excluded) and on
    /// which zero they pick, which changes no result: the range is widened to 0 anyway, and a code is never -0 (adding the zero point
    /// turns -0 into +0).
    /// </summary>
    private static bool FakeQuantizeBlockVectorized(ReadOnlySpan<float> values, ReadOnlySpan<float> inputScales, Span<float> destination, Span<float> work,
        BlockQuantFormat format, DataType scaleType, float clip, bool subtract)
    {
        int len = values.Length, width = Vector256<float>.Count;
        if (!Vector256.IsHardwareAccelerated || len % width != 0 || !(clip > 0)) return false;
        bool scaled = !inputScales.IsEmpty;
        var low = Vector256.Create(-clip);
        var high = Vector256.Create(clip);
        var min = Vector256.Create(float.PositiveInfinity);
        var max = Vector256.Create(float.NegativeInfinity);
        var nonFinite = Vector256<float>.Zero;
        ref float source = ref MemoryMarshal.GetReference(values);
        ref float sValues = ref MemoryMarshal.GetReference(inputScales);
        ref float scratch = ref MemoryMarshal.GetReference(work);
        ref float target = ref MemoryMarshal.GetReference(destination);
        if (work.Length < len || destination.Length != len || (scaled && inputScales.Length != len)) throw new ArgumentException("block spans differ in length");
        for (nuint i = 0; i < (nuint)len; i += (nuint)width)
        {
            // Without input scales or a clip, the multiply by 1 and the clamp to +-infinity leave every finite value as it is.
            var v = Vector256.LoadUnsafe(ref source, i) * (scaled ? Vector256.LoadUnsafe(ref sValues, i) : Vector256<float>.One);
            v = Vector256.MinNative(Vector256.MaxNative(v, low), high);
            nonFinite |= ~Vector256.Equals(v - v, Vector256<float>.Zero);   // x - x is 0 for finite x, NaN otherwise
            min = Vector256.MinNative(min, v);
            max = Vector256.MaxNative(max, v);
            v.StoreUnsafe(ref scratch, i);
        }
        if (Vector256.ExtractMostSignificantBits(nonFinite) != 0) return false;

        var (scale, zero) = Parameters(HorizontalMin(min), HorizontalMax(max), format, scaleType);
        var scaleV = Vector256.Create(scale);
        var zeroV = Vector256.Create((float)zero);
        var maxCode = Vector256.Create((float)format.MaxCode);
        for (nuint i = 0; i < (nuint)len; i += (nuint)width)
        {
            var q = Vector256.Round(Vector256.LoadUnsafe(ref scratch, i) / scaleV) + zeroV;
            q = Vector256.MinNative(Vector256.MaxNative(q, Vector256<float>.Zero), maxCode);
            var w = (q - zeroV) * scaleV;
            if (scaled) w /= Vector256.LoadUnsafe(ref sValues, i);
            if (subtract) w = Vector256.LoadUnsafe(ref source, i) - w;
            w.StoreUnsafe(ref target, i);
        }
        return true;
    }

    /// <summary>Checks a weight [N, K] and its clip values [N, k_blocks] (empty: none) against each other and the scale type
    /// (rejected up front when unsupported); returns k_blocks.</summary>
    private static int CheckArguments(ReadOnlySpan<float> weightNK, int n, int k, BlockQuantFormat format, DataType scaleType, ReadOnlySpan<float> clipMax)
    {
        if (n <= 0 || k <= 0) throw new ArgumentException($"weight shape [K={k}, N={n}] must be positive");
        if (weightNK.Length != (long)n * k) throw new ArgumentException($"weight holds {weightNK.Length} values, [N={n}, K={k}] needs {(long)n * k}");
        int blocks = format.BlockCount(k);
        if (!clipMax.IsEmpty && clipMax.Length != (long)n * blocks)
            throw new ArgumentException($"clip values hold {clipMax.Length} entries, [N={n}, k_blocks={blocks}] needs {(long)n * blocks}");
        _ = QuantizedWeight.EncodeScales([], scaleType);
        return blocks;
    }

    /// <summary>Runs <paramref name="body"/> for each row, in parallel when the matrix is large enough to pay for it.</summary>
    private static void ForEachRow(int rows, int rowLength, Action<int> body) => ForEach(rows, (long)rows * rowLength, body);

    /// <summary>Runs <paramref name="body"/> for each of <paramref name="items"/> work items covering <paramref name="values"/> values, in
    /// parallel when there are enough values to pay for it.</summary>
    private static void ForEach(int items, long values, Action<int> body)
    {
        if (values < 1 << 18) for (int i = 0; i < items; i++) body(i);
        else Parallel.For(0, items, body);
    }

    /// <summary>Smallest value of <paramref name="type"/> that is &gt;= <paramref name="scale"/> (scale positive).</summary>
    public static float RoundScaleUp(float scale, DataType type)
    {
        switch (type)
        {
            case DataType.Float:
                return scale;
            case DataType.Float16:
                {
                    var h = (Half)scale;
                    if ((float)h < scale) h = Half.BitIncrement(h);
                    if (Half.IsInfinity(h)) throw new InvalidDataException($"scale {scale} does not fit in f16");
                    return (float)h;
                }
            case DataType.BFloat16:
                {
                    uint bits = BitConverter.SingleToUInt32Bits(scale);
                    if ((bits & 0xFFFF) != 0) bits = (bits & 0xFFFF0000u) + 0x10000u;
                    float r = BitConverter.UInt32BitsToSingle(bits);
                    if (float.IsInfinity(r)) throw new InvalidDataException($"scale {scale} does not fit in bf16");
                    return r;
                }
            default:
                throw new ArgumentException($"scale type {type.Name()} is not supported: use f32, f16 or bf16");
        }
    }

    /// <summary>Packs one code per byte into <paramref name="destination"/>: 4-bit low nibble first, 8-bit as is.</summary>
    public static void PackCodes(ReadOnlySpan<byte> codes, Span<byte> destination, int bits)
    {
        if (bits == 8)
        {
            codes.CopyTo(destination);
            return;
        }
        for (int j = 0; j < destination.Length; j++)
        {
            int lo = 2 * j < codes.Length ? codes[2 * j] : 0;
            int hi = 2 * j + 1 < codes.Length ? codes[2 * j + 1] : 0;
            destination[j] = (byte)(lo | (hi << 4));
        }
    }

    /// <summary>Inverse of <see cref="PackCodes"/>: fills <paramref name="codes"/> (one per byte).</summary>
    public static void UnpackCodes(ReadOnlySpan<byte> packed, Span<byte> codes, int bits)
    {
        if (bits == 8)
        {
            packed[..codes.Length].CopyTo(codes);
            return;
        }
        for (int i = 0; i < codes.Length; i++)
            codes[i] = (byte)((packed[i >> 1] >> ((i & 1) * 4)) & 0xF);
    }

    private static void SetPacked(Span<byte> row, int index, int value, int bits)
    {
        if (bits == 8)
        {
            row[index] = (byte)value;
            return;
        }
        int shift = (index & 1) * 4;
        row[index >> 1] = (byte)((row[index >> 1] & ~(0xF << shift)) | (value << shift));
    }

    private static int GetPacked(ReadOnlySpan<byte> row, int index, int bits) =>
        bits == 8 ? row[index] : (row[index >> 1] >> ((index & 1) * 4)) & 0xF;

    internal static float[] Transpose(float[] source, int rows, int cols)
    {
        var result = new float[source.LongLength];
        Ir.Tensors.TensorKernels.Transpose<float>(source, rows, cols, result);
        return result;
    }

    private static float HorizontalMin(Vector256<float> v)
    {
        float m = v.GetElement(0);
        for (int i = 1; i < Vector256<float>.Count; i++) m = MathF.Min(m, v.GetElement(i));
        return m;
    }

    private static float HorizontalMax(Vector256<float> v)
    {
        float m = v.GetElement(0);
        for (int i = 1; i < Vector256<float>.Count; i++) m = MathF.Max(m, v.GetElement(i));
        return m;
    }
}
