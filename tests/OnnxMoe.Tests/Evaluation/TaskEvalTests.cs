using System.Text.Json;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Inference.Evaluation.Tasks;
using OnnxMoe.Inference.Generation;
using OnnxMoe.Inference.Models;
using OnnxMoe.Inference.Tokenization;
using OnnxMoe.Ir;
using OnnxMoe.Tests.Cli;
using OnnxMoe.Tests.Inference;

namespace OnnxMoe.Tests.Evaluation;

/// <summary>The bundled tiny models compiled once for the task-evaluation tests.</summary>
public sealed class CompiledTinyModels : IDisposable
{
    private readonly TempFolder _tmp = new();

    public CompiledTinyModels()
    {
        foreach (var name in new[] { "tiny-mixtral", "tiny-deepseek" })
            CompileJob.Run(new CompileRequest { Checkpoint = Path.Combine(TestFiles.RepositoryRoot(), "models", name), Output = _tmp[name] });
    }

    public string Dir(string name) => _tmp[name];

    public void Dispose() => _tmp.Dispose();
}

public class TaskEvalTests(CompiledTinyModels models) : IClassFixture<CompiledTinyModels>
{
    private const string TaskYamlText = """
        task: toy_mc
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: docs.jsonl
            validation: shots.jsonl
        test_split: test
        fewshot_split: validation
        output_type: multiple_choice
        description: "Choose well.\n\n"
        doc_to_text: "Question: {{question}}\nAnswer:"
        doc_to_choice: "{{choices.text}}"
        doc_to_target: "{{choices.label.index(answerKey)}}"
        metric_list:
          - metric: acc
          - metric: acc_norm
        metadata:
          version: 2.0
        """;

    private static string Doc(string q, string[] texts, int gold) => JsonSerializer.Serialize(new
    {
        question = q, choices = new { text = texts, label = texts.Select((_, i) => ((char)('A' + i)).ToString()).ToArray() },
        answerKey = ((char)('A' + gold)).ToString(),
    });

    private static string WriteTask(TempFolder tmp, string yaml = TaskYamlText, bool withDocs = true)
    {
        if (withDocs)
        {
            File.WriteAllLines(tmp["docs.jsonl"],
            [
                Doc("And God said, Let there be", ["light", "a dog running", "Moab"], 0),
                Doc("The LORD is my", ["shepherd", "king of the land of Egypt"], 0),
                Doc("And Jesus answered and said unto", ["them", "the sea", "and", "Peter, Follow me"], 0),
                Doc("In the beginning God created the heaven and the", ["earth.", " earth", "sea"], 0),
                Doc("Blessed are the", ["poor in spirit", "meek"], 1),
            ]);
            File.WriteAllLines(tmp["shots.jsonl"], Enumerable.Range(0, 6).Select(i => Doc($"Shot {i} of", ["him", "them"], i % 2)));
        }
        File.WriteAllText(tmp["task.yaml"], yaml);
        return tmp["task.yaml"];
    }

    /// <summary>
    /// The reference: lm-eval's encoding written out directly, and each request's loglikelihood from one full-sequence
    /// forward without any cache sharing or padding (batch 1, all logits), log-softmax in double.
    /// </summary>
    private static (double Ll, bool Greedy) Reference(OrtDecoder decoder, Tokenizer tok, int prefix, string context, string continuation)
    {
        int[] ctx, cont;
        if (context == "")
        {
            ctx = [prefix];
            cont = tok.Encode(continuation, addSpecialTokens: false);
        }
        else
        {
            string stripped = context.TrimEnd();
            continuation = context[stripped.Length..] + continuation;
            var whole = tok.Encode(stripped + continuation, addSpecialTokens: false);
            ctx = tok.Encode(stripped, addSpecialTokens: false);
            cont = whole[ctx.Length..];
        }
        var input = ctx.Concat(cont).ToArray()[..^1].Select(t => (long)t).ToArray();
        using var state = decoder.CreateState(1);
        var logits = state.Forward(input, input.Length, Enumerable.Repeat(1L, input.Length).ToArray(), Enumerable.Range(0, input.Length).Select(i => (long)i).ToArray()).ToArray();
        int v = decoder.VocabSize;
        double sum = 0;
        bool greedy = true;
        for (int j = 0; j < cont.Length; j++)
        {
            var row = logits.AsSpan((input.Length - cont.Length + j) * v, v).ToArray();
            double max = row.Max();
            double lse = max + Math.Log(row.Sum(x => Math.Exp(x - max)));
            sum += row[cont[j]] - lse;
            greedy &= Array.IndexOf(row, row.Max()) == cont[j];
        }
        return (sum, greedy);
    }

