using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using UserErrorException = OnnxMoe.Ir.UserErrorException;

namespace OnnxMoe.Compiler.Bench;

/// <summary>Kernel time of one op type: <see cref="Calls"/> node runs taking <see cref="Micros"/> microseconds in all.</summary>
public sealed record OpTime(string OpType, long Calls, double Micros);

/// <summary>One <c>model_run</c> of an ORT profile: its wall time and its nodes' kernel time by op type, largest first.</summary>
public sealed record ProfiledRun(double Micros, IReadOnlyList<OpTime> Ops);

/// <summary>
/// Reads the chrome-trace JSON ORT writes when a session profiles (an array of events): each node run is an event of
/// cat "Node" named "{node}_kernel_time" with args.op_name and dur (microseconds); each session run ends with an event
/// of cat "Session" named "model_run" whose dur is the run's wall time. Node events are recorded before the model_run
/// that contains them, so a run owns the node events since the previous one. Streams the file (bounded memory).
/// </summary>
public static class OrtProfileReader
{
    public static IReadOnlyList<ProfiledRun> Read(string path)
    {
        var runs = new List<ProfiledRun>();
        var pending = new Dictionary<string, (long Calls, double Micros)>(StringComparer.Ordinal);
        try
        {
            using var stream = File.OpenRead(path);
            foreach (var e in JsonSerializer.DeserializeAsyncEnumerable<TraceEvent>(stream, TraceJson.Default.TraceEvent).ToBlockingEnumerable())
            {
                if (e is null) continue;
                if (e.Cat == "Node" && e.Name?.EndsWith("_kernel_time", StringComparison.Ordinal) == true)
                {
                    string op = e.Args?.OpName ?? throw new InvalidDataException($"node event '{e.Name}' has no args.op_name");
                    var (calls, micros) = pending.GetValueOrDefault(op);
                    pending[op] = (calls + 1, micros + e.Dur);
                }
                else if (e.Cat == "Session" && e.Name == "model_run")
                {
                    runs.Add(new ProfiledRun(e.Dur, Sorted(pending)));
                    pending.Clear();
                }
            }
        }
        catch (Exception ex) when (ex is JsonException or InvalidDataException)
        {
            throw new UserErrorException($"{path}: not an ORT profile: {ex.Message.ReplaceLineEndings(" ")}");
        }
        return runs;
    }

    private static List<OpTime> Sorted(Dictionary<string, (long Calls, double Micros)> ops) =>
        [.. ops.Select(kv => new OpTime(kv.Key, kv.Value.Calls, kv.Value.Micros)).OrderByDescending(o => o.Micros).ThenBy(o => o.OpType, StringComparer.Ordinal)];

    internal sealed class TraceEvent
    {
        [JsonPropertyName("cat")] public string? Cat { get; set; }
        [JsonPropertyName("name")] public string? Name { get; set; }
        [JsonPropertyName("dur")] public double Dur { get; set; }
        [JsonPropertyName("args")] public TraceArgs? Args { get; set; }
    }

    internal sealed class TraceArgs
    {
        [JsonPropertyName("op_name")] public string? OpName { get; set; }
    }
}

[JsonSerializable(typeof(OrtProfileReader.TraceEvent))]
internal sealed partial class TraceJson : JsonSerializerContext;

/// <summary>Kernel time of one op type over a phase, per step (one prefill, or one generated token).</summary>
public sealed record OpShare(string OpType, double CallsPerStep, double TotalMs, double MsPerStep, double PercentOfRun);

/// <summary>
/// The measured runs of one phase: "prefill" (one step = one prompt), "decode" (one step = one generated token) or
/// "all" when the runs could not be told apart. <see cref="RunMs"/> is the runs' wall time as ORT saw it,
/// <see cref="KernelMs"/> the part spent inside kernels (the rest is the executor's own work between nodes).
/// </summary>
public sealed record ProfilePhase(string Name, int Steps, double RunMs, double KernelMs, IReadOnlyList<OpShare> Ops);

