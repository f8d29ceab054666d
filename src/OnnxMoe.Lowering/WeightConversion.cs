using System.Runtime.InteropServices;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Lowering;

/// <summary>
/// Checkpoint weights as artifact initializers. Conversions (dtype change, [out,in] to [in,out]
/// transpose) are <see cref="LazyTensor"/>s run when the writer streams that tensor, so only one
/// converted tensor is in memory at a time; unchanged tensors are passed through as-is.
/// </summary>
public static class WeightConversion
{
    /// <summary><paramref name="source"/> in element type <paramref name="target"/> (same shape).</summary>
    public static Tensor Convert(Tensor source, DataType target)
    {
        if (source.DataType == target) return source;
        CheckFloat(source, target);
        return new LazyTensor(target, source.Shape, () =>
        {
            var f = source.ToFloatArray();
            return Encode(f, target);
        }) { Name = source.Name };
    }

    /// <summary>A 2-D [out, in] linear weight as the [in, out] MatMul operand in <paramref name="target"/>.</summary>
    public static Tensor TransposeLinear(Tensor source, DataType target)
    {
        if (source.Shape.Length != 2) throw new ArgumentException($"linear weight {source.Name} has rank {source.Shape.Length}, expected 2");
        CheckFloat(source, target);
        int rows = checked((int)source.Shape[0]), cols = checked((int)source.Shape[1]);
        return new LazyTensor(target, [cols, rows], () =>
        {
            var f = source.ToFloatArray();
            var bytes = new byte[target.ByteCount(f.LongLength)];
            if (target == DataType.Float) Transpose(f, MemoryMarshal.Cast<byte, float>(bytes.AsSpan()), rows, cols);
            else
            {
                // Convert in place first (f32 -> f16 bits, vectorised), then transpose the 16-bit elements.
                var halves = new Half[f.Length];
                System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(f, halves);
                Transpose<Half>(halves, MemoryMarshal.Cast<byte, Half>(bytes.AsSpan()), rows, cols);
            }
            return bytes;
        }) { Name = source.Name };
    }

    /// <summary>Several tensors concatenated along axis 0 (after conversion), computed lazily.</summary>
    public static Tensor ConcatRows(IReadOnlyList<Tensor> parts, DataType target)
    {
        long cols = parts[0].Shape.Length == 2 ? parts[0].Shape[1] : 1;
        long rows = parts.Sum(p => p.Shape[0]);
        foreach (var p in parts) CheckFloat(p, target);
        return new LazyTensor(target, parts[0].Shape.Length == 2 ? [rows, cols] : [rows], () =>
        {
            var all = new float[rows * cols];
            long at = 0;
            foreach (var p in parts)
            {
                var f = p.ToFloatArray();
                f.CopyTo(all, at);
                at += f.Length;
            }
            return Encode(all, target);
        });
    }

    private static void CheckFloat(Tensor source, DataType target)
    {
        if (source.DataType is not (DataType.Float or DataType.Float16 or DataType.BFloat16 or DataType.Double))
            throw new Checkpoints.CheckpointException($"tensor {source.Name}: element type {source.DataType.Name()} is not a float type");
        if (target is not (DataType.Float or DataType.Float16))
            throw new ArgumentException($"weights can be written as f32 or f16, not {target.Name()}");
    }

    public static byte[] Encode(float[] values, DataType target)
    {
        if (target == DataType.Float) return MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
        var bytes = new byte[values.LongLength * 2];
        System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(values, MemoryMarshal.Cast<byte, Half>(bytes.AsSpan()));
        return bytes;
    }

    /// <summary>dst[j, i] = src[i, j] for src [rows, cols], in cache-friendly tiles.</summary>
    private static void Transpose<T>(ReadOnlySpan<T> src, Span<T> dst, int rows, int cols)
    {
        const int Tile = 32;
        for (int i0 = 0; i0 < rows; i0 += Tile)
        {
            int i1 = Math.Min(i0 + Tile, rows);
            for (int j0 = 0; j0 < cols; j0 += Tile)
            {
                int j1 = Math.Min(j0 + Tile, cols);
                for (int i = i0; i < i1; i++)
                {
                    int rowBase = i * cols;
                    for (int j = j0; j < j1; j++) dst[j * rows + i] = src[rowBase + j];
                }
            }
        }
    }
}
