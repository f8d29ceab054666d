using System.Diagnostics;
using System.Text.Json;
using OnnxMoe.Inference.Generation;
using OnnxMoe.Inference.Models;
using OnnxMoe.Inference.Tokenization;
using OnnxMoe.Ir;

namespace OnnxMoe.Inference.Evaluation.Tasks;

/// <summary>Settings of a task run, named as lm-eval's CLI names them.</summary>
public sealed record TaskEvalOptions
{
    /// <summary>Overrides every task's num_fewshot (lm-eval --num_fewshot) except where the YAML says 0 (lm-eval keeps those zero-shot); null keeps the YAML's (default 0).</summary>
    public int? NumFewshot { get; init; }

    /// <summary>First N documents of each task (lm-eval --limit); null = all.</summary>
    public int? Limit { get; init; }

    /// <summary>Documents per forward batch (their choices share it).</summary>
    public int BatchSize { get; init; } = 1;

    /// <summary>BOS before every context (newer lm-eval) instead of only before empty ones (0.4.9.1).</summary>
    public bool AddBos { get; init; }

    /// <summary>lm-eval's --seed fourth value (fewshot_random_seed), 1234 by default.</summary>
    public long FewshotSeed { get; init; } = 1234;

    /// <summary>Checks the settings as the CLI names them; one line per problem.</summary>
    public void Validate()
    {
        if (BatchSize < 1) throw new UserErrorException($"--batch-size must be at least 1, got {BatchSize}");
        if (Limit is < 1) throw new UserErrorException($"--limit must be at least 1, got {Limit}");
        if (NumFewshot is < 0) throw new UserErrorException($"--num-fewshot must be 0 or more, got {NumFewshot}");
    }
}

/// <summary>Progress within one task.</summary>
public readonly record struct TaskProgress(string Task, int DocsDone, int DocCount, TimeSpan Elapsed)
{
    public double DocsPerSecond => Elapsed > TimeSpan.Zero ? DocsDone / Elapsed.TotalSeconds : 0;
}

/// <summary>A metric's mean and sample standard error (null where lm-eval writes "N/A": fewer than two documents).</summary>
public sealed record MetricValue(string Name, double Value, double? Stderr);

/// <summary>One document's outcome: per-choice loglikelihoods and its acc / acc_norm.</summary>
public sealed record DocResult(DocRequests Doc, Loglikelihood[] Scores, double Acc, double AccNorm);

/// <summary>A task's outcome.</summary>
public sealed record TaskResult(MultipleChoiceTask Task, int NumFewshot, int OriginalDocs, IReadOnlyList<DocResult> Docs,
    IReadOnlyList<MetricValue> Metrics, TimeSpan Elapsed);

/// <summary>A group's aggregate (lm-eval: mean over members, weighted by size unless weight_by_size is false; pooled stderr).</summary>
public sealed record GroupResult(TaskGroup Group, IReadOnlyList<MetricValue> Metrics);

/// <summary>Everything one `eval --tasks` produced.</summary>
public sealed record TaskEvalResults(IReadOnlyList<TaskResult> Tasks, IReadOnlyList<GroupResult> Groups, TaskEvalOptions Options, string Model);

/// <summary>All of a task's requests, built and tokenized (every template rendered and target checked) before the model runs.</summary>
public sealed record PreparedTask(MultipleChoiceTask Task, int NumFewshot, List<DocRequests> Docs, List<EncodedRequest[]> Encoded);

