using System.Text.Json.Nodes;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Compiler.Verify;
using OnnxMoe.Tests.Cli;

namespace OnnxMoe.Tests.Reliability;

/// <summary>A compiled model folder of the bundled tiny Mixtral (with its tokenizer), compiled once for the verify tests.</summary>
public sealed class CompiledTinyMixtral : IDisposable
{
    private readonly TempFolder _tmp = new();

    public CompiledTinyMixtral()
    {
        Folder = _tmp["tiny-mixtral"];
        CompileJob.Run(new CompileRequest { Checkpoint = Path.Combine(CliRunner.RepoRoot, "models/tiny-mixtral"), Output = Folder });
    }

    public string Folder { get; }

    public void Dispose() => _tmp.Dispose();
}

/// <summary>onnxmoe verify on a real artifact and on copies corrupted one way each: exactly the expected problem, naming its file.</summary>
public sealed class VerifyTests(CompiledTinyMixtral compiled) : IClassFixture<CompiledTinyMixtral>, IDisposable
{
    private readonly TempFolder _tmp = new();

    public void Dispose() => _tmp.Dispose();

    private string Copy()
    {
        string to = _tmp["copy"];
        Directory.CreateDirectory(to);
        foreach (var f in Directory.EnumerateFiles(compiled.Folder)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        return to;
    }

    [Fact]
    public void A_fresh_artifact_is_clean_and_the_cli_says_so_in_one_line()
    {
        Assert.Empty(ModelFolderVerifier.Verify(compiled.Folder).Problems);
        var r = CliRunner.Run("verify", compiled.Folder);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("", r.Stderr);
        Assert.Matches(@"ok \(mixtral, 4 layers, \d+ nodes, \d+ initializers, 15,613,952 bytes of external data\)\n$", r.Stdout);
    }

    public static TheoryData<string, string, string> Corruptions => new()
    {
        // name, file the problem names, words of the problem
        { "truncate-data", "model.onnx", "lies outside 'model.onnx.data'" },
        { "append-data", "model.onnx.data", "data appended" },
        { "delete-tokenizer", "tokenizer.json", "missing" },
        { "break-tokenizer", "tokenizer.json", "" },
        { "break-tokenizer-config", "tokenizer_config.json", "not valid JSON" },
        { "delete-data", "model.onnx", "not found" },
        { "delete-genai-config", "genai_config.json", "missing" },
        { "genai-layers", "genai_config.json", "num_hidden_layers is 3, the graph has 4" },
        { "genai-input-name", "genai_config.json", "names 'past_key_values.0.k'" },
        { "genai-vocab", "genai_config.json", "vocab_size is 100, the graph's logits have 2048" },
        { "genai-head-size", "genai_config.json", "head_size is 16, the graph's KV cache has 32" },
        { "genai-not-json", "genai_config.json", "" },
        { "report-pipeline", "compile_report.json", "differs from the model's 'onnxmoe.pipeline'" },
        { "truncate-model", "model.onnx", "" },
    };

    [Theory]
    [MemberData(nameof(Corruptions))]
    public void Each_corruption_is_reported_naming_its_file(string corruption, string file, string words)
    {
        string dir = Copy();
        string P(string name) => Path.Combine(dir, name);
        void EditGenAi(Action<JsonObject> edit)
        {
            var json = JsonNode.Parse(File.ReadAllText(P("genai_config.json")))!.AsObject();
            edit(json);
            File.WriteAllText(P("genai_config.json"), json.ToJsonString());
        }
        JsonObject Decoder(JsonObject j) => j["model"]!["decoder"]!.AsObject();
        switch (corruption)
        {
            case "truncate-data": using (var f = File.OpenWrite(P("model.onnx.data"))) f.SetLength(f.Length / 2); break;
            case "append-data": using (var f = new FileStream(P("model.onnx.data"), FileMode.Append)) f.Write(new byte[5000]); break;
            case "delete-tokenizer": File.Delete(P("tokenizer.json")); break;
            case "break-tokenizer": File.WriteAllText(P("tokenizer.json"), "{\"model\": {\"type\": \"BPE\", \"vocab\": 12"); break;
            case "break-tokenizer-config": File.WriteAllText(P("tokenizer_config.json"), "{\"bos_token\": "); break;
            case "delete-data": File.Delete(P("model.onnx.data")); break;
            case "delete-genai-config": File.Delete(P("genai_config.json")); break;
            case "genai-layers": EditGenAi(j => Decoder(j)["num_hidden_layers"] = 3); break;
            case "genai-input-name": EditGenAi(j => Decoder(j)["inputs"]!["past_key_names"] = "past_key_values.%d.k"); break;
            case "genai-vocab": EditGenAi(j => j["model"]!["vocab_size"] = 100); break;
            case "genai-head-size": EditGenAi(j => Decoder(j)["head_size"] = 16); break;
            case "genai-not-json": File.WriteAllText(P("genai_config.json"), "{\"model\": "); break;
            case "report-pipeline":
                var report = JsonNode.Parse(File.ReadAllText(P("compile_report.json")))!;
                report["pipeline"] = "cleanup";
                File.WriteAllText(P("compile_report.json"), report.ToJsonString());
                break;
            case "truncate-model": using (var f = File.OpenWrite(P("model.onnx"))) f.SetLength(f.Length - 100); break;
            default: throw new ArgumentException(corruption);
        }
        var problems = ModelFolderVerifier.Verify(dir).Problems;
        Assert.NotEmpty(problems);
        Assert.Contains(problems, p => p.StartsWith(P(file) + ":", StringComparison.Ordinal) && p.Contains(words, StringComparison.Ordinal));
        Assert.All(problems, p => Assert.DoesNotContain('\n', p));
        Assert.All(problems, p => Assert.StartsWith(dir + "/", p));

        var r = CliRunner.Run("verify", dir);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("", r.Stdout);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(problems.Count + 1, lines.Length);   // one line per problem and the count
        Assert.DoesNotContain("internal error", r.Stderr);
    }

    [Fact]
    public void A_missing_folder_is_a_user_error()
    {
        var r = CliRunner.Run("verify", _tmp["nope"]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("model folder not found", r.Stderr);
    }
}
