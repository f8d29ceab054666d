using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Lowering;
using static OnnxMoe.Tests.Perf.TensorKernelsTests;

namespace OnnxMoe.Tests.Perf;

/// <summary>
/// <see cref="WeightConversion"/>'s streamed writes (<see cref="Tensor.WriteTo"/>, chunked, banded, from file
/// tensors read into scratch memory) and its materialised bytes (<see cref="Tensor.GetBytes"/>) equal the
/// scalar reference for every source/target pair, with shapes that span several chunks and bands and are
/// not multiples of the tile size.
/// </summary>
public sealed class WeightConversionStreamingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-perf-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static TheoryData<DataType, DataType> AllPairs()
    {
        var d = new TheoryData<DataType, DataType>();
        foreach (var s in new[] { DataType.Float, DataType.Float16, DataType.BFloat16, DataType.Double })
            foreach (var t in new[] { DataType.Float, DataType.Float16 }) d.Add(s, t);
        return d;
    }

    /// <summary>The tensor as a file tensor (at an odd offset in a file) and as an in-memory tensor.</summary>
    private IEnumerable<Tensor> Sources(DataType t, long[] shape, byte[] raw, List<SharedFile> files)
    {
        string path = Path.Combine(_dir, $"{Guid.NewGuid():N}.bin");
        File.WriteAllBytes(path, [.. new byte[40], .. raw, 1, 2, 3]);
        var file = new SharedFile(path);
        files.Add(file);
        yield return new FileTensor(t, shape, file, 40, raw.Length) { Name = "w" };
        yield return new InMemoryTensor(t, shape, raw) { Name = "w" };
    }

    private static byte[] Streamed(Tensor t)
    {
        using var ms = new MemoryStream();
        t.WriteTo(ms);
        return ms.ToArray();
    }

    [Theory]
    [MemberData(nameof(AllPairs))]
    public void TransposeLinearEqualsReference(DataType from, DataType to)
    {
        var files = new List<SharedFile>();
        try
        {
            // [3000, 700] spans several 4 MiB output bands with a ragged last band; the others are small odd shapes.
            foreach (var (rows, cols) in new[] { (3000, 700), (1, 1), (5, 67), (67, 5), (129, 63) })
            {
                var raw = RandomRaw(from, rows * cols, rows + cols);
                var expected = RefTranspose(RefConvert(raw, from, to), rows, cols, to.BitWidth() / 8);
                foreach (var source in Sources(from, [rows, cols], raw, files))
                {
                    var w = WeightConversion.TransposeLinear(source, to);
                    Assert.Equal(to, w.DataType);
                    Assert.Equal(new long[] { cols, rows }, w.Shape);
                    string what = $"{source.GetType().Name} {from}->{to} [{rows},{cols}]";
                    AssertSameBits(expected, Streamed(w), to, what + " streamed");
                    AssertSameBits(expected, w.GetBytes(), to, what + " GetBytes");
                }
            }
        }
        finally
        {
            foreach (var f in files) f.Dispose();
        }
    }

    [Theory]
    [MemberData(nameof(AllPairs))]
    public void ConvertEqualsReference(DataType from, DataType to)
    {
        var files = new List<SharedFile>();
        try
        {
            // 1,100,003 elements span two chunks of 1 Mi elements (4-byte side) with a ragged tail.
            foreach (long[] shape in new[] { new long[] { 1_100_003 }, [3, 5], [1] })
            {
                int n = (int)shape.Aggregate(1L, (a, b) => a * b);
                var raw = RandomRaw(from, n, n);
                var expected = RefConvert(raw, from, to);
                foreach (var source in Sources(from, shape, raw, files))
                {
                    var w = WeightConversion.Convert(source, to);
                    if (from == to) Assert.Same(source, w);
                    string what = $"{source.GetType().Name} {from}->{to} n={n}";
                    AssertSameBits(expected, Streamed(w), to, what + " streamed");
                    AssertSameBits(expected, w.GetBytes(), to, what + " GetBytes");
                }
            }
        }
        finally
        {
            foreach (var f in files) f.Dispose();
        }
    }

    [Fact]
    public void ConcatRowsEqualsConcatenatedReferences()
    {
        var parts = new[] { (DataType.BFloat16, 7), (DataType.Float, 3), (DataType.Float16, 5) }
            .Select((p, k) => (Type: p.Item1, Raw: RandomRaw(p.Item1, p.Item2 * 9, k))).ToList();
        foreach (var to in new[] { DataType.Float, DataType.Float16 })
        {
            var tensors = parts.Select(p => (Tensor)new InMemoryTensor(p.Type, [p.Raw.Length / (p.Type.BitWidth() / 8) / 9, 9], p.Raw)).ToList();
            var expected = parts.SelectMany(p => RefConvert(p.Raw, p.Type, to)).ToArray();
            var w = WeightConversion.ConcatRows(tensors, to);
            Assert.Equal(new long[] { 15, 9 }, w.Shape);
            AssertSameBits(expected, Streamed(w), to, $"concat ->{to} streamed");
            AssertSameBits(expected, w.GetBytes(), to, $"concat ->{to} GetBytes");
        }
    }
}