/// <summary>
/// Runs lm-eval 0.4 multiple-choice tasks on a decoder and computes their metrics as lm-eval does
/// (lm_eval/api/task.py ConfigurableTask.process_results; lm_eval/api/metrics.py mean and mean_stderr).
/// </summary>
public sealed class TaskEvaluator(IDecoder decoder, Tokenizer tokenizer, ScoringOptions scoring)
{
    /// <summary>The prefix id HFLM uses for an empty context: the tokenizer's BOS, else its EOS (tokenizer_config.json, then the model's configs).</summary>
    public static int PrefixTokenId(ModelFolder folder, Tokenizer tokenizer)
    {
        var path = Path.Combine(folder.Directory, "tokenizer_config.json");
        if (File.Exists(path))
        {
            using var json = JsonDocument.Parse(File.ReadAllText(path));
            foreach (var key in new[] { "bos_token", "eos_token" })
                if (json.RootElement.TryGetProperty(key, out var v))
                {
                    var token = v.ValueKind switch
                    {
                        JsonValueKind.String => v.GetString(),
                        JsonValueKind.Object when v.TryGetProperty("content", out var c) => c.GetString(),
                        _ => null,
                    };
                    if (token is not null && tokenizer.TokenToId(token) is { } id) return id;
                }
        }
        return folder.BosTokenId ?? folder.EosTokenIds.FirstOrDefault();
    }

    /// <summary>An evaluator for a model folder's decoder: its tokenizer, HFLM's prefix id, its context length as max_length.</summary>
    public static TaskEvaluator ForModel(ModelFolder folder, IDecoder decoder, TaskEvalOptions options)
    {
        options.Validate();
        var tokenizer = folder.LoadTokenizer();
        var scoring = new ScoringOptions
        {
            PrefixTokenId = PrefixTokenId(folder, tokenizer),
            AddBos = options.AddBos,
            MaxLength = folder.GenAi?.ContextLength ?? 2048,
            BatchSize = options.BatchSize,
        };
        return new TaskEvaluator(decoder, tokenizer, scoring);
    }

    /// <summary>Prepares every task first (so a bad task fails before the model runs), then runs them in order.</summary>
    public TaskEvalResults Evaluate(ResolvedTasks tasks, TaskEvalOptions options, string model,
        Func<MultipleChoiceTask, Func<Action<TaskProgress>?, TaskResult>, TaskResult>? runWithProgress = null)
    {
        var prepared = tasks.Tasks.Select(t => Prepare(t, options)).ToList();
        var results = new List<TaskResult>();
        foreach (var p in prepared)
            results.Add(runWithProgress is null ? Run(p) : runWithProgress(p.Task, progress => Run(p, progress)));
        var groups = tasks.Groups.Select(g => AggregateGroup(g, results)).ToList();
        return new TaskEvalResults(results, groups, options, model);
    }

    public PreparedTask Prepare(MultipleChoiceTask task, TaskEvalOptions options)
    {
        int shots = task.ShotsFor(options.NumFewshot);
        var docs = task.BuildRequests(shots, options.Limit, options.FewshotSeed);
        var scorer = new LoglikelihoodScorer(decoder, tokenizer, scoring);
        var encoded = new List<EncodedRequest[]>(docs.Count);
        foreach (var d in docs)
        {
            var e = d.Requests.Select(scorer.Encode).ToArray();
            for (int c = 0; c < e.Length; c++)
                if (e[c].Continuation.Length == 0)
                    throw new UserErrorException($"{task.YamlPath}: document {d.DocId}: choice {c} ({DocValues.StringRepr(d.Requests[c].Continuation)}) encodes to no tokens");
            encoded.Add(e);
        }
        return new PreparedTask(task, shots, docs, encoded);
    }

    public TaskResult Run(PreparedTask prepared, Action<TaskProgress>? progress = null, CancellationToken cancellation = default)
    {
        var stopwatch = Stopwatch.StartNew();
        var scorer = new LoglikelihoodScorer(decoder, tokenizer, scoring);
        string name = prepared.Task.Name;
        int count = prepared.Docs.Count;
        progress?.Invoke(new TaskProgress(name, 0, count, TimeSpan.Zero));
        var scores = scorer.Score(prepared.Encoded, done => progress?.Invoke(new TaskProgress(name, done, count, stopwatch.Elapsed)), cancellation);
        var docs = new List<DocResult>(count);
        for (int i = 0; i < count; i++)
        {
            var d = prepared.Docs[i];
            var (acc, accNorm) = Accuracy(scores[i], d.Choices, d.Gold);
            docs.Add(new DocResult(d, scores[i], acc, accNorm));
        }
        var metrics = prepared.Task.Metrics.Select(m => Aggregate(m, docs.Select(d => m == "acc" ? d.Acc : d.AccNorm).ToList())).ToList();
        return new TaskResult(prepared.Task, prepared.NumFewshot, prepared.Task.EvalDocs.Count, docs, metrics, stopwatch.Elapsed);
    }