    [Theory]
    [InlineData("tiny-mixtral", 1, 0)]
    [InlineData("tiny-mixtral", 3, 2)]
    [InlineData("tiny-deepseek", 2, 1)]
    public void ScoresEqualAFullForwardReference(string model, int batchSize, int shots)
    {
        using var tmp = new TempFolder();
        var task = new MultipleChoiceTask(WriteTask(tmp), TaskYaml.Load(tmp["task.yaml"]));
        var folder = ModelFolder.Open(models.Dir(model));
        using var decoder = OrtDecoder.Open(folder);
        var options = new TaskEvalOptions { BatchSize = batchSize, NumFewshot = shots };
        var evaluator = TaskEvaluator.ForModel(folder, decoder, options);
        var result = evaluator.Run(evaluator.Prepare(task, options));
        var tok = folder.LoadTokenizer();
        int prefix = TaskEvaluator.PrefixTokenId(folder, tok);
        Assert.Equal(model == "tiny-mixtral" ? 1 : 2047, prefix); // <s>; tiny-deepseek has no BOS, so its EOS
        Assert.Equal(5, result.Docs.Count);
        foreach (var d in result.Docs)
            for (int c = 0; c < d.Scores.Length; c++)
            {
                var r = d.Doc.Requests[c];
                var (ll, greedy) = Reference(decoder, tok, prefix, r.Context, r.Continuation);
                Assert.Equal(ll, d.Scores[c].LogProbability, 1e-4); // fp32 logits: cache/padding change rounding only
                Assert.Equal(greedy, d.Scores[c].IsGreedy);
            }
        // acc and acc_norm follow the loglikelihoods (acc_norm: divided by the choice's characters).
        foreach (var d in result.Docs)
        {
            int pred = Array.IndexOf(d.Scores.Select(s => s.LogProbability).ToArray(), d.Scores.Max(s => s.LogProbability));
            var norm = d.Scores.Select((s, i) => s.LogProbability / d.Doc.Choices[i].Length).ToArray();
            Assert.Equal(pred == d.Doc.Gold ? 1.0 : 0.0, d.Acc);
            Assert.Equal(Array.IndexOf(norm, norm.Max()) == d.Doc.Gold ? 1.0 : 0.0, d.AccNorm);
        }
        var acc = result.Metrics.Single(m => m.Name == "acc");
        double mean = result.Docs.Average(d => d.Acc);
        Assert.Equal(mean, acc.Value, 12);
        Assert.Equal(Math.Sqrt(result.Docs.Sum(d => (d.Acc - mean) * (d.Acc - mean)) / 4) / Math.Sqrt(5), acc.Stderr!.Value, 12);
    }

    [Fact]
    public void EncodingFollowsLmEvalRules()
    {
        var folder = ModelFolder.Open(models.Dir("tiny-mixtral"));
        var tok = folder.LoadTokenizer();
        var scorer = new LoglikelihoodScorer(new ToyDecoder(2048), tok, new ScoringOptions { PrefixTokenId = 1 });
        // Trailing whitespace of the context moves to the continuation.
        var e = scorer.Encode(new LoglikelihoodRequest("Answer: ", "yes"));
        Assert.Equal(tok.Encode("Answer:", addSpecialTokens: false), e.Context);
        Assert.Equal(tok.Encode("Answer: yes", addSpecialTokens: false)[e.Context.Length..], e.Continuation);
        // An empty context is the prefix id; --add-bos puts it before every context.
        Assert.Equal([1], scorer.Encode(new LoglikelihoodRequest("", " yes")).Context);
        var bos = new LoglikelihoodScorer(new ToyDecoder(2048), tok, new ScoringOptions { PrefixTokenId = 1, AddBos = true });
        Assert.Equal([1, .. tok.Encode("Answer:", addSpecialTokens: false)], bos.Encode(new LoglikelihoodRequest("Answer:", " yes")).Context);
    }

    [Fact]
    public void FewshotContextIsDescriptionShotsThenPrompt()
    {
        using var tmp = new TempFolder();
        var task = new MultipleChoiceTask(WriteTask(tmp), TaskYaml.Load(tmp["task.yaml"]));
        var docs = task.BuildRequests(numFewshot: 2, limit: 2);
        // One random.Random(1234) across documents, sampling the validation split (not the test split: no extra draw).
        var rng = new PythonRandom(1234);
        var pool = task.FewshotDocs;
        foreach (var d in docs)
        {
            var shots = rng.Sample(pool, 2);
            var expected = "Choose well.\n\n" + string.Concat(shots.Select(s =>
                $"Question: {s["question"]}\nAnswer: " + ((List<object?>)((Dictionary<string, object?>)s["choices"]!)["text"]!)[s["answerKey"] as string == "A" ? 0 : 1] + "\n\n"))
                + $"Question: {d.Doc["question"]}\nAnswer:";
            Assert.Equal(expected, d.Requests[0].Context);
            Assert.Equal(" " + d.Choices[0], d.Requests[0].Continuation);
        }
    }

