using System.Diagnostics;
using System.Globalization;
using OnnxMoe.Ir;

namespace OnnxMoe.Passes;

/// <summary>
/// Runs a pipeline over a model in place: verifies the input, then runs each pass (aliases expanded),
/// verifies the IR after every pass, calls the external check after every pass that changed the model,
/// times passes, sums counters, and finally appends the pipeline to the model's
/// <c>onnxmoe.pipeline</c> metadata (options spelled out, defaults included).
/// </summary>
public sealed class PassManager
{
    /// <summary>Model metadata key holding the pipelines applied to a model, comma-joined in order.</summary>
    public const string PipelineMetadataKey = "onnxmoe.pipeline";

    /// <summary>Structural checks between passes; null disables them.</summary>
    public IrVerifier? Verifier { get; init; } = new();

    /// <summary>Verify the model before the first pass so a broken input is not blamed on a pass.</summary>
    public bool VerifyInput { get; init; } = true;

    /// <summary>Extra check after each pass that changed the model (e.g. load into an ORT session);
    /// receives the model and the pass name and throws to fail the run.</summary>
    public Action<Model, string>? ExternalCheck { get; init; }

    /// <summary>Called after each pass that changed the model, e.g. to print the IR.</summary>
    public Action<Model, PassRunRecord>? AfterChange { get; init; }

    /// <summary>Called before each pass with its position (0-based), the number of passes and its canonical invocation (progress displays).</summary>
    public Action<int, int, string>? BeforePass { get; init; }

    /// <summary>Called after each pass (changed or not) with its record.</summary>
    public Action<PassRunRecord>? AfterPass { get; init; }

    /// <summary>Record the pipeline in the model metadata (<see cref="PipelineMetadataKey"/>).</summary>
    public bool RecordPipeline { get; init; } = true;

    public PipelineRunReport Run(Model model, PassPipeline pipeline, PassContext? context = null)
    {
        context ??= new PassContext();
        if (VerifyInput) Verifier?.Verify(model, afterPass: null);
        var records = new List<PassRunRecord>();
        var total = Stopwatch.StartNew();
        // Construct every pass first: option errors surface before hours of earlier passes have run.
        var passes = pipeline.CreatePasses().ToList();
        for (int i = 0; i < passes.Count; i++)
        {
            var pass = passes[i];
            context.CancellationToken.ThrowIfCancellationRequested();
            string canonical = Canonical(pass);
            BeforePass?.Invoke(i, passes.Count, canonical);
            var sw = Stopwatch.StartNew();
            var result = pass.Run(model, context);
            sw.Stop();
            var record = new PassRunRecord(pass.ToString(), pass.Name, result.Changed, result.Counters, sw.Elapsed) { Canonical = canonical };
            records.Add(record);
            AfterPass?.Invoke(record);
            context.Info($"{record.Invocation}: {(result.Changed ? "changed" : "no change")} in {sw.Elapsed.TotalMilliseconds.ToString("F1", CultureInfo.InvariantCulture)} ms");
            Verifier?.Verify(model, pass.Name);
            if (result.Changed)
            {
                ExternalCheck?.Invoke(model, pass.Name);
                AfterChange?.Invoke(model, record);
            }
        }
        total.Stop();
        if (RecordPipeline && pipeline.Steps.Count > 0)
        {
            var text = pipeline.Format(includeDefaults: true);
            var previous = model.GetMetadata(PipelineMetadataKey);
            model.SetMetadata(PipelineMetadataKey, string.IsNullOrEmpty(previous) ? text : previous + "," + text);
        }
        return new PipelineRunReport(pipeline.Format(includeDefaults: true), records, total.Elapsed);
    }

    /// <summary>A pass's invocation with every option spelled out, defaults included (as the metadata records pipelines).</summary>
    public static string Canonical(Pass pass)
    {
        var options = pass.Options.Format(includeDefaults: true);
        return options.Length == 0 ? pass.Name : $"{pass.Name}{{{options}}}";
    }
}

/// <summary>One pass run: its invocation text, whether it changed the model, its counters and wall time.</summary>
public sealed record PassRunRecord(string Invocation, string PassName, bool Changed, IReadOnlyDictionary<string, long> Counters, TimeSpan Elapsed)
{
    /// <summary>The invocation with every option spelled out (<see cref="PassManager.Canonical"/>); equals <see cref="Invocation"/> when none was set.</summary>
    public string Canonical { get; init; } = Invocation;
}

/// <summary>Outcome of <see cref="PassManager.Run"/>, for the compile report.</summary>
public sealed class PipelineRunReport
{
    public PipelineRunReport(string pipeline, IReadOnlyList<PassRunRecord> passes, TimeSpan elapsed)
    {
        Pipeline = pipeline;
        Passes = passes;
        Elapsed = elapsed;
        var sums = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var p in passes)
            foreach (var (k, v) in p.Counters) sums[k] = sums.GetValueOrDefault(k) + v;
        Counters = sums;
    }

    /// <summary>The pipeline as recorded in metadata (all options spelled out).</summary>
    public string Pipeline { get; }
    public IReadOnlyList<PassRunRecord> Passes { get; }
    public TimeSpan Elapsed { get; }
    /// <summary>Counters summed over all passes by name, in ordinal order.</summary>
    public IReadOnlyDictionary<string, long> Counters { get; }
    public bool Changed => Passes.Any(p => p.Changed);

    /// <summary>Plain text, one line per pass: invocation, changed, milliseconds, counters.</summary>
    public string Format(bool includeTimes = true)
    {
        var inv = CultureInfo.InvariantCulture;
        var lines = Passes.Select(p =>
        {
            var counters = string.Join(" ", p.Counters.Select(kv => $"{kv.Key}={kv.Value.ToString(inv)}"));
            var time = includeTimes ? $" {p.Elapsed.TotalMilliseconds.ToString("F1", inv)} ms" : "";
            return $"{p.Invocation}: {(p.Changed ? "changed" : "unchanged")}{time}{(counters.Length > 0 ? " " + counters : "")}";
        });
        return string.Join("\n", lines);
    }
}
