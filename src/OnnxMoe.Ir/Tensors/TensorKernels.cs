using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Numerics.Tensors;

namespace OnnxMoe.Ir.Tensors;

/// <summary>
/// Fast element kernels for streaming weights: float-type conversions on raw little-endian bytes
/// and a cache-blocked 2-D transpose. Results are bit-identical to the plain scalar definitions
/// (bf16 -> f32 is the exact 16-bit shift; f32 -> f16 rounds to nearest even as
/// <see cref="TensorPrimitives.ConvertToHalf(ReadOnlySpan{float}, Span{Half})"/>; f64 -> f32 is the C# cast).
/// </summary>
public static class TensorKernels
{
    /// <summary>Float element types <see cref="Convert"/> reads (<see cref="DataType.Float"/>, <see cref="DataType.Float16"/>, <see cref="DataType.BFloat16"/>, <see cref="DataType.Double"/>).</summary>
    public static bool IsConvertibleSource(DataType t) => t is DataType.Float or DataType.Float16 or DataType.BFloat16 or DataType.Double;

    /// <summary>bf16 bit patterns to f32 (exact: the bits shifted left by 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]     // hot loops: skip tier-0 code
    public static void BFloat16ToSingle(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException("destination is shorter than source");
        int n = source.Length, i = 0;
        ref ushort s = ref MemoryMarshal.GetReference(source);
        ref uint d = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(destination));
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= n - Vector256<ushort>.Count; i += Vector256<ushort>.Count)
            {
                var (lo, hi) = Vector256.Widen(Vector256.LoadUnsafe(ref s, (nuint)i));
                Vector256.ShiftLeft(lo, 16).StoreUnsafe(ref d, (nuint)i);
                Vector256.ShiftLeft(hi, 16).StoreUnsafe(ref d, (nuint)(i + Vector256<uint>.Count));
            }
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            for (; i <= n - Vector128<ushort>.Count; i += Vector128<ushort>.Count)
            {
                var (lo, hi) = Vector128.Widen(Vector128.LoadUnsafe(ref s, (nuint)i));
                Vector128.ShiftLeft(lo, 16).StoreUnsafe(ref d, (nuint)i);
                Vector128.ShiftLeft(hi, 16).StoreUnsafe(ref d, (nuint)(i + Vector128<uint>.Count));
            }
        }
        for (; i < n; i++) Unsafe.Add(ref d, i) = (uint)Unsafe.Add(ref s, i) << 16;
    }

    /// <summary>f32 to bf16 bit patterns, rounded to nearest even (NaN to the quiet NaN 0x7FC0): the bits plus 0x7FFF plus the kept
    /// part's lowest bit, shifted right by 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SingleToBFloat16(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException("destination is shorter than source");
        int n = source.Length, i = 0;
        ref uint s = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(source));
        ref ushort d = ref MemoryMarshal.GetReference(destination);
        if (Vector256.IsHardwareAccelerated)
        {
            var bias = Vector256.Create(0x7FFFu);
            var one = Vector256.Create(1u);
            var nan = Vector256.Create(0x7FC0u);
            for (; i <= n - Vector256<ushort>.Count; i += Vector256<ushort>.Count)
            {
                var lo = Vector256.LoadUnsafe(ref s, (nuint)i);
                var hi = Vector256.LoadUnsafe(ref s, (nuint)(i + Vector256<uint>.Count));
                Vector256.Narrow(Round(lo, bias, one, nan), Round(hi, bias, one, nan)).StoreUnsafe(ref d, (nuint)i);
            }
        }
        for (; i < n; i++)
        {
            uint bits = Unsafe.Add(ref s, i);
            Unsafe.Add(ref d, i) = float.IsNaN(BitConverter.UInt32BitsToSingle(bits)) ? (ushort)0x7FC0 : (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
        }

        static Vector256<uint> Round(Vector256<uint> bits, Vector256<uint> bias, Vector256<uint> one, Vector256<uint> nan)
        {
            var f = bits.AsSingle();
            var rounded = Vector256.ShiftRightLogical(bits + bias + (Vector256.ShiftRightLogical(bits, 16) & one), 16);
            return Vector256.ConditionalSelect(Vector256.Equals(f, f).AsUInt32(), rounded, nan);
        }
    }

    /// <summary>
    /// Converts raw elements of float type <paramref name="from"/> to <paramref name="to"/> (f32 or f16; or a plain
    /// copy when equal). Same values as converting to f32 first (<see cref="Tensor.ToFloatArray"/>) and then to f16
    /// with <see cref="TensorPrimitives.ConvertToHalf(ReadOnlySpan{float}, Span{Half})"/>.
    /// </summary>
    public static void Convert(ReadOnlySpan<byte> source, DataType from, Span<byte> destination, DataType to)
    {
        if (!IsConvertibleSource(from)) throw new ArgumentException($"cannot convert from {from.Name()}: not a float type");
        if (!(to is DataType.Float or DataType.Float16 || to == from)) throw new ArgumentException($"cannot convert to {to.Name()}: only f32 and f16 targets");
        int fromSize = from.BitWidth() / 8, toSize = to.BitWidth() / 8;
        if (source.Length % fromSize != 0) throw new ArgumentException("source length is not a whole number of elements");
        int n = source.Length / fromSize;
        if (destination.Length < (long)n * toSize) throw new ArgumentException("destination is too short");
        if (from == to) { source.CopyTo(destination); return; }
        if (to == DataType.Float)
        {
            var d = MemoryMarshal.Cast<byte, float>(destination)[..n];
            switch (from)
            {
                case DataType.BFloat16: BFloat16ToSingle(MemoryMarshal.Cast<byte, ushort>(source), d); break;
                case DataType.Float16: TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(source), d); break;
                case DataType.Double:
                    {
                        var s = MemoryMarshal.Cast<byte, double>(source);
                        for (int i = 0; i < s.Length; i++) d[i] = (float)s[i];
                        break;
                    }
            }
            return;
        }
        // to f16
        var h = MemoryMarshal.Cast<byte, Half>(destination)[..n];
        if (from == DataType.Float) { TensorPrimitives.ConvertToHalf(MemoryMarshal.Cast<byte, float>(source), h); return; }
        // bf16 / f64 -> f32 -> f16 through a small cache-resident staging buffer.
        const int Stage = 2048;
        Span<float> f = stackalloc float[Stage];
        for (int at = 0; at < n; at += Stage)
        {
            int m = Math.Min(Stage, n - at);
            var fs = f[..m];
            Convert(source.Slice(at * fromSize, m * fromSize), from, MemoryMarshal.AsBytes(fs), DataType.Float);
            TensorPrimitives.ConvertToHalf(fs, h.Slice(at, m));
        }
    }

    /// <summary>Full transpose: <paramref name="destination"/>[j, i] = <paramref name="source"/>[i, j] for a row-major [rows, cols] source.</summary>
    public static void Transpose<T>(ReadOnlySpan<T> source, int rows, int cols, Span<T> destination) where T : unmanaged =>
        TransposeRows(source, rows, cols, 0, cols, destination);

    /// <summary>
    /// Rows [<paramref name="firstRow"/>, <paramref name="firstRow"/> + <paramref name="rowCount"/>) of the
    /// [cols, rows] transpose of the row-major [rows, cols] <paramref name="source"/>, written contiguously to
    /// <paramref name="destination"/> (rowCount * rows elements). Cache-blocked, SIMD 8x8 blocks for 2- and
    /// 4-byte elements, parallel across row bands when the band is large.
    /// </summary>
    public static unsafe void TransposeRows<T>(ReadOnlySpan<T> source, int rows, int cols, int firstRow, int rowCount, Span<T> destination) where T : unmanaged
    {
        if (rows < 0 || cols < 0 || (long)rows * cols > source.Length) throw new ArgumentException($"source holds {source.Length} elements, not [{rows}, {cols}]");
        if (firstRow < 0 || rowCount < 0 || (long)firstRow + rowCount > cols) throw new ArgumentOutOfRangeException(nameof(firstRow), $"rows [{firstRow}, {firstRow + rowCount}) outside the {cols} rows of the transpose");
        if ((long)rowCount * rows > destination.Length) throw new ArgumentException("destination is too short");
        if (rowCount == 0 || rows == 0) return;
        fixed (T* s = source)
        fixed (T* d = destination)
        {
            long work = (long)rowCount * rows;
            int workers = Math.Min(Environment.ProcessorCount, (int)Math.Min(64, work / ParallelGrain));
            if (workers <= 1)
            {
                Band(s, rows, cols, firstRow, firstRow + rowCount, d, firstRow);
                return;
            }
            // Split the output rows into bands of whole tiles; each worker writes its own rows only.
            int per = (rowCount + workers - 1) / workers;
            per = (per + Tile - 1) / Tile * Tile;
            int bands = (rowCount + per - 1) / per;
            nint sp = (nint)s, dp = (nint)d;
            Parallel.For(0, bands, b =>
            {
                int j0 = firstRow + b * per, j1 = Math.Min(firstRow + rowCount, j0 + per);
                Band((T*)sp, rows, cols, j0, j1, (T*)dp, firstRow);
            });
        }
    }

    /// <summary>
    /// Transpose between strided layouts, on the calling thread: element (i, j) of the [<paramref name="rows"/>, <paramref name="cols"/>]
    /// matrix whose rows start <paramref name="sourceStride"/> elements apart goes to <c>destination[j * destinationStride + i]</c>
    /// (a stripe of rows of a larger matrix written as columns of its transpose). Elements of either span outside the matrix are
    /// neither read nor written.
    /// </summary>
    public static unsafe void TransposeStrided<T>(ReadOnlySpan<T> source, int sourceStride, int rows, int cols, Span<T> destination, int destinationStride)
        where T : unmanaged
    {
        if (rows <= 0 || cols <= 0) return;
        if (sourceStride < cols || source.Length < (long)(rows - 1) * sourceStride + cols)
            throw new ArgumentException($"source of {source.Length} elements does not hold {rows} rows of {cols}, {sourceStride} apart");
        if (destinationStride < rows || destination.Length < (long)(cols - 1) * destinationStride + rows)
            throw new ArgumentException($"destination of {destination.Length} elements does not hold {cols} rows of {rows}, {destinationStride} apart");
        fixed (T* s = source)
        fixed (T* d = destination)
        {
            for (int jt = 0; jt < cols; jt += Tile)
                for (int it = 0; it < rows; it += Tile)
                    TileKernel(s, sourceStride, it, Math.Min(it + Tile, rows), jt, Math.Min(jt + Tile, cols), d, destinationStride, 0);
        }
    }

    private const int Tile = 64;
    /// <summary>Elements below which a band is transposed on one thread.</summary>
    private const long ParallelGrain = 1 << 19;

    /// <summary>Output rows [j0, j1) (source columns); destination row j starts at (j - baseRow) * rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Band<T>(T* s, int rows, int cols, int j0, int j1, T* d, int baseRow) where T : unmanaged
    {
        for (int jt = j0; jt < j1; jt += Tile)
        {
            int jEnd = Math.Min(jt + Tile, j1);
            for (int it = 0; it < rows; it += Tile)
            {
                int iEnd = Math.Min(it + Tile, rows);
                TileKernel(s, cols, it, iEnd, jt, jEnd, d, rows, baseRow);
            }
        }
    }

    /// <summary>The tile of source rows [i0, i1) and columns [j0, j1) (source rows <paramref name="sStride"/> apart) transposed: element (i, j)
    /// to <c>d[(j - baseRow) * dStride + i]</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void TileKernel<T>(T* s, nint sStride, int i0, int i1, int j0, int j1, T* d, nint dStride, int baseRow) where T : unmanaged
    {
        int i8 = i0 + (i1 - i0) / 8 * 8, j8 = j0 + (j1 - j0) / 8 * 8;
        if (sizeof(T) == 4 && Avx.IsSupported)
        {
            for (int j = j0; j < j8; j += 8)
                for (int i = i0; i < i8; i += 8)
                    Block8x8F32((float*)s + i * sStride + j, sStride, (float*)d + (j - baseRow) * dStride + i, dStride);
        }
        else if (sizeof(T) == 2 && Sse2.IsSupported)
        {
            for (int j = j0; j < j8; j += 8)
                for (int i = i0; i < i8; i += 8)
                    Block8x8U16((ushort*)s + i * sStride + j, sStride, (ushort*)d + (j - baseRow) * dStride + i, dStride);
        }
        else
        {
            i8 = i0;
            j8 = j0;
        }
        // Edges (and the whole tile without SIMD): scalar.
        for (int j = j0; j < j1; j++)
        {
            T* drow = d + (j - baseRow) * dStride;
            int iStart = j < j8 ? i8 : i0;
            for (int i = iStart; i < i1; i++) drow[i] = s[i * sStride + j];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Block8x8F32(float* s, nint sStride, float* d, nint dStride)
    {
        var r0 = Avx.LoadVector256(s);
        var r1 = Avx.LoadVector256(s + sStride);
        var r2 = Avx.LoadVector256(s + 2 * sStride);
        var r3 = Avx.LoadVector256(s + 3 * sStride);
        var r4 = Avx.LoadVector256(s + 4 * sStride);
        var r5 = Avx.LoadVector256(s + 5 * sStride);
        var r6 = Avx.LoadVector256(s + 6 * sStride);
        var r7 = Avx.LoadVector256(s + 7 * sStride);
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(d, Avx.Permute2x128(u0, u4, 0x20));
        Avx.Store(d + dStride, Avx.Permute2x128(u1, u5, 0x20));
        Avx.Store(d + 2 * dStride, Avx.Permute2x128(u2, u6, 0x20));
        Avx.Store(d + 3 * dStride, Avx.Permute2x128(u3, u7, 0x20));
        Avx.Store(d + 4 * dStride, Avx.Permute2x128(u0, u4, 0x31));
        Avx.Store(d + 5 * dStride, Avx.Permute2x128(u1, u5, 0x31));
        Avx.Store(d + 6 * dStride, Avx.Permute2x128(u2, u6, 0x31));
        Avx.Store(d + 7 * dStride, Avx.Permute2x128(u3, u7, 0x31));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Block8x8U16(ushort* s, nint sStride, ushort* d, nint dStride)
    {
        var r0 = Sse2.LoadVector128(s);
        var r1 = Sse2.LoadVector128(s + sStride);
        var r2 = Sse2.LoadVector128(s + 2 * sStride);
        var r3 = Sse2.LoadVector128(s + 3 * sStride);
        var r4 = Sse2.LoadVector128(s + 4 * sStride);
        var r5 = Sse2.LoadVector128(s + 5 * sStride);
        var r6 = Sse2.LoadVector128(s + 6 * sStride);
        var r7 = Sse2.LoadVector128(s + 7 * sStride);
        var a0 = Sse2.UnpackLow(r0, r1).AsUInt32(); var a1 = Sse2.UnpackHigh(r0, r1).AsUInt32();
        var a2 = Sse2.UnpackLow(r2, r3).AsUInt32(); var a3 = Sse2.UnpackHigh(r2, r3).AsUInt32();
        var a4 = Sse2.UnpackLow(r4, r5).AsUInt32(); var a5 = Sse2.UnpackHigh(r4, r5).AsUInt32();
        var a6 = Sse2.UnpackLow(r6, r7).AsUInt32(); var a7 = Sse2.UnpackHigh(r6, r7).AsUInt32();
        var b0 = Sse2.UnpackLow(a0, a2).AsUInt64(); var b1 = Sse2.UnpackHigh(a0, a2).AsUInt64();
        var b2 = Sse2.UnpackLow(a1, a3).AsUInt64(); var b3 = Sse2.UnpackHigh(a1, a3).AsUInt64();
        var b4 = Sse2.UnpackLow(a4, a6).AsUInt64(); var b5 = Sse2.UnpackHigh(a4, a6).AsUInt64();
        var b6 = Sse2.UnpackLow(a5, a7).AsUInt64(); var b7 = Sse2.UnpackHigh(a5, a7).AsUInt64();
        Sse2.Store(d, Sse2.UnpackLow(b0, b4).AsUInt16());
        Sse2.Store(d + dStride, Sse2.UnpackHigh(b0, b4).AsUInt16());
        Sse2.Store(d + 2 * dStride, Sse2.UnpackLow(b1, b5).AsUInt16());
        Sse2.Store(d + 3 * dStride, Sse2.UnpackHigh(b1, b5).AsUInt16());
        Sse2.Store(d + 4 * dStride, Sse2.UnpackLow(b2, b6).AsUInt16());
        Sse2.Store(d + 5 * dStride, Sse2.UnpackHigh(b2, b6).AsUInt16());
        Sse2.Store(d + 6 * dStride, Sse2.UnpackLow(b3, b7).AsUInt16());
        Sse2.Store(d + 7 * dStride, Sse2.UnpackHigh(b3, b7).AsUInt16());
    }
}