    /// <summary>With neither fewshot_split nor test_split set (piqa's layout: training and validation splits), lm-eval's
    /// ContextSampler.get_context compares None == None and draws num_fewshot + 1 documents, dropping the evaluated one.</summary>
    [Fact]
    public void UnsetFewshotAndTestSplitsDrawOneExtraShot()
    {
        using var tmp = new TempFolder();
        var yaml = TaskYamlText.Replace("test: docs.jsonl", "validation: docs.jsonl").Replace("validation: shots.jsonl", "train: shots.jsonl")
            .Replace("test_split: test", "validation_split: validation").Replace("fewshot_split: validation", "training_split: train");
        var task = new MultipleChoiceTask(WriteTask(tmp, yaml), TaskYaml.Load(tmp["task.yaml"]));
        Assert.Null(task.FewshotSplit);
        Assert.Null(task.TestSplit);
        var docs = task.BuildRequests(numFewshot: 2, limit: 3);
        var rng = new PythonRandom(1234);
        foreach (var d in docs)
        {
            var shots = rng.Sample(task.FewshotDocs, 3).Where(x => !ReferenceEquals(x, d.Doc)).Take(2);
            var expected = "Choose well.\n\n" + string.Concat(shots.Select(x => $"Question: {x["question"]}\nAnswer: ")
                .Zip(shots, (q, x) => q + ((List<object?>)((Dictionary<string, object?>)x["choices"]!)["text"]!)[x["answerKey"] as string == "A" ? 0 : 1] + "\n\n"))
                + $"Question: {d.Doc["question"]}\nAnswer:";
            Assert.Equal(expected, d.Requests[0].Context);
        }
    }

    /// <summary>lm-eval's simple_evaluate keeps a task whose YAML says num_fewshot: 0 zero-shot whatever --num_fewshot asks;
    /// a task without the key takes the request.</summary>
    [Theory]
    [InlineData("", null, 0)]
    [InlineData("", 3, 3)]
    [InlineData("num_fewshot: 0\n", 3, 0)]
    [InlineData("num_fewshot: 1\n", null, 1)]
    [InlineData("num_fewshot: 1\n", 3, 3)]
    public void YamlZeroShotsOverrideTheCommandLine(string line, int? requested, int expected)
    {
        using var tmp = new TempFolder();
        var task = new MultipleChoiceTask(WriteTask(tmp, TaskYamlText + "\n" + line), TaskYaml.Load(tmp["task.yaml"]));
        Assert.Equal(expected, task.ShotsFor(requested));
    }

    [Fact]
    public void ResultsJsonHasLmEvalLayout()
    {
        using var tmp = new TempFolder();
        var task = new MultipleChoiceTask(WriteTask(tmp), TaskYaml.Load(tmp["task.yaml"]));
        var folder = ModelFolder.Open(models.Dir("tiny-mixtral"));
        using var decoder = OrtDecoder.Open(folder);
        var options = new TaskEvalOptions { Limit = 4 };
        var results = TaskEvaluator.ForModel(folder, decoder, options).Evaluate(new ResolvedTasks([task], []), options, "m");
        var written = TaskResultsWriter.Write(results, tmp["out"], logSamples: true);
        Assert.Equal(2, written.Count);
        using var json = JsonDocument.Parse(File.ReadAllText(tmp["out/results.json"]));
        var r = json.RootElement.GetProperty("results").GetProperty("toy_mc");
        foreach (var key in new[] { "acc,none", "acc_stderr,none", "acc_norm,none", "acc_norm_stderr,none" })
            Assert.Equal(JsonValueKind.Number, r.GetProperty(key).ValueKind);
        var n = json.RootElement.GetProperty("n-samples").GetProperty("toy_mc");
        Assert.Equal(5, n.GetProperty("original").GetInt32());
        Assert.Equal(4, n.GetProperty("effective").GetInt32());
        Assert.Equal("Question: {{question}}\nAnswer:", json.RootElement.GetProperty("configs").GetProperty("toy_mc").GetProperty("doc_to_text").GetString());
        Assert.Equal(0, json.RootElement.GetProperty("n-shot").GetProperty("toy_mc").GetInt32());
        Assert.Equal(2.0, json.RootElement.GetProperty("versions").GetProperty("toy_mc").GetDouble());
        var lines = File.ReadAllLines(tmp["out/samples_toy_mc.jsonl"]);
        Assert.Equal(4, lines.Length);
        using var sample = JsonDocument.Parse(lines[0]);
        var s = sample.RootElement;
        Assert.Equal(0, s.GetProperty("doc_id").GetInt32());
        Assert.Equal("0", s.GetProperty("target").GetString());
        Assert.Equal(3, s.GetProperty("resps").GetArrayLength());
        var pair = s.GetProperty("filtered_resps")[0];
        Assert.Equal(results.Tasks[0].Docs[0].Scores[0].LogProbability, double.Parse(pair[0].GetString()!), 1e-12);
        Assert.Contains(pair[1].GetString(), new[] { "True", "False" });
        Assert.Equal(" light", s.GetProperty("arguments").GetProperty("gen_args_0").GetProperty("arg_1").GetString());
        Assert.Equal(64, s.GetProperty("doc_hash").GetString()!.Length);
        Assert.Equal(JsonValueKind.Number, s.GetProperty("acc_norm").ValueKind);
        // Same inputs, same bytes.
        Assert.Equal(TaskResultsWriter.ResultsJson(results), File.ReadAllBytes(tmp["out/results.json"]));
    }

