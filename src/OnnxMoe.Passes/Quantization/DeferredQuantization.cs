using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Passes.Quantization;

/// <summary>
/// One weight's quantization, run when the writer first asks for one of its three tensors (codes,
/// scales, zero points) and shared by them. The result is kept only until each part has been taken
/// once, so a writer streaming initializers in order holds one weight's result at a time; a part
/// asked for again recomputes. Reads the source weight's bytes only then.
/// </summary>
internal sealed class DeferredQuantization
{
    private readonly Tensor _weight;
    private readonly BlockQuantFormat _format;
    private readonly DataType _scaleType;
    private readonly AwqWeightScaling? _awq;
    private readonly string _weightName;
    private readonly object _gate = new();
    private QuantizedWeight? _result;
    private bool _codesTaken, _scalesTaken, _zeroPointsTaken;

    public DeferredQuantization(string weightName, Tensor weight, BlockQuantFormat format, DataType scaleType, AwqWeightScaling? awq)
    {
        _weightName = weightName;
        _weight = weight;
        _format = format;
        _scaleType = scaleType;
        _awq = awq;
        K = checked((int)weight.Shape[0]);
        N = checked((int)weight.Shape[1]);
    }

    public int K { get; }
    public int N { get; }

    public LazyTensor CodesTensor(string name) =>
        new(DataType.UInt8, [N, _format.BlockCount(K), _format.BlockBytes], () => Take(Part.Codes)) { Name = name };

    public LazyTensor ScalesTensor(string name) =>
        new(_scaleType, [N, _format.BlockCount(K)], () => Take(Part.Scales)) { Name = name };

    public LazyTensor? ZeroPointsTensor(string name) => _format.Symmetric ? null :
        new(DataType.UInt8, [N, _format.ZeroPointBytesPerRow(K)], () => Take(Part.ZeroPoints)) { Name = name };

    /// <summary>Runs the quantization now (not cached): what the lazy tensors will hold.</summary>
    public QuantizedWeight Compute()
    {
        try
        {
            var w = WeightMatrixReader.ReadTransposed(_weight, _awq?.InputScales);
            return BlockQuantizer.Quantize(w, N, K, _format, _scaleType, _awq?.ClipMax);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"quantizing weight {_weightName}: {e.Message}", e);
        }
    }

    private enum Part { Codes, Scales, ZeroPoints }

    private byte[] Take(Part part)
    {
        lock (_gate)
        {
            var result = _result ??= Compute();
            byte[] bytes;
            switch (part)
            {
                case Part.Codes: bytes = result.PackedCodes; _codesTaken = true; break;
                case Part.Scales: bytes = result.ScaleBytes(); _scalesTaken = true; break;
                default: bytes = result.PackedZeroPoints!; _zeroPointsTaken = true; break;
            }
            if (_codesTaken && _scalesTaken && (_zeroPointsTaken || _format.Symmetric))
            {
                _result = null;
                _codesTaken = _scalesTaken = _zeroPointsTaken = false;
            }
            return bytes;
        }
    }
}
