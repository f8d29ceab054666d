using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using OnnxMoe.Ir;
using Tensor = OnnxMoe.Ir.Tensors.Tensor;

namespace OnnxMoe.Passes.Quantization;

/// <summary>
/// Reads a graph weight W [K, N] (f32, f16 or bf16) as floats transposed to [N, K], optionally
/// multiplying input channel k by <c>inputScales[k]</c> first (AWQ). The tensor is consumed through
/// <see cref="Tensor.WriteTo"/>, so a file tensor is read in chunks and only the [N, K] result is resident.
/// </summary>
public static class WeightMatrixReader
{
    public static float[] ReadTransposed(Tensor weight, ReadOnlySpan<float> inputScales = default)
    {
        if (weight.Shape.Length != 2) throw new ArgumentException($"weight {weight} is not a matrix");
        if (weight.DataType is not (DataType.Float or DataType.Float16 or DataType.BFloat16))
            throw new ArgumentException($"weight {weight} is not f32, f16 or bf16");
        long k = weight.Shape[0], n = weight.Shape[1];
        if (k * n > Array.MaxLength) throw new InvalidDataException($"weight {weight} has {k * n} elements: too many to quantize as one matrix");
        if (!inputScales.IsEmpty && inputScales.Length != k)
            throw new ArgumentException($"input scales hold {inputScales.Length} values, weight {weight} has K={k}");
        var result = new float[k * n];
        using var sink = new TransposingSink(result, (int)k, (int)n, weight.DataType, inputScales.IsEmpty ? null : inputScales.ToArray());
        weight.WriteTo(sink);
        sink.Finish();
        return result;
    }

    /// <summary>Collects whole rows of W, converts a stripe of rows to floats and scatters them transposed.</summary>
    private sealed class TransposingSink : Stream
    {
        private const int StripeRows = 32;
        private readonly float[] _destination;
        private readonly int _k, _n, _elementSize;
        private readonly DataType _type;
        private readonly float[]? _inputScales;
        private readonly byte[] _stripeBytes;
        private readonly float[] _stripe;
        private int _filled;   // bytes in _stripeBytes
        private int _nextRow;  // first row of the current stripe

        public TransposingSink(float[] destination, int k, int n, DataType type, float[]? inputScales)
        {
            _destination = destination;
            _k = k;
            _n = n;
            _type = type;
            _elementSize = type == DataType.Float ? 4 : 2;
            _inputScales = inputScales;
            int rows = Math.Max(1, Math.Min(StripeRows, k));
            _stripeBytes = new byte[(long)rows * n * _elementSize];
            _stripe = new float[(long)rows * n];
        }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            while (buffer.Length > 0)
            {
                int take = Math.Min(buffer.Length, _stripeBytes.Length - _filled);
                buffer[..take].CopyTo(_stripeBytes.AsSpan(_filled));
                _filled += take;
                buffer = buffer[take..];
                if (_filled == _stripeBytes.Length) Flush();
            }
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Flush()
        {
            int rowBytes = _n * _elementSize;
            int rows = _filled / rowBytes;
            if (rows == 0) return;
            if (_nextRow + rows > _k) throw new InvalidDataException($"weight tensor produced more bytes than its shape [{_k},{_n}] holds");
            var raw = _stripeBytes.AsSpan(0, rows * rowBytes);
            var values = _stripe.AsSpan(0, rows * _n);
            Ir.Tensors.TensorKernels.Convert(raw, _type, MemoryMarshal.AsBytes(values), DataType.Float);
            if (_inputScales != null)
                for (int r = 0; r < rows; r++)
                    TensorPrimitives.Multiply(values.Slice(r * _n, _n), _inputScales[_nextRow + r], values.Slice(r * _n, _n));
            Ir.Tensors.TensorKernels.TransposeStrided<float>(values, _n, rows, _n, _destination.AsSpan(_nextRow), _k);
            _nextRow += rows;
            int rest = _filled - rows * rowBytes;
            _stripeBytes.AsSpan(rows * rowBytes, rest).CopyTo(_stripeBytes);
            _filled = rest;
        }

        public void Finish()
        {
            Flush();
            if (_nextRow != _k || _filled != 0)
                throw new InvalidDataException($"weight tensor produced {(long)_nextRow * _n * _elementSize + _filled} bytes, its shape needs {(long)_k * _n * _elementSize}");
        }

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