    [Theory]
    [InlineData("output_type: multiple_choice", "output_type: generate_until", "output_type 'generate_until' is not supported")]
    [InlineData("\"Question: {{question}}\\nAnswer:\"", "\"Question: {{question | shout}}\"", "doc_to_text template")]
    [InlineData("test: docs.jsonl", "test: nowhere.jsonl", "data file nowhere.jsonl")]
    [InlineData("{{choices.label.index(answerKey)}}", "{{ 7 }}", "target 7 is out of range")]
    [InlineData("doc_to_text:", "process_docs: !function utils.process_docs\ndoc_to_text:", "process_docs: !function utils.process_docs")]
    public void BadTaskIsOneLineNamingTheFile(string find, string replace, string message)
    {
        using var tmp = new TempFolder();
        var path = WriteTask(tmp, TaskYamlText.Replace(find, replace));
        var e = Assert.ThrowsAny<UserErrorException>(() => new MultipleChoiceTask(path, TaskYaml.Load(path)).BuildRequests(0, null));
        Assert.StartsWith(path, e.Message);
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void EmptyTaskIsAnError()
    {
        using var tmp = new TempFolder();
        var path = WriteTask(tmp);
        File.WriteAllText(tmp["docs.jsonl"], "");
        var e = Assert.ThrowsAny<UserErrorException>(() => new MultipleChoiceTask(path, TaskYaml.Load(path)));
        Assert.Contains("has no documents", e.Message);
        Assert.StartsWith(path, e.Message);
    }

    [Fact]
    public void CliRunsBuiltinTasksAndRefusesBadOnesWithoutWriting()
    {
        using var tmp = new TempFolder();
        var ok = CliRunner.Run("eval", models.Dir("tiny-mixtral"), "--tasks", "onnxmoe", "--limit", "6", "--batch-size", "4",
            "--output-path", tmp["out"], "--log-samples");
        Assert.True(ok.ExitCode == 0, ok.ToString());
        foreach (var t in new[] { "kjv_cloze", "kjv_next_verse", "kjv_word_order", "kjv_fill_blank" })
        {
            Assert.Contains(t, ok.Stdout);
            Assert.Equal(6, File.ReadAllLines(tmp[$"out/samples_{t}.jsonl"]).Length);
        }
        Assert.Contains("docs/s", ok.Stderr);
        using var json = JsonDocument.Parse(File.ReadAllText(tmp["out/results.json"]));
        Assert.True(json.RootElement.GetProperty("groups").GetProperty("onnxmoe").TryGetProperty("acc,none", out _));

        var bad = WriteTask(tmp, TaskYamlText.Replace("output_type: multiple_choice", "output_type: loglikelihood_rolling"));
        var r = CliRunner.Run("eval", models.Dir("tiny-mixtral"), "--tasks", bad, "--output-path", tmp["bad-out"]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(bad, r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.False(Directory.Exists(tmp["bad-out"]));

        var unknown = CliRunner.Run("eval", models.Dir("tiny-mixtral"), "--tasks", "no_such_task");
        Assert.Equal(1, unknown.ExitCode);
        Assert.Contains("unknown task 'no_such_task'", unknown.Stderr);
    }
}