/// <summary>A model's profile: the file ORT wrote and its measured runs by phase.</summary>
public sealed record BenchProfile(string File, IReadOnlyList<ProfilePhase> Phases)
{
    /// <summary>
    /// Splits the session's runs as the bench made them: <paramref name="warmups"/> + <paramref name="repeats"/> times one
    /// prefill followed by <paramref name="generateTokens"/> decode steps; the warm-up runs are left out. When the count
    /// of runs does not match that schedule the measured runs cannot be located and every run is one phase "all".
    /// </summary>
    public static BenchProfile Summarize(string file, IReadOnlyList<ProfiledRun> runs, int warmups, int repeats, int generateTokens)
    {
        int perRepeat = generateTokens + 1;
        if (runs.Count != (warmups + repeats) * perRepeat)
            return new BenchProfile(file, [Phase("all", runs, runs.Count)]);
        var measured = runs.Skip(warmups * perRepeat).Select((r, i) => (Run: r, Step: i % perRepeat)).ToList();
        return new BenchProfile(file,
        [
            Phase("prefill", measured.Where(m => m.Step == 0).Select(m => m.Run).ToList(), repeats),
            Phase("decode", measured.Where(m => m.Step > 0).Select(m => m.Run).ToList(), repeats * generateTokens),
        ]);
    }

    private static ProfilePhase Phase(string name, IReadOnlyList<ProfiledRun> runs, int steps)
    {
        double runMicros = runs.Sum(r => r.Micros);
        var ops = runs.SelectMany(r => r.Ops).GroupBy(o => o.OpType, StringComparer.Ordinal)
            .Select(g => (Op: g.Key, Calls: g.Sum(o => o.Calls), Micros: g.Sum(o => o.Micros)))
            .OrderByDescending(o => o.Micros).ThenBy(o => o.Op, StringComparer.Ordinal)
            .Select(o => new OpShare(o.Op, (double)o.Calls / steps, o.Micros / 1e3, o.Micros / 1e3 / steps, runMicros > 0 ? 100 * o.Micros / runMicros : 0))
            .ToList();
        return new ProfilePhase(name, steps, runMicros / 1e3, ops.Sum(o => o.TotalMs), ops);
    }

    /// <summary>Per phase, the <paramref name="top"/> op types by kernel time, and the time outside kernels.</summary>
    public string ToTable(string model, int top)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append(inv, $"profile of {model}: {File}\n");
        foreach (var phase in Phases)
        {
            string step = phase.Name == "decode" ? "token" : phase.Name == "prefill" ? "prefill" : "run";
            double outside = phase.RunMs - phase.KernelMs;
            sb.Append(inv, $"  {phase.Name}: {phase.Steps} {step}s, {phase.RunMs / phase.Steps:F2} ms/{step} in profiled runs, {phase.KernelMs / phase.Steps:F2} in kernels, " +
                $"{outside / phase.Steps:F2} between them (executor and profiler, {(phase.RunMs > 0 ? 100 * outside / phase.RunMs : 0):F1}%)\n");
            var rows = phase.Ops.Take(top).Select(o => new[]
            {
                o.OpType, o.CallsPerStep.ToString("F1", inv), o.TotalMs.ToString("F1", inv), o.PercentOfRun.ToString("F1", inv), o.MsPerStep.ToString("F3", inv),
            }).ToList();
            string[] header = ["op", $"calls/{step}", "total ms", "% of run", $"ms/{step}"];
            var widths = header.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
            void Line(string[] cells) => sb.Append("    ").Append(string.Join("  ", cells.Select((c, i) => i == 0 ? c.PadRight(widths[i]) : c.PadLeft(widths[i])))).Append('\n');
            Line(header);
            foreach (var r in rows) Line(r);
            if (phase.Ops.Count > top) sb.Append(inv, $"    ... {phase.Ops.Count - top} more op types, {phase.Ops.Skip(top).Sum(o => o.PercentOfRun):F1}% of the run\n");
        }
        return sb.ToString();
    }
}
