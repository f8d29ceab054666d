using System.Collections.Concurrent;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx;
using OnnxMoe.Runtime;
using OnnxMoe.Tests.Serialization;
using Xunit.Abstractions;

namespace OnnxMoe.Tests.Integration;

/// <summary>
/// Every backend-corpus model, re-written through our IR with external data, runs on ORT and gives
/// bit-identical outputs to the original file, and those outputs match the corpus' expected
/// outputs (|a - e| &lt;= 1e-4 + 1e-3 |e| for floats, exact otherwise) wherever ORT itself does on the
/// original. Skips are counted with their reasons; none is silent.
/// </summary>
public sealed class CorpusExecutionTests(ITestOutputHelper output)
{
    private const double AbsoluteTolerance = 1e-4, RelativeTolerance = 1e-3;

    private enum Outcome { MatchedExpected, MatchedOriginalOnly, Skipped, Failed }

    [Fact]
    public void RewrittenCorpusModelsRunOnOrtLikeTheOriginals()
    {
        var cases = BackendCorpus.All().Where(c => File.Exists(c.ModelPath) && Directory.Exists(Path.Combine(c.Directory, "test_data_set_0"))).ToList();
        Assert.True(cases.Count > 900, $"expected the libonnx-testdata corpus under {BackendCorpus.Root}, found {cases.Count} runnable cases");
        var results = new ConcurrentBag<(BackendCorpus.Case Case, Outcome Outcome, string Detail)>();
        string scratch = Directory.CreateTempSubdirectory("onnxmoe-corpus-ort-").FullName;
        var config = new SessionConfig { IntraOpThreads = 1, InterOpThreads = 1 };
        try
        {
            Parallel.ForEach(cases, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, Environment.ProcessorCount) }, c =>
            {
                var (outcome, detail) = RunCase(c, Path.Combine(scratch, $"{c.Category}-{c.Name}"), config);
                results.Add((c, outcome, detail));
            });
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }

        var byOutcome = results.GroupBy(r => r.Outcome).ToDictionary(g => g.Key, g => g.Count());
        output.WriteLine($"corpus cases: {cases.Count}; matched expected: {byOutcome.GetValueOrDefault(Outcome.MatchedExpected)}; " +
            $"identical to original but ORT deviates from expected on both: {byOutcome.GetValueOrDefault(Outcome.MatchedOriginalOnly)}; " +
            $"skipped: {byOutcome.GetValueOrDefault(Outcome.Skipped)}; failed: {byOutcome.GetValueOrDefault(Outcome.Failed)}");
        foreach (var g in results.Where(r => r.Outcome == Outcome.Skipped).GroupBy(r => Reason(r.Detail)).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal))
            output.WriteLine($"  skipped {g.Count(),4}: {g.Key}   e.g. {string.Join(", ", g.Select(r => r.Case.ToString()).Order(StringComparer.Ordinal).Take(3))}");
        foreach (var r in results.Where(r => r.Outcome == Outcome.MatchedOriginalOnly).OrderBy(r => r.Case.ToString(), StringComparer.Ordinal))
            output.WriteLine($"  ORT deviates on original too: {r.Case} ({r.Detail})");
        var failures = results.Where(r => r.Outcome == Outcome.Failed).OrderBy(r => r.Case.ToString(), StringComparer.Ordinal).ToList();
        foreach (var f in failures) output.WriteLine($"  FAILED {f.Case}: {f.Detail}");
        Assert.Empty(failures.Select(f => $"{f.Case}: {f.Detail}"));
        // The corpus is large; a collapse in the runnable share means the binding or writer broke quietly.
        Assert.True(byOutcome.GetValueOrDefault(Outcome.MatchedExpected) > cases.Count * 0.8,
            $"only {byOutcome.GetValueOrDefault(Outcome.MatchedExpected)} of {cases.Count} cases matched their expected outputs");
    }

    private static string Reason(string detail) => detail.Length > 110 ? detail[..110] : detail;

    private static (Outcome, string) RunCase(BackendCorpus.Case c, string scratch, SessionConfig config)
    {
        string dataSet = Path.Combine(c.Directory, "test_data_set_0");
        var inputFiles = Directory.GetFiles(dataSet, "input_*.pb").OrderBy(f => IndexOf(f)).ToArray();
        var outputFiles = Directory.GetFiles(dataSet, "output_*.pb").OrderBy(f => IndexOf(f)).ToArray();
        Tensor[] inputs, expected;
        try
        {
            inputs = inputFiles.Select(OnnxReader.ReadTensor).ToArray();
            expected = outputFiles.Select(OnnxReader.ReadTensor).ToArray();
        }
        catch (OnnxFormatException)
        {
            return (Outcome.Skipped, "test data holds a non-tensor value (sequence/optional/map), outside the tensor binding");
        }

        InferenceSession original;
        try
        {
            original = new InferenceSession(c.ModelPath, config);
        }
        catch (OrtException e)
        {
            return (Outcome.Skipped, "ORT cannot load the original model: " + FirstLine(e.Message));
        }

        using (original)
        {
            if (original.Inputs.Any(i => i.Kind != OnnxValueKind.Tensor) || original.Outputs.Any(o => o.Kind != OnnxValueKind.Tensor))
                return (Outcome.Skipped, "model has non-tensor inputs or outputs, outside the tensor binding");
            var feedNames = original.Inputs.Select(i => i.Name).ToList();
            if (feedNames.Count < inputs.Length) return (Outcome.Skipped, "test data has more inputs than the session exposes");

            Directory.CreateDirectory(scratch);
            string rewrittenPath = Path.Combine(scratch, "model.onnx");
            var model = OnnxReader.Read(c.ModelPath);
            OnnxWriter.Write(model, rewrittenPath, new OnnxWriteOptions { ExternalData = ExternalDataMode.External, ExternalThreshold = 1 });

            using var rewritten = new InferenceSession(rewrittenPath, config);
            Tensor[] fromOriginal, fromRewritten;
            try
            {
                fromOriginal = Run(original, inputs);
            }
            catch (OrtException e)
            {
                return (Outcome.Skipped, "ORT fails to run the original model: " + FirstLine(e.Message));
            }
            fromRewritten = Run(rewritten, inputs);

            for (int k = 0; k < fromOriginal.Length; k++)
            {
                if (!SameBytes(fromOriginal[k], fromRewritten[k]))
                {
                    // Random-number ops give different bits per session; confirm by running the original again.
                    var again = Run(original, inputs);
                    if (!SameBytes(fromOriginal[k], again[k])) return (Outcome.Skipped, "the original model is nondeterministic on ORT (random op)");
                    return (Outcome.Failed, $"output {k} of the re-written model differs from the original's");
                }
            }

            for (int k = 0; k < expected.Length && k < fromOriginal.Length; k++)
            {
                string? mismatch = Compare(fromOriginal[k], expected[k]);
                if (mismatch != null) return (Outcome.MatchedOriginalOnly, $"output {k}: {mismatch}");
            }
            return (Outcome.MatchedExpected, "");
        }
    }

    private static Tensor[] Run(InferenceSession session, Tensor[] inputs)
    {
        var values = inputs.Select(OrtValue.FromTensor).ToArray();
        try
        {
            var feeds = session.Inputs.Take(inputs.Length).Select((info, i) => new KeyValuePair<string, OrtValue>(info.Name, values[i]));
            using var result = session.Run(feeds);
            return result.Select(v => v.ToTensor()).ToArray();
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    private static bool SameBytes(Tensor a, Tensor b)
    {
        if (a.DataType != b.DataType || !a.Shape.SequenceEqual(b.Shape)) return false;
        if (a is StringTensor sa && b is StringTensor sb) return sa.Values.Zip(sb.Values).All(p => p.First.AsSpan().SequenceEqual(p.Second));
        return a.GetBytes().SequenceEqual(b.GetBytes());
    }

    private static string? Compare(Tensor actual, Tensor expected)
    {
        if (actual.DataType != expected.DataType) return $"dtype {actual.DataType.Name()} vs expected {expected.DataType.Name()}";
        if (!actual.Shape.SequenceEqual(expected.Shape)) return $"shape [{string.Join(",", actual.Shape)}] vs expected [{string.Join(",", expected.Shape)}]";
        if (actual.DataType is DataType.Float or DataType.Double or DataType.Float16 or DataType.BFloat16)
        {
            var a = actual.ToFloatArray();
            var e = expected.ToFloatArray();
            for (int i = 0; i < a.Length; i++)
            {
                if (float.IsNaN(e[i]) && float.IsNaN(a[i])) continue;
                if (a[i] == e[i]) continue;
                if (!(Math.Abs(a[i] - e[i]) <= AbsoluteTolerance + RelativeTolerance * Math.Abs(e[i])))
                    return $"element {i}: {a[i]} vs expected {e[i]}";
            }
            return null;
        }
        return SameBytes(actual, expected) ? null : "values differ from expected";
    }

    private static int IndexOf(string path) => int.Parse(Path.GetFileNameWithoutExtension(path).Split('_')[1]);
    private static string FirstLine(string s) => s.Split('\n')[0].Trim();
}
