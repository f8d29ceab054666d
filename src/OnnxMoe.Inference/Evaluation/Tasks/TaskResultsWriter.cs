using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace OnnxMoe.Inference.Evaluation.Tasks;

/// <summary>
/// Writes task results in lm-eval 0.4's layout (lm_eval/evaluator.py evaluate's results_dict, written by
/// loggers/evaluation_tracker.py): results.json and, per task, samples_&lt;task&gt;.jsonl (lm-eval adds a date to the
/// file name; here the name is fixed so the same run gives the same bytes). Files are written to a temporary name and
/// renamed when complete.
/// </summary>
public static class TaskResultsWriter
{
    private static readonly JsonWriterOptions Indented = new() { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    private static readonly JsonWriterOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Writes results.json (and the samples files when <paramref name="logSamples"/>) into <paramref name="folder"/>; returns the paths.</summary>
    public static List<string> Write(TaskEvalResults results, string folder, bool logSamples)
    {
        Directory.CreateDirectory(folder);
        var written = new List<string>();
        var pending = new List<(string Temp, string Final)>();
        try
        {
            if (logSamples)
                foreach (var t in results.Tasks)
                {
                    var path = Path.Combine(folder, $"samples_{t.Task.Name}.jsonl");
                    var temp = path + ".tmp";
                    using (var stream = File.Create(temp)) WriteSamples(t, stream);
                    pending.Add((temp, path));
                }
            var resultsPath = Path.Combine(folder, "results.json");
            File.WriteAllBytes(resultsPath + ".tmp", ResultsJson(results));
            pending.Add((resultsPath + ".tmp", resultsPath));
            foreach (var (temp, final) in pending)
            {
                File.Move(temp, final, overwrite: true);
                written.Add(final);
            }
            return written;
        }
        finally
        {
            foreach (var (temp, _) in pending)
                if (File.Exists(temp)) File.Delete(temp);
        }
    }

    public static byte[] ResultsJson(TaskEvalResults results)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, Indented))
        {
            w.WriteStartObject();
            w.WriteStartObject("results");
            foreach (var t in results.Tasks) WriteMetrics(w, t.Task.Name, t.Task.Alias, t.Metrics);
            w.WriteEndObject();
            var aggregated = results.Groups.Where(g => g.Metrics.Count > 0).ToList();
            if (aggregated.Count > 0)
            {
                w.WriteStartObject("groups");
                foreach (var g in aggregated) WriteMetrics(w, g.Group.Name, g.Group.Name, g.Metrics);
                w.WriteEndObject();
            }
            w.WriteStartObject("group_subtasks");
            foreach (var g in results.Groups)
            {
                w.WriteStartArray(g.Group.Name);
                foreach (var m in g.Group.Members) w.WriteStringValue(m);
                w.WriteEndArray();
            }
            foreach (var t in results.Tasks.Where(t => !results.Groups.Any(g => g.Group.Members.Contains(t.Task.Name))))
            {
                w.WriteStartArray(t.Task.Name);
                w.WriteEndArray();
            }
            w.WriteEndObject();
            var sorted = results.Tasks.OrderBy(t => t.Task.Name, StringComparer.Ordinal).ToList();
            w.WriteStartObject("configs");
            foreach (var t in sorted)
            {
                w.WritePropertyName(t.Task.Name);
                WriteValue(w, TaskConfigDump(t));
            }
            w.WriteEndObject();
            w.WriteStartObject("versions");
            foreach (var t in sorted)
                if (t.Task.Version is { } v) w.WriteNumber(t.Task.Name, v);
                else w.WriteNull(t.Task.Name);
            w.WriteEndObject();
            w.WriteStartObject("n-shot");
            foreach (var t in sorted) w.WriteNumber(t.Task.Name, t.NumFewshot);
            w.WriteEndObject();
            w.WriteStartObject("higher_is_better");
            foreach (var t in sorted)
            {
                w.WriteStartObject(t.Task.Name);
                foreach (var m in t.Task.Metrics) w.WriteBoolean(m, true);
                w.WriteEndObject();
            }
            w.WriteEndObject();
            w.WriteStartObject("n-samples");
            foreach (var t in results.Tasks)
            {
                w.WriteStartObject(t.Task.Name);
                w.WriteNumber("original", t.OriginalDocs);
                w.WriteNumber("effective", t.Docs.Count);
                w.WriteEndObject();
            }
            w.WriteEndObject();
            w.WriteStartObject("config");
            w.WriteString("model", "onnxmoe");
            w.WriteString("model_args", $"pretrained={results.Model}");
            w.WriteNumber("batch_size", results.Options.BatchSize);
            if (results.Options.Limit is { } limit) w.WriteNumber("limit", limit); else w.WriteNull("limit");
            w.WriteNumber("bootstrap_iters", 0);
            w.WriteNumber("fewshot_seed", results.Options.FewshotSeed);
            w.WriteBoolean("add_bos_token", results.Options.AddBos);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        buffer.WriteByte((byte)'\n');
        return buffer.ToArray();
    }

    private static void WriteMetrics(Utf8JsonWriter w, string name, string alias, IReadOnlyList<MetricValue> metrics)
    {
        w.WriteStartObject(name);
        w.WriteString("alias", alias);
        foreach (var m in metrics)
        {
            w.WriteNumber($"{m.Name},none", m.Value);
            if (m.Stderr is { } s) w.WriteNumber($"{m.Name}_stderr,none", s);
            else w.WriteString($"{m.Name}_stderr,none", "N/A");
        }
        w.WriteEndObject();
    }

    /// <summary>The task's config as TaskConfig.to_dict reports it: the YAML's keys plus the defaults that applied.</summary>
    private static Dictionary<string, object?> TaskConfigDump(TaskResult t)
    {
        var dump = new Dictionary<string, object?>(t.Task.Config, StringComparer.Ordinal);
        dump.TryAdd("output_type", "multiple_choice");
        dump.TryAdd("target_delimiter", t.Task.TargetDelimiter);
        dump.TryAdd("fewshot_delimiter", t.Task.FewshotDelimiter);
        dump["num_fewshot"] = (long)t.NumFewshot;
        dump.TryAdd("metric_list", t.Task.Metrics.Select(m => (object?)new Dictionary<string, object?> { ["metric"] = m }).ToList());
        dump.TryAdd("repeats", 1L);
        return dump;
    }

    /// <summary>One JSON line per document, as EvaluationTracker.save_results_samples writes them (resps stringified by utils.sanitize_list).</summary>
    public static void WriteSamples(TaskResult t, Stream stream)
    {
        foreach (var d in t.Docs)
        {
            using (var w = new Utf8JsonWriter(stream, Compact))
            {
                w.WriteStartObject();
                w.WriteNumber("doc_id", d.Doc.DocId);
                w.WritePropertyName("doc");
                WriteValue(w, d.Doc.Doc);
                string target = DocValues.Str(d.Doc.Target);
                w.WriteString("target", target);
                w.WriteStartObject("arguments");
                for (int i = 0; i < d.Doc.Requests.Count; i++)
                {
                    w.WriteStartObject($"gen_args_{i}");
                    w.WriteString("arg_0", d.Doc.Requests[i].Context);
                    w.WriteString("arg_1", d.Doc.Requests[i].Continuation);
                    w.WriteEndObject();
                }
                w.WriteEndObject();
                w.WriteStartArray("resps");
                foreach (var s in d.Scores)
                {
                    w.WriteStartArray();
                    WritePair(w, s);
                    w.WriteEndArray();
                }
                w.WriteEndArray();
                w.WriteStartArray("filtered_resps");
                foreach (var s in d.Scores) WritePair(w, s);
                w.WriteEndArray();
                w.WriteString("filter", "none");
                w.WriteStartArray("metrics");
                foreach (var m in t.Task.Metrics) w.WriteStringValue(m);
                w.WriteEndArray();
                w.WriteString("doc_hash", Sha256(PythonJson.Dumps(d.Doc.Doc, indent: 2)));
                w.WriteString("prompt_hash", Sha256(d.Doc.Requests[0].Context));
                w.WriteString("target_hash", Sha256(target));
                foreach (var m in t.Task.Metrics) w.WriteNumber(m, m == "acc" ? d.Acc : d.AccNorm);
                w.WriteEndObject();
            }
            stream.WriteByte((byte)'\n');
        }
    }

    private static void WritePair(Utf8JsonWriter w, Loglikelihood s)
    {
        w.WriteStartArray();
        w.WriteStringValue(DocValues.Repr(s.LogProbability));
        w.WriteStringValue(s.IsGreedy ? "True" : "False");
        w.WriteEndArray();
    }

    private static string Sha256(string s) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(s)));

    internal static void WriteValue(Utf8JsonWriter w, object? v)
    {
        switch (v)
        {
            case null: w.WriteNullValue(); break;
            case string s: w.WriteStringValue(s); break;
            case bool b: w.WriteBooleanValue(b); break;
            case long l: w.WriteNumberValue(l); break;
            case int i: w.WriteNumberValue(i); break;
            case double d: w.WriteNumberValue(d); break;
            case YamlFunction f: w.WriteStringValue(f.ToString()); break;
            case List<object?> list:
                w.WriteStartArray();
                foreach (var x in list) WriteValue(w, x);
                w.WriteEndArray();
                break;
            case Dictionary<string, object?> dict:
                w.WriteStartObject();
                foreach (var (k, x) in dict) { w.WritePropertyName(k); WriteValue(w, x); }
                w.WriteEndObject();
                break;
            default: w.WriteStringValue(v.ToString()); break;
        }
    }

    /// <summary>Markdown table like lm-eval's utils.make_table: task, version, filter, n-shot, metric, value, stderr.</summary>
    public static string Table(TaskEvalResults results)
    {
        var rows = new List<string[]>();
        foreach (var t in results.Tasks)
        {
            bool first = true;
            foreach (var m in t.Metrics)
            {
                rows.Add([first ? t.Task.Alias : "", first ? (t.Task.Version is { } v ? DocValues.Repr(v).Replace(".0", "") : "Yaml") : "", "none",
                    first ? t.NumFewshot.ToString(CultureInfo.InvariantCulture) : "", m.Name, "↑", m.Value.ToString("F4", CultureInfo.InvariantCulture), "±",
                    m.Stderr is { } s ? s.ToString("F4", CultureInfo.InvariantCulture) : "N/A"]);
                first = false;
            }
        }
        foreach (var g in results.Groups.Where(g => g.Metrics.Count > 0))
        {
            bool first = true;
            foreach (var m in g.Metrics)
            {
                rows.Add([first ? g.Group.Name : "", "", "none", "", m.Name, "↑", m.Value.ToString("F4", CultureInfo.InvariantCulture), "±",
                    m.Stderr is { } s ? s.ToString("F4", CultureInfo.InvariantCulture) : "N/A"]);
                first = false;
            }
        }
        string[] header = ["Tasks", "Version", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr"];
        bool[] right = [false, true, false, true, false, false, true, false, true];
        var widths = header.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        var sb = new StringBuilder();
        string Line(string[] cells) => "|" + string.Join("|", cells.Select((c, i) => right[i] ? c.PadLeft(widths[i]) : c.PadRight(widths[i]))) + "|";
        sb.AppendLine(Line(header));
        sb.AppendLine("|" + string.Join("|", widths.Select((w, i) => right[i] ? new string('-', Math.Max(1, w - 1)) + ":" : new string('-', Math.Max(1, w)))) + "|");
        foreach (var r in rows) sb.AppendLine(Line(r));
        return sb.ToString();
    }
}

