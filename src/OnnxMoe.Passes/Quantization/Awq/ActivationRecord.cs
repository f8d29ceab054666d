using System.Numerics.Tensors;

namespace OnnxMoe.Passes.Quantization.Awq;

/// <summary>What was seen of one captured activation: per-channel sum of |x| over every calibration row, and the rows of the search samples.</summary>
public sealed class ActivationRecord
{
    internal ActivationRecord(int channels)
    {
        Channels = channels;
        AbsSum = new double[channels];
    }

    /// <summary>Size of the last axis.</summary>
    public int Channels { get; }
    /// <summary>Rows (tokens) seen over all samples; for an expert's input, only the tokens routed to it.</summary>
    public long Rows { get; internal set; }
    internal double[] AbsSum { get; }
    /// <summary>Search samples' data as captured (one array per sample) and its shape.</summary>
    internal List<(float[] Data, long[] Shape)> SearchData { get; } = new();

    /// <summary>Mean |x| per channel over every row seen (0 for a channel never seen).</summary>
    public float[] MeanAbs() => AbsSum.Select(s => Rows == 0 ? 0f : (float)(s / Rows)).ToArray();

    /// <summary>Search samples concatenated along axis 0 ([n, S, C] for per-sample tensors, [rows, C] for gathered rows); null when empty.</summary>
    public (float[] Data, long[] Shape)? Concatenated()
    {
        var parts = SearchData.Where(p => p.Data.Length > 0).ToList();
        if (parts.Count == 0) return null;
        var shape = (long[])parts[0].Shape.Clone();
        shape[0] = parts.Sum(p => p.Shape[0]);
        var data = new float[parts.Sum(p => (long)p.Data.Length)];
        long at = 0;
        foreach (var p in parts)
        {
            p.Data.CopyTo(data, at);
            at += p.Data.Length;
        }
        return (data, shape);
    }

    internal void Accumulate(float[] data, long[] shape, bool keep)
    {
        int c = Channels;
        if (shape.Length == 0 || shape[^1] != c) throw new InvalidOperationException($"captured activation has shape [{string.Join(",", shape)}], expected last dimension {c}");
        long rows = data.Length / c;
        var abs = new float[c];
        var wide = new double[c];
        for (long r = 0; r < rows; r++)
        {
            TensorPrimitives.Abs(data.AsSpan((int)(r * c), c), abs);
            TensorPrimitives.ConvertChecked<float, double>(abs, wide);   // exact, so the sums are those of adding row by row in double
            TensorPrimitives.Add(AbsSum, wide, AbsSum);
        }
        Rows += rows;
        if (keep) SearchData.Add((data, shape));
    }
}
