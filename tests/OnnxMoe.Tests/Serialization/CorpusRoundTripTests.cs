using System.Collections.Concurrent;
using System.Diagnostics;
using OnnxMoe.Ir.Printing;
using OnnxMoe.Onnx;
using OnnxMoe.Onnx.Proto;
using Xunit.Abstractions;

namespace OnnxMoe.Tests.Serialization;

/// <summary>
/// Round-trips every model of the ONNX backend corpus through the IR, in one test that reports
/// counts. Embedded: read -> write must give a ModelProto equal field by field (presence included)
/// to the original. External: read -> write external -> read (lazy) -> write embedded must equal the
/// original up to the encoding of externalized tensors (raw bytes instead of typed fields, which is
/// what external data is). Both variants also compare the printed IR.
/// </summary>
[Collection("memory-measuring")]
public sealed class CorpusRoundTripTests(ITestOutputHelper output)
{
    [Fact]
    public void EveryCorpusModelRoundTrips()
    {
        var cases = BackendCorpus.All();
        Assert.True(cases.Count > 1000, $"expected the ONNX backend corpus under {BackendCorpus.Root} (apt install libonnx-testdata); found {cases.Count} folders");
        var skipped = new ConcurrentBag<string>();
        var failures = new ConcurrentBag<string>();
        int passed = 0, externalTensors = 0;
        string tempRoot = Path.Combine(Path.GetTempPath(), "onnxmoe-corpus-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(tempRoot);
        var sw = Stopwatch.StartNew();
        try
        {
            Parallel.ForEach(cases, new ParallelOptions { MaxDegreeOfParallelism = 2 }, c =>
            {
                if (!File.Exists(c.ModelPath))
                {
                    var listed = string.Join(",", Directory.GetFiles(c.Directory).Select(Path.GetFileName));
                    skipped.Add($"{c}: no model.onnx (folder holds only {listed}; the model is a download)");
                    return;
                }
                try
                {
                    string? failure = RoundTrip(c, Path.Combine(tempRoot, c.Category + "_" + c.Name), out int ext);
                    if (failure == null)
                    {
                        Interlocked.Increment(ref passed);
                        Interlocked.Add(ref externalTensors, ext);
                    }
                    else failures.Add($"{c}: {failure}");
                }
                catch (Exception e)
                {
                    failures.Add($"{c}: {e.GetType().Name}: {e.Message}");
                }
            });
        }
        finally
        {
            Directory.Delete(tempRoot, recursive: true);
        }
        output.WriteLine($"corpus round trip: {passed} passed, {failures.Count} failed, {skipped.Count} skipped, " +
                         $"{externalTensors} tensors went through external data, {sw.Elapsed.TotalSeconds:F1} s");
        foreach (var s in skipped.Order()) output.WriteLine("skipped " + s);
        foreach (var f in failures.Order().Take(40)) output.WriteLine("FAILED " + f);
        Assert.Empty(failures);
        Assert.True(passed > 1000, $"only {passed} models passed");
    }

    private static string? RoundTrip(BackendCorpus.Case c, string workDir, out int externalCount)
    {
        externalCount = 0;
        var original = ModelProto.Parser.ParseFrom(File.ReadAllBytes(c.ModelPath));
        var model = OnnxReader.Read(c.ModelPath);

        // Embedded: exact.
        var bytes = OnnxWriter.ToBytes(model);
        var rewritten = ModelProto.Parser.ParseFrom(bytes);
        if (ProtoDiff.FirstDifference(original, rewritten) is { } d) return "embedded: " + d;
        if (!original.Equals(rewritten)) return "embedded: protobuf Equals differs (unknown fields?)";
        string text = IrPrinter.Print(model);
        string text2 = IrPrinter.Print(OnnxReader.Read(bytes, c.Directory));
        if (text != text2) return "embedded: printed IR differs after re-reading";

        // External: via a data file, read back lazily, then embedded again.
        Directory.CreateDirectory(workDir);
        string path = Path.Combine(workDir, "model.onnx");
        var result = OnnxWriter.Write(model, path, new OnnxWriteOptions { ExternalThreshold = 1 });
        externalCount = result.ExternalTensors;
        var lazy = OnnxReader.Read(path);
        string text3 = IrPrinter.Print(lazy);
        if (text != text3) return "external: printed IR differs after re-reading";
        var back = ModelProto.Parser.ParseFrom(OnnxWriter.ToBytes(lazy));
        var expected = original.Clone();
        TensorCanon.CanonicalizeExternalized(expected);
        TensorCanon.CanonicalizeExternalized(back);
        if (ProtoDiff.FirstDifference(expected, back) is { } d2) return "external: " + d2;
        return null;
    }
}
