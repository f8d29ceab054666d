using System.Text.Json;
using OnnxMoe.Ir;

namespace OnnxMoe.Inference.Evaluation.Tasks;

/// <summary>One loglikelihood request as lm-eval builds it: (context, continuation), the continuation starting with target_delimiter.</summary>
public sealed record LoglikelihoodRequest(string Context, string Continuation);

/// <summary>A document's requests (one per choice), its gold index and the choices' strings.</summary>
public sealed record DocRequests(int DocId, Dictionary<string, object?> Doc, int Gold, object? Target, IReadOnlyList<string> Choices,
    IReadOnlyList<LoglikelihoodRequest> Requests);

/// <summary>
/// An lm-eval 0.4 `output_type: multiple_choice` task from its YAML (lm_eval/api/task.py ConfigurableTask), with local
/// JSONL data (`dataset_path: json`, `dataset_kwargs.data_files`). Every user-caused problem is one
/// <see cref="UserErrorException"/> naming the YAML file.
/// </summary>
public sealed class MultipleChoiceTask
{
    private static readonly HashSet<string> KnownKeys =
    [
        "task", "task_alias", "tag", "group", "group_alias", "dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split",
        "test_split", "fewshot_split", "output_type", "doc_to_text", "doc_to_target", "doc_to_choice", "target_delimiter",
        "fewshot_delimiter", "description", "num_fewshot", "metric_list", "metadata", "should_decontaminate",
        "doc_to_decontamination_query", "fewshot_config", "repeats", "process_docs", "process_results", "filter_list",
        "generation_kwargs", "unsafe_code", "gen_prefix", "custom_dataset", "doc_to_image", "doc_to_audio", "use_prompt",
    ];

    private readonly Dictionary<string, List<Dictionary<string, object?>>> _splits = new(StringComparer.Ordinal);
    private readonly object? _docToText, _docToTarget, _docToChoice;
    private readonly Dictionary<string, JinjaTemplate> _templates = new(StringComparer.Ordinal);
    private readonly HashSet<string> _features = new(StringComparer.Ordinal);

