using System.Text.Json.Nodes;
using System.Xml.Linq;
using OnnxMoe.Compiler.Bench;
using OnnxMoe.Compiler.Report;
using OnnxMoe.Inference.Evaluation;
using OnnxMoe.Inference.Evaluation.Tasks;
using OnnxMoe.Tests.Cli;
using OnnxMoe.Tests.Inference;

namespace OnnxMoe.Tests.Report;

/// <summary>One small report of tiny-mixtral (baseline + block-drop-4, 8 documents per built-in task, a short text, a few
/// benchmark tokens), made once for the tests below.</summary>
public sealed class TinyReport : IDisposable
{
    private readonly TempFolder _tmp = new();

    public TinyReport()
    {
        Report = ReportJob.Run(Request(Dir));
    }

    public string Dir => _tmp["report"];
    public CompressionReport Report { get; }

    public ReportRequest Request(string output) => new()
    {
        Checkpoint = Path.Combine(TestFiles.RepositoryRoot(), "models", "tiny-mixtral"),
        Output = output,
        Recipes = ["block-drop-4"],
        Tasks = ["onnxmoe"],
        TaskFolders = [Path.Combine(AppContext.BaseDirectory, "tasks")],
        TaskOptions = new TaskEvalOptions { Limit = 8, BatchSize = 4 },
        PerplexityText = Path.Combine(TestFiles.RepositoryRoot(), "models", "data", "kjv-heldout.txt"),
        PerplexityOptions = new PerplexityOptions { SequenceLength = 128, Stride = 128 },
        PerplexityMaxTokens = 400,
        Samples = 2,
        SeqLen = 32,
        Bench = new BenchOptions { PromptLength = 8, GenerateTokens = 4, Repeats = 1 },
        BenchRounds = 2,
    };

    public string Temp(string name) => _tmp[name];

    public void Dispose() => _tmp.Dispose();
}

public sealed class ReportTests(TinyReport tiny) : IClassFixture<TinyReport>
{
    private JsonNode ReadJson(string relative) => JsonNode.Parse(File.ReadAllText(Path.Combine(tiny.Dir, relative)))!;

