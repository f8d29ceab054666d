using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Onnx;

/// <summary>
/// GraphProto.quantization_annotation entry, kept in <see cref="Graph.Extras"/>: the tensor named
/// <see cref="TensorName"/> is quantized with the parameter tensors named in
/// <see cref="QuantParameterTensorNames"/> (keys like SCALE_TENSOR, ZERO_POINT_TENSOR).
/// </summary>
public sealed record TensorAnnotation(string? TensorName, IReadOnlyList<KeyValuePair<string, string>> QuantParameterTensorNames);

/// <summary>
/// Raw bytes of a tensor whose element type has no known width (an unknown or UNDEFINED
/// TensorProto.DataType code). Kept so such files round-trip; passes should leave it alone.
/// </summary>
public sealed class UnknownTypeTensor : Tensor
{
    private readonly byte[] _data;

    public UnknownTypeTensor(DataType dataType, long[] shape, byte[] rawData) : base(dataType, shape) => _data = rawData;

    public override long ByteLength => _data.LongLength;
    public override bool IsMaterialized => true;
    public override ReadOnlySpan<byte> GetBytes() => _data;
}