    public MultipleChoiceTask(string yamlPath, Dictionary<string, object?> config)
    {
        YamlPath = yamlPath;
        Config = config;
        string Fail(string message) => throw new UserErrorException($"{yamlPath}: {message}");

        foreach (var key in config.Keys)
            if (!KnownKeys.Contains(key)) Fail($"unknown key '{key}'");
        Name = config.GetValueOrDefault("task") as string ?? Fail("no 'task:' name");
        Alias = config.GetValueOrDefault("task_alias") as string ?? Name;
        var outputType = config.GetValueOrDefault("output_type") as string ?? "generate_until";
        if (outputType != "multiple_choice")
            Fail($"output_type '{outputType}' is not supported (onnxmoe runs multiple_choice tasks)");
        foreach (var key in new[] { "process_docs", "process_results", "filter_list", "doc_to_image", "doc_to_audio", "use_prompt" })
            if (config.GetValueOrDefault(key) is { } v)
                Fail($"{key}: {v} is not supported (Python callables and filters cannot run here; give processed docs as JSONL)");
        foreach (var key in new[] { "doc_to_text", "doc_to_target", "doc_to_choice", "description" })
            if (config.GetValueOrDefault(key) is YamlFunction f)
                Fail($"{key}: {f} is a Python function; onnxmoe supports field names, lists and Jinja templates");

        TargetDelimiter = StringOption("target_delimiter", " ");
        FewshotDelimiter = StringOption("fewshot_delimiter", "\n\n");
        Description = config.GetValueOrDefault("description") as string ?? "";
        ConfiguredFewshot = config.GetValueOrDefault("num_fewshot") is long n ? (int)n : null;
        if (config.GetValueOrDefault("fewshot_config") is Dictionary<string, object?> fc)
        {
            var sampler = fc.GetValueOrDefault("sampler") as string ?? "default";
            if (sampler is not ("default" or "first_n")) Fail($"fewshot_config.sampler '{sampler}' is not supported (default, first_n)");
            FirstNSampler = sampler == "first_n";
            foreach (var k in fc.Keys)
                if (k != "sampler") Fail($"fewshot_config.{k} is not supported");
        }
        Metrics = ReadMetrics();

        _docToText = config.GetValueOrDefault("doc_to_text") ?? Fail("no doc_to_text");
        _docToTarget = config.GetValueOrDefault("doc_to_target") ?? Fail("no doc_to_target");
        _docToChoice = config.GetValueOrDefault("doc_to_choice") ?? Fail("no doc_to_choice (multiple_choice needs the choices)");
        foreach (var (key, value) in new[] { ("doc_to_text", _docToText), ("doc_to_target", _docToTarget), ("doc_to_choice", _docToChoice), ("description", (object?)Description) })
        {
            if (value is string s) Compile(key, s);
            else if (value is List<object?> list && key == "doc_to_choice")
                for (int i = 0; i < list.Count; i++)
                    if (list[i] is string item) Compile($"doc_to_choice[{i}]", item);
        }

        LoadData();
        TrainingSplit = config.GetValueOrDefault("training_split") as string;
        ValidationSplit = config.GetValueOrDefault("validation_split") as string;
        TestSplit = config.GetValueOrDefault("test_split") as string;
        FewshotSplit = config.GetValueOrDefault("fewshot_split") as string;
        foreach (var split in new[] { TrainingSplit, ValidationSplit, TestSplit, FewshotSplit })
            if (split is not null && !_splits.ContainsKey(split))
                Fail($"split '{split}' is not in dataset_kwargs.data_files (has: {string.Join(", ", _splits.Keys)})");
        // lm_eval/api/task.py Task.eval_docs: the test split, else the validation split.
        EvalSplit = TestSplit ?? ValidationSplit ?? Fail("neither test_split nor validation_split is set");
        if (_splits[EvalSplit].Count == 0) Fail($"split '{EvalSplit}' has no documents");
        foreach (var doc in _splits.Values.SelectMany(d => d)) _features.UnionWith(doc.Keys);

        // ConfigurableTask.__init__: doc_to_text returning an int on the first doc means "multiple inputs" (winogrande).
        MultipleInput = DocToText(_splits[EvalSplit][0]) is long;

        string StringOption(string key, string fallback) => config.GetValueOrDefault(key) switch
        {
            null => fallback,
            string s => s,
            var other => Fail($"{key} must be a string, got {DocValues.Repr(other)}"),
        };
    }

    public string YamlPath { get; }
    public Dictionary<string, object?> Config { get; }
    public string Name { get; }
    public string Alias { get; }
    public string TargetDelimiter { get; }
    public string FewshotDelimiter { get; }
    public string Description { get; }
    /// <summary>The YAML's num_fewshot, 0 when it has none.</summary>
    public int NumFewshot => ConfiguredFewshot ?? 0;
    /// <summary>The YAML's num_fewshot, null when it has none.</summary>
    public int? ConfiguredFewshot { get; }

    /// <summary>
    /// The shots a run uses given lm-eval's --num_fewshot <paramref name="requested"/> (null when not given): a task whose YAML
    /// says num_fewshot: 0 stays zero-shot whatever is asked (lm_eval/evaluator.py simple_evaluate: "num_fewshot has been set
    /// to 0 ... in its config. Manual configuration will be ignored."); otherwise the request, else the YAML's value, else 0.
    /// </summary>
    public int ShotsFor(int? requested) => ConfiguredFewshot == 0 ? 0 : requested ?? NumFewshot;
    public bool FirstNSampler { get; }
    public IReadOnlyList<string> Metrics { get; }
    public string? TrainingSplit { get; }
    public string? ValidationSplit { get; }
    public string? TestSplit { get; }
    public string? FewshotSplit { get; }
    public string EvalSplit { get; }
    public bool MultipleInput { get; }
    public double? Version => Config.GetValueOrDefault("metadata") is Dictionary<string, object?> m && m.GetValueOrDefault("version") is { } v && DocValues.IsNumber(v) ? DocValues.ToDouble(v) : null;

    public IReadOnlyList<Dictionary<string, object?>> EvalDocs => _splits[EvalSplit];

