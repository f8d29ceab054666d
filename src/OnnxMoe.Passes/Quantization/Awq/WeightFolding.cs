using System.Numerics.Tensors;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Passes.Quantization.Awq;

/// <summary>
/// Exact folding of AWQ scales into initializers. Each fold replaces the value's tensor with a lazy
/// one that reads the previous tensor and multiplies when its bytes are asked for (so a multi-GB
/// model is never held scaled in memory); folds compose. Element type and shape are kept.
/// </summary>
public static class WeightFolding
{
    /// <summary>W [K, N]: row k times <paramref name="scales"/>[k] (the linear's input channels).</summary>
    public static void ScaleRows(Value weight, float[] scales) => Replace(weight, 2, (values, shape) =>
    {
        long n = shape[1];
        for (int k = 0; k < shape[0]; k++)
        {
            var row = values.AsSpan((int)(k * n), (int)n);
            TensorPrimitives.Multiply(row, scales[k], row);
        }
    }, scales.Length, 0);

    /// <summary>W [K, N]: column n times <paramref name="scales"/>[n] (the linear's output channels).</summary>
    public static void ScaleColumns(Value weight, float[] scales) => Replace(weight, 2, (values, shape) =>
    {
        long n = shape[1];
        for (int k = 0; k < shape[0]; k++)
        {
            var row = values.AsSpan((int)(k * n), (int)n);
            TensorPrimitives.Multiply(row, scales, row);
        }
    }, scales.Length, 1);

    /// <summary>v [C]: element c times <paramref name="scales"/>[c] (a norm weight or a bias).</summary>
    public static void ScaleVector(Value vector, float[] scales) =>
        Replace(vector, 1, (values, _) => TensorPrimitives.Multiply(values, scales, values), scales.Length, 0);

    private static void Replace(Value value, int rank, Action<float[], long[]> scale, int scaleLength, int axis)
    {
        var source = value.ConstValue ?? throw new ArgumentException($"{value.Name} is not an initializer");
        if (source.Shape.Length != rank) throw new ArgumentException($"{value.Name} has rank {source.Shape.Length}, expected {rank}");
        if (source.Shape[axis] != scaleLength) throw new ArgumentException($"{value.Name} has {source.Shape[axis]} channels on axis {axis}, {scaleLength} scales were given");
        if (source.DataType is not (DataType.Float or DataType.Float16 or DataType.BFloat16))
            throw new ArgumentException($"{value.Name} is {source.DataType.Name()}, not a float type");
        var shape = source.Shape;
        value.ConstValue = new LazyTensor(source.DataType, shape, () =>
        {
            var values = source.ToFloatArray();
            scale(values, shape);
            return GraphBuilder.FloatBytes(source.DataType, values);
        }) { Name = source.Name ?? value.Name };
    }
}