    [Fact]
    public void TableColumnsAreComputedFromTheParts()
    {
        var json = ReadJson("report.json");
        var rows = json["rows"]!.AsArray();
        Assert.Equal(["none", "block-drop-4"], rows.Select(r => (string)r!["recipe"]!));
        string[] tasks = ["kjv_cloze", "kjv_next_verse", "kjv_word_order", "kjv_fill_blank"];

        // From each artifact's compile_report.json and the evaluator's results.json, as the table must have them.
        double Average(string recipe, string metric)
        {
            var results = ReadJson($"eval/{recipe}/results.json")["results"]!;
            return tasks.Average(t => (double)results[t]![$"{metric},none"]!);
        }
        long Parameters(string recipe) => (long)ReadJson($"artifacts/{recipe}/compile_report.json")["parameters"]!["total"]!;
        long Bytes(string recipe) => new[] { "model.onnx", "model.onnx.data" }.Sum(f => new FileInfo(Path.Combine(tiny.Dir, "artifacts", recipe, f)).Length);

        var baseline = rows[0]!;
        foreach (var row in rows.Select(r => r!))
        {
            string recipe = (string)row["recipe"]!;
            var results = ReadJson($"eval/{recipe}/results.json")["results"]!;
            Assert.Equal(tasks, row["tasks"]!.AsArray().Select(t => (string)t!["task"]!));
            foreach (var t in row["tasks"]!.AsArray().Select(t => t!))
            {
                Assert.Equal((double)results[(string)t["task"]!]!["acc,none"]!, (double)t["acc"]!);
                Assert.Equal((double)results[(string)t["task"]!]!["acc_norm,none"]!, (double)t["acc_norm"]!);
                Assert.Equal(8, (int)t["docs"]!);
            }
            Assert.Equal(Average(recipe, "acc"), (double)row["average_acc"]!, 12);
            Assert.Equal(Average(recipe, "acc") / Average("none", "acc"), (double)row["retained_acc"]!, 12);
            Assert.Equal(Average(recipe, "acc_norm") / Average("none", "acc_norm"), (double)row["retained_acc_norm"]!, 12);
            Assert.Equal(Parameters(recipe), (long)row["parameters"]!);
            Assert.Equal(Bytes(recipe), (long)row["bytes"]!);
            Assert.Equal((double)Parameters(recipe) / Parameters("none"), (double)row["parameters_ratio"]!, 12);
            Assert.Equal((double)Bytes(recipe) / Bytes("none"), (double)row["bytes_ratio"]!, 12);
            Assert.Equal((double)row["perplexity"]! / (double)baseline["perplexity"]!, (double)row["perplexity_ratio"]!, 12);

            // Speedups: the median over rounds of each round's ratio against the baseline measured in the same round.
            var speed = row["speed"]!;
            var decode = speed["decode_tokens_per_second_rounds"]!.AsArray().Select(v => (double)v!).ToList();
            var baseDecode = baseline["speed"]!["decode_tokens_per_second_rounds"]!.AsArray().Select(v => (double)v!).ToList();
            Assert.Equal(2, decode.Count);
            Assert.Equal(decode.Zip(baseDecode, (a, b) => a / b).Average(), (double)speed["decode_speedup"]!, 12);   // the median of two
            Assert.Equal(decode.Average(), (double)speed["decode_tokens_per_second"]!, 9);
        }
        Assert.Equal(1.0, (double)baseline["retained_acc"]!);
        Assert.True((long)rows[1]!["parameters"]! < (long)baseline["parameters"]!, "block-drop-4 removes a block");

        // The markdown shows the same numbers (3 decimals, percent with one).
        string md = File.ReadAllText(Path.Combine(tiny.Dir, "report.md"));
        var drop = tiny.Report.Rows[1];
        Assert.Contains($"| `block-drop-4` | {drop.Parameters / 1e6:F2} M ({drop.ParametersRatio:F2}x)", md);
        Assert.Contains($"{100 * drop.RetainedAcc:F1}% / {100 * drop.RetainedAccNorm:F1}%", md);
    }

    [Fact]
    public void HtmlIsWellFormedAndSelfContainedWithOneSvgPerChart()
    {
        string html = File.ReadAllText(Path.Combine(tiny.Dir, "report.html"));
        Assert.StartsWith("<!DOCTYPE html>\n", html);
        var doc = XDocument.Parse(html["<!DOCTYPE html>\n".Length..]);
        XNamespace svg = "http://www.w3.org/2000/svg";
        var charts = doc.Descendants(svg + "svg").ToList();
        Assert.Equal(2, charts.Count);
        Assert.Equal(["accuracy retained against decode speedup", "accuracy per task"], charts.Select(c => (string)c.Attribute("aria-label")!));
        Assert.Equal(2, charts[0].Descendants(svg + "circle").Count());   // one point per recipe
        // One bar per recipe and task, and per recipe for the average; one legend swatch per recipe.
        Assert.Equal(2 * (4 + 1) + 2, charts[1].Descendants(svg + "rect").Count());
        Assert.Empty(doc.Descendants("script"));
        Assert.DoesNotContain(doc.Descendants(), e => e.Name.LocalName is "link" or "img" or "iframe");
        Assert.DoesNotContain("src=", html);
        Assert.Equal(3, doc.Descendants("table").First().Elements("tr").Count());   // header + two recipes
    }

    [Fact]
    public void SameRequestGivesTheSameJsonExceptSpeed()
    {
        var second = tiny.Temp("second");
        ReportJob.Run(tiny.Request(second));
        static string WithoutSpeed(string path)
        {
            var node = JsonNode.Parse(File.ReadAllText(path))!;
            foreach (var row in node["rows"]!.AsArray()) row!.AsObject().Remove("speed");
            return node.ToJsonString();
        }
        Assert.Equal(WithoutSpeed(Path.Combine(tiny.Dir, "report.json")), WithoutSpeed(Path.Combine(second, "report.json")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(tiny.Dir, "eval", "block-drop-4", "results.json")), File.ReadAllBytes(Path.Combine(second, "eval", "block-drop-4", "results.json")));
    }