    /// <summary>Task.fewshot_docs / ConfigurableTask.fewshot_docs: fewshot_split, else training, else validation, else test docs.</summary>
    public IReadOnlyList<Dictionary<string, object?>> FewshotDocs =>
        _splits[FewshotSplit ?? TrainingSplit ?? ValidationSplit ?? TestSplit!];

    private List<string> ReadMetrics()
    {
        if (Config.GetValueOrDefault("metric_list") is not { } raw) return ["acc"];
        if (raw is not List<object?> list) throw new UserErrorException($"{YamlPath}: metric_list must be a list");
        var metrics = new List<string>();
        foreach (var item in list)
        {
            var name = item switch
            {
                Dictionary<string, object?> d => d.GetValueOrDefault("metric") as string,
                string s => s,
                _ => null,
            } ?? throw new UserErrorException($"{YamlPath}: metric_list entries need 'metric:'");
            if (name is not ("acc" or "acc_norm"))
                throw new UserErrorException($"{YamlPath}: metric '{name}' is not supported (acc, acc_norm)");
            if (item is Dictionary<string, object?> md && md.GetValueOrDefault("aggregation") is string agg && agg != "mean")
                throw new UserErrorException($"{YamlPath}: aggregation '{agg}' for {name} is not supported (mean)");
            metrics.Add(name);
        }
        if (metrics.Count == 0) throw new UserErrorException($"{YamlPath}: metric_list is empty");
        return metrics;
    }

    private void Compile(string key, string source)
    {
        if (!JinjaTemplate.HasMarkup(source)) return;
        try
        {
            _templates[source] = JinjaTemplate.Parse(source);
        }
        catch (TemplateException e)
        {
            throw new UserErrorException($"{YamlPath}: {key} template {DocValues.StringRepr(source)}: {e.Message}");
        }
    }

    private void LoadData()
    {
        var path = Config.GetValueOrDefault("dataset_path") as string;
        if (path is not ("json" or "jsonl"))
            throw new UserErrorException($"{YamlPath}: dataset_path '{path}' is not supported: onnxmoe reads local JSONL (dataset_path: json with dataset_kwargs: {{data_files: ...}})");
        if (Config.GetValueOrDefault("dataset_kwargs") is not Dictionary<string, object?> kwargs || kwargs.GetValueOrDefault("data_files") is not { } files)
            throw new UserErrorException($"{YamlPath}: dataset_path: json needs dataset_kwargs: {{data_files: ...}}");
        // datasets.load_dataset("json", data_files=...): a string or a list is the "train" split; a map names the splits.
        var splits = files switch
        {
            string s => new Dictionary<string, object?> { ["train"] = s },
            List<object?> l => new Dictionary<string, object?> { ["train"] = l },
            Dictionary<string, object?> d => d,
            _ => throw new UserErrorException($"{YamlPath}: data_files must be a path, a list or a map of split -> path"),
        };
        var dir = Path.GetDirectoryName(Path.GetFullPath(YamlPath))!;
        foreach (var (split, value) in splits)
        {
            var paths = value switch
            {
                string s => [s],
                List<object?> l when l.All(x => x is string) => l.Cast<string>().ToList(),
                _ => throw new UserErrorException($"{YamlPath}: data_files.{split} must be a path or a list of paths"),
            };
            var docs = new List<Dictionary<string, object?>>();
            foreach (var p in paths)
            {
                var full = Path.IsPathRooted(p) ? p : Path.Combine(dir, p);
                if (!File.Exists(full)) throw new UserErrorException($"{YamlPath}: data file {p} (split '{split}') not found");
                int line = 0;
                foreach (var text in File.ReadLines(full))
                {
                    line++;
                    if (string.IsNullOrWhiteSpace(text)) continue;
                    string where = $"{full}:{line}";
                    using var json = JsonText.Parse(text, default, why => new UserErrorException($"{where}: {why}"));
                    if (json.RootElement.ValueKind != JsonValueKind.Object) throw new UserErrorException($"{where}: not a JSON object");
                    docs.Add(DocValues.FromJsonObject(json.RootElement));
                }
            }
            _splits[split] = docs;
        }
    }

    private JinjaTemplate Template(string source) => _templates[source];

