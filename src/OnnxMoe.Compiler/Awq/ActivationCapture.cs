using System.Numerics.Tensors;
using OnnxMoe.Ir;
using OnnxMoe.Runtime;

namespace OnnxMoe.Compiler.Awq;

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
        for (long r = 0; r < rows; r++)
        {
            TensorPrimitives.Abs(data.AsSpan((int)(r * c), c), abs);
            for (int j = 0; j < c; j++) AbsSum[j] += abs[j];
        }
        Rows += rows;
        if (keep) SearchData.Add((data, shape));
    }
}

/// <summary>
/// Runs the decoder on calibration samples (batch 1, no past) through ORT with the chosen internal
/// values as outputs, and accumulates an <see cref="ActivationRecord"/> per value.
/// </summary>
public static class ActivationCapture
{
    public static Dictionary<Value, ActivationRecord> Run(Model model, IReadOnlyList<Value> values, CalibrationSamples samples, int searchSamples,
        SessionConfig? config, Action<AwqProgress>? progress, CancellationToken cancellation = default)
    {
        var probe = SubgraphExtractor.Extract(model, [], values);
        using var session = new InMemorySession(probe, config, "activation_probe");
        var records = new Dictionary<Value, ActivationRecord>(ReferenceEqualityComparer.Instance);
        var names = values.Select(v => v.Name).ToList();
        for (int i = 0; i < samples.Count; i++)
        {
            cancellation.ThrowIfCancellationRequested();
            var inputs = DecoderInputs.Create(session.Session, samples, [i]);
            try
            {
                using var result = session.Session.Run(inputs.Select(p => new KeyValuePair<string, OrtValue>(p.Key, p.Value)), names, cancellation);
                for (int j = 0; j < values.Count; j++)
                {
                    var shape = result[j].Shape;
                    var data = result[j].ToFloatArray();
                    if (!records.TryGetValue(values[j], out var record))
                        records[values[j]] = record = new ActivationRecord(checked((int)shape[^1]));
                    record.Accumulate(data, shape, keep: i < searchSamples);
                }
            }
            finally
            {
                foreach (var v in inputs.Values) v.Dispose();
            }
            progress?.Invoke(new AwqProgress("statistics", i + 1, samples.Count, $"sample {i + 1}"));
        }
        return records;
    }
}

/// <summary>ORT GenAI decoder inputs for whole calibration samples: ids, all-ones mask, positions 0.., empty past.</summary>
internal static class DecoderInputs
{
    /// <summary>The inputs <paramref name="session"/> declares among the decoder's, for the given samples batched; the caller disposes them.</summary>
    public static Dictionary<string, OrtValue> Create(InferenceSession session, CalibrationSamples samples, IReadOnlyList<int> which)
    {
        int n = which.Count, len = samples.SequenceLength;
        var ids = new long[n * len];
        var positions = new long[n * len];
        for (int b = 0; b < n; b++)
        {
            samples.Sample(which[b]).CopyTo(ids.AsSpan(b * len, len));
            for (int t = 0; t < len; t++) positions[b * len + t] = t;
        }
        var mask = Enumerable.Repeat(1L, n * len).ToArray();
        var result = new Dictionary<string, OrtValue>(StringComparer.Ordinal);
        foreach (var input in session.Inputs)
        {
            switch (input.Name)
            {
                case "input_ids": result[input.Name] = OrtValue.CreateTensor<long>(ids, [n, len]); break;
                case "attention_mask": result[input.Name] = OrtValue.CreateTensor<long>(mask, [n, len]); break;
                case "position_ids": result[input.Name] = OrtValue.CreateTensor<long>(positions, [n, len]); break;
                default:
                    if (input.Name.StartsWith("past_key_values.", StringComparison.Ordinal) && input.Shape.Count == 4)
                        result[input.Name] = OrtValue.Allocate(input.ElementType, [n, input.Shape[1], 0, input.Shape[3]]);
                    break;
            }
        }
        return result;
    }
}