    [Fact]
    public void ExistingReportFolderNeedsOverwrite()
    {
        var e = Assert.ThrowsAny<Ir.UserErrorException>(() => ReportJob.Run(tiny.Request(tiny.Dir)));
        Assert.Contains(tiny.Dir, e.Message);
        Assert.True(File.Exists(Path.Combine(tiny.Dir, "report.json")));
    }

    [Theory]
    [InlineData("no-such-recipe", "tiny-mixtral", "no-such-recipe: no such recipe file or built-in recipe")]
    [InlineData("block-drop-4", "no-such-checkpoint", "no-such-checkpoint: no such checkpoint folder")]
    [InlineData("block-drop-4,block-drop-4", "tiny-mixtral", "'block-drop-4' is listed twice")]
    public void BadRecipeOrCheckpointIsOneLineAndWritesNothing(string recipes, string checkpoint, string message)
    {
        using var tmp = new TempFolder();
        string ckpt = checkpoint == "tiny-mixtral" ? Path.Combine(TestFiles.RepositoryRoot(), "models", checkpoint) : checkpoint;
        var r = CliRunner.RunIn(tmp.Path, "report", ckpt, "--recipes", recipes, "--tasks", "onnxmoe", "-o", "out");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(message, r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.Empty(Directory.EnumerateFileSystemEntries(tmp.Path));
    }

    [Fact]
    public void TaskErrorsFailBeforeAnyCompileAndLateErrorsLeaveNothing()
    {
        using var tmp = new TempFolder();
        string ckpt = Path.Combine(TestFiles.RepositoryRoot(), "models", "tiny-mixtral");
        File.WriteAllText(tmp["bad.yaml"], "task: bad_task\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: docs.jsonl\noutput_type: generate_until\n");
        File.WriteAllText(tmp["docs.jsonl"], "{\"q\": \"x\"}\n");
        var bad = CliRunner.RunIn(tmp.Path, "report", ckpt, "--recipes", "block-drop-4", "--tasks", tmp["bad.yaml"], "-o", "out");
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("bad.yaml", bad.Stderr);
        Assert.Single(bad.Stderr.Trim().Split('\n'));
        Assert.False(Directory.Exists(tmp["out"]));

        var unknown = CliRunner.RunIn(tmp.Path, "report", ckpt, "--recipes", "block-drop-4", "--tasks", "no_such_task", "-o", "out");
        Assert.Equal(1, unknown.ExitCode);
        Assert.Contains("unknown task 'no_such_task'", unknown.Stderr);

        // Too little text is only known once the first artifact's tokenizer reads it: after a compile, still nothing is left.
        File.WriteAllText(tmp["short.txt"], "a");
        var late = CliRunner.RunIn(tmp.Path, "report", ckpt, "--recipes", "none", "--perplexity", "short.txt", "--bench-gen", "2", "-o", "out");
        Assert.Equal(1, late.ExitCode);
        Assert.Contains("short.txt: too little text to score", late.Stderr.Trim().Split('\n')[^1]);
        Assert.Equal([tmp["bad.yaml"], tmp["docs.jsonl"], tmp["short.txt"]], Directory.EnumerateFileSystemEntries(tmp.Path).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void HelpTeachesWithAnExample()
    {
        var r = CliRunner.Run("report", "--help");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("onnxmoe report models/tiny-mixtral --recipes all --tasks onnxmoe", r.Stdout);
        foreach (var option in new[] { "--recipes", "--tasks", "--perplexity", "--limit", "--bench-gen", "--bench-prompt", "--bench-rounds", "--output" })
            Assert.Contains(option, r.Stdout);
    }
}