    private string RenderOrFail(string key, string source, Dictionary<string, object?> doc)
    {
        try
        {
            return Template(source).Render(doc);
        }
        catch (TemplateException e)
        {
            throw new UserErrorException($"{YamlPath}: {key} template {DocValues.StringRepr(source)}: {e.Message}");
        }
    }

    /// <summary>ConfigurableTask.doc_to_text: an int; a feature name; else the rendered template, an int if it is all digits.</summary>
    public object? DocToText(Dictionary<string, object?> doc) => FieldOrTemplate("doc_to_text", _docToText, doc, allowList: false);

    /// <summary>ConfigurableTask.doc_to_target: as doc_to_text, and a rendered "[...]" is a list literal.</summary>
    public object? DocToTarget(Dictionary<string, object?> doc) => FieldOrTemplate("doc_to_target", _docToTarget, doc, allowList: true);

    private object? FieldOrTemplate(string key, object? spec, Dictionary<string, object?> doc, bool allowList)
    {
        switch (spec)
        {
            case long l: return l;
            case string s when _features.Contains(s) || (!JinjaTemplate.HasMarkup(s) && doc.ContainsKey(s)):
                return doc.TryGetValue(s, out var v) ? v : null;
            case string s:
                {
                    var text = JinjaTemplate.HasMarkup(s) ? RenderOrFail(key, s, doc) : s;
                    if (DocValues.IsDigits(text)) return long.Parse(text);
                    if (allowList && text.Length >= 2 && text[0] == '[' && text[^1] == ']')
                    {
                        try { return DocValues.LiteralEval(text); } catch (FormatException) { return text; }
                    }
                    return text;
                }
            case List<object?> list when allowList: return list;
            default: throw new UserErrorException($"{YamlPath}: {key} must be a field name, a template or an integer, got {DocValues.Repr(spec)}");
        }
    }

    /// <summary>ConfigurableTask.doc_to_choice: a feature name, a template rendering a Python list, a YAML list, or a map's values.</summary>
    public List<string> DocToChoice(Dictionary<string, object?> doc)
    {
        object? value;
        switch (_docToChoice)
        {
            case string s when _features.Contains(s):
                value = doc.GetValueOrDefault(s);
                break;
            case string s:
                {
                    if (!JinjaTemplate.HasMarkup(s)) throw new UserErrorException($"{YamlPath}: doc_to_choice '{s}' is neither a field of the documents nor a template");
                    try
                    {
                        // A lone {{ expr }} renders repr(list) that literal_eval reads back: take the value directly.
                        if (!Template(s).TryEvaluateSingle(doc, out value)) value = DocValues.LiteralEval(Template(s).Render(doc));
                    }
                    catch (TemplateException e) { throw new UserErrorException($"{YamlPath}: doc_to_choice template {DocValues.StringRepr(s)}: {e.Message}"); }
                    catch (FormatException e) { throw new UserErrorException($"{YamlPath}: doc_to_choice template {DocValues.StringRepr(s)} does not render a Python list: {e.Message}"); }
                    break;
                }
            case List<object?> list:
                value = list;
                break;
            case Dictionary<string, object?> map:
                value = map.Values.ToList();
                break;
            default:
                throw new UserErrorException($"{YamlPath}: doc_to_choice must be a field, a template, a list or a map");
        }
        if (value is not List<object?> choices) throw new UserErrorException($"{YamlPath}: doc_to_choice gave {DocValues.Repr(value)}, not a list");
        return choices.Select(c => c is string str ? str : DocValues.Str(c)).ToList();
    }

    /// <summary>The gold index as ConfigurableTask.process_results finds it (an int, or a string looked up in the choices).</summary>
    private int Gold(Dictionary<string, object?> doc, int docId, List<string> choices)
    {
        var gold = MultipleInput ? DocToText(doc) : DocToTarget(doc);
        long index = gold switch
        {
            long l => l,
            string s => choices.IndexOf(s),
            List<object?> => throw new UserErrorException($"{YamlPath}: document {docId}: doc_to_target gave a list (multiple targets are not supported)"),
            _ => -1,
        };
        if (index < 0 || index >= choices.Count)
            throw new UserErrorException($"{YamlPath}: document {docId}: target {DocValues.Repr(gold)} is out of range for {choices.Count} choices");
        return (int)index;
    }