    /// <summary>
    /// ConfigurableTask.process_results for multiple_choice: acc = argmax(lls) == gold; acc_norm = argmax(lls /
    /// len(choice)) == gold, len counting the choice string's characters (code points, without target_delimiter);
    /// np.argmax takes the first maximum.
    /// </summary>
    public static (double Acc, double AccNorm) Accuracy(IReadOnlyList<Loglikelihood> scores, IReadOnlyList<string> choices, int gold)
    {
        int pred = 0, predNorm = 0;
        double best = double.NegativeInfinity, bestNorm = double.NegativeInfinity;
        for (int c = 0; c < scores.Count; c++)
        {
            double ll = scores[c].LogProbability, norm = ll / DocValues.PyLength(choices[c]);
            if (ll > best || c == 0) { best = ll; pred = c; }
            if (norm > bestNorm || c == 0) { bestNorm = norm; predNorm = c; }
        }
        return (pred == gold ? 1.0 : 0.0, predNorm == gold ? 1.0 : 0.0);
    }

    /// <summary>metrics.py mean and mean_stderr = sample_stddev / sqrt(n) with sample_stddev over n - 1; "N/A" (null) for n &lt; 2 (evaluator_utils.TaskOutput.calculate_aggregate_metric).</summary>
    public static MetricValue Aggregate(string name, IReadOnlyList<double> values)
    {
        double mean = values.Sum() / values.Count;
        double? stderr = null;
        if (values.Count > 1)
        {
            double ss = values.Sum(x => (x - mean) * (x - mean));
            stderr = Math.Sqrt(ss / (values.Count - 1)) / Math.Sqrt(values.Count);
        }
        return new MetricValue(name, mean, stderr);
    }

    /// <summary>
    /// A group's metrics as evaluator_utils.consolidate_group_results computes them: metrics.aggregate_subtask_metrics
    /// (weighted by member size unless weight_by_size is false) and metrics.pooled_sample_stderr; only groups with an
    /// aggregate_metric_list (or none, when not aggregated).
    /// </summary>
    public static GroupResult AggregateGroup(TaskGroup group, IReadOnlyList<TaskResult> tasks)
    {
        var members = tasks.Where(t => group.Members.Contains(t.Task.Name)).ToList();
        var metrics = new List<MetricValue>();
        if (!group.Aggregate || members.Count == 0) return new GroupResult(group, metrics);
        foreach (var metric in new[] { "acc", "acc_norm" })
        {
            var having = members.Select(t => (t.Docs.Count, M: t.Metrics.FirstOrDefault(m => m.Name == metric))).Where(x => x.M is not null).ToList();
            if (having.Count != members.Count) continue;
            var sizes = having.Select(h => (double)h.Count).ToList();
            var weights = group.WeightBySize ? sizes : sizes.Select(_ => 1.0).ToList();
            double value = having.Zip(weights).Sum(p => p.First.M!.Value * p.Second) / weights.Sum();
            double? stderr = null;
            if (having.All(h => h.M!.Stderr is not null) && sizes.Sum() > sizes.Count)
            {
                double pooledVar = having.Sum(h => (h.Count - 1) * h.M!.Stderr!.Value * h.M.Stderr.Value * h.Count) / (sizes.Sum() - sizes.Count);
                stderr = Math.Sqrt(pooledVar / sizes.Sum());
            }
            metrics.Add(new MetricValue(metric, value, stderr));
        }
        return new GroupResult(group, metrics);
    }
}