/// <summary>Python's json.dumps(value, indent=N, ensure_ascii=False) for document values (lm-eval hashes docs in this form).</summary>
public static class PythonJson
{
    public static string Dumps(object? value, int indent)
    {
        var sb = new StringBuilder();
        Write(sb, value, indent, 0);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, object? v, int indent, int level)
    {
        switch (v)
        {
            case null: sb.Append("null"); return;
            case bool b: sb.Append(b ? "true" : "false"); return;
            case long or int or double: sb.Append(DocValues.Repr(v) is var r && r is "nan" ? "NaN" : r is "inf" ? "Infinity" : r is "-inf" ? "-Infinity" : r); return;
            case string s: WriteString(sb, s); return;
            case List<object?> list:
                if (list.Count == 0) { sb.Append("[]"); return; }
                sb.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    sb.Append(i == 0 ? "" : ",").Append('\n').Append(' ', indent * (level + 1));
                    Write(sb, list[i], indent, level + 1);
                }
                sb.Append('\n').Append(' ', indent * level).Append(']');
                return;
            case Dictionary<string, object?> dict:
                if (dict.Count == 0) { sb.Append("{}"); return; }
                sb.Append('{');
                bool first = true;
                foreach (var (k, x) in dict)
                {
                    sb.Append(first ? "" : ",").Append('\n').Append(' ', indent * (level + 1));
                    first = false;
                    WriteString(sb, k);
                    sb.Append(": ");
                    Write(sb, x, indent, level + 1);
                }
                sb.Append('\n').Append(' ', indent * level).Append('}');
                return;
            default: WriteString(sb, v.ToString() ?? ""); return;
        }
    }

    private static void WriteString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (var c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20) sb.Append($"\\u{(int)c:x4}");
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