    /// <summary>Target as the fewshot sampler writes it (samplers.py ContextSampler.get_context).</summary>
    private string FewshotTarget(Dictionary<string, object?> doc)
    {
        var target = DocToTarget(doc);
        return target switch
        {
            List<object?> l => DocValues.Str(l[0]),
            string s => s,
            long i => DocToChoice(doc) is var c && i >= 0 && i < c.Count ? c[(int)i] : throw new UserErrorException($"{YamlPath}: few-shot target {i} is out of range"),
            _ => DocValues.Str(target),
        };
    }

    private string FewshotText(Dictionary<string, object?> doc)
    {
        var text = DocToText(doc);
        return text switch
        {
            string s => s,
            long i => DocToChoice(doc)[(int)i],
            _ => DocValues.Str(text),
        };
    }

    /// <summary>
    /// Every document's requests, as Task.build_all_requests makes them: documents in order (the first
    /// <paramref name="limit"/>), one shared few-shot <see cref="PythonRandom"/> seeded with <paramref name="seed"/>
    /// drawn from per document in that order (ContextSampler.get_context: num_fewshot + 1 docs when the few-shot split
    /// is the test split, the evaluated doc itself dropped), context = description + shots + doc_to_text
    /// (ConfigurableTask.fewshot_context), continuation = target_delimiter + choice (construct_requests).
    /// </summary>
    public List<DocRequests> BuildRequests(int numFewshot, int? limit, long seed = 1234)
    {
        var docs = EvalDocs;
        int count = limit is { } l ? Math.Min(l, docs.Count) : docs.Count;
        var rng = new PythonRandom(seed);
        var shotPool = numFewshot > 0 ? FewshotDocs : [];
        if (numFewshot > 0 && shotPool.Count < numFewshot)
            throw new UserErrorException($"{YamlPath}: {numFewshot} few-shot examples asked, the few-shot split has {shotPool.Count}");
        var result = new List<DocRequests>(count);
        for (int id = 0; id < count; id++)
        {
            var doc = docs[id];
            var choices = DocToChoice(doc);
            if (choices.Count == 0) throw new UserErrorException($"{YamlPath}: document {id} has no choices");
            var context = Description.Length > 0 && JinjaTemplate.HasMarkup(Description) ? RenderOrFail("description", Description, doc) : Description;
            if (numFewshot > 0)
            {
                // samplers.py ContextSampler.get_context compares the config's fewshot_split and test_split as they are,
                // so two unset splits (None == None, as in piqa) also draw one extra document to drop the current one.
                int n = FewshotSplit == TestSplit ? numFewshot + 1 : numFewshot;
                if (n > shotPool.Count) n = shotPool.Count;
                var drawn = FirstNSampler ? shotPool.Take(n).ToList() : rng.Sample(shotPool, n);
                foreach (var shot in drawn.Where(x => !DocValues.PyEquals(x, doc)).Take(numFewshot))
                {
                    context += FewshotText(shot);
                    var target = FewshotTarget(shot);
                    if (target != "") context += TargetDelimiter + target + FewshotDelimiter;
                }
            }
            var text = DocToText(doc);
            var gold = Gold(doc, id, choices);
            List<LoglikelihoodRequest> requests;
            if (MultipleInput)
            {
                // Multiple inputs: each choice completes the context, the target is the shared continuation.
                var cont = DocToTarget(doc) switch { string s => s, long i => choices[(int)i], var o => DocValues.Str(o) };
                requests = choices.Select(c => new LoglikelihoodRequest(context + c, TargetDelimiter + cont)).ToList();
            }
            else
            {
                var prompt = context + (text is string s ? s : DocValues.Str(text));
                requests = choices.Select(c => new LoglikelihoodRequest(prompt, TargetDelimiter + c)).ToList();
            }
            result.Add(new DocRequests(id, doc, gold, DocToTarget(doc), choices, requests));
        }
        if (result.Count == 0) throw new UserErrorException($"{YamlPath}: no documents to evaluate");
        return result;
    }
}
