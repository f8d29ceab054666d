using System.Text.Json;
using OnnxMoe.Compiler.Bench;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Ir;
using OnnxMoe.Tests.Cli;
using OnnxMoe.Tests.Lowering;

namespace OnnxMoe.Tests.Bench;

/// <summary><c>onnxmoe bench --profile</c>: ORT's profile read back, split into prefill and decode, and summed per op type.</summary>
public sealed class OrtProfileTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-profile-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string CompileTiny()
    {
        var checkpoint = TinyCheckpoints.Create("mixtral");
        try
        {
            var output = Path.Combine(_dir, "tiny");
            CompileJob.Run(new CompileRequest { Checkpoint = checkpoint, Output = output });
            return output;
        }
        finally
        {
            Directory.Delete(checkpoint, recursive: true);
        }
    }

    private string Trace(string json)
    {
        var path = Path.Combine(_dir, "trace.json");
        File.WriteAllText(path, json);
        return path;
    }

    private static string Node(string op, int dur) =>
        $$$"""{"cat":"Node","name":"/n/{{{op}}}_fence_before","dur":0,"args":{"op_name":"{{{op}}}"}},{"cat":"Node","name":"/n/{{{op}}}_kernel_time","dur":{{{dur}}},"args":{"op_name":"{{{op}}}","output_type_shape":[{"float":[1,2]}]}}""";

    private static string Run(int dur) => $$$"""{"cat":"Session","name":"SequentialExecutor::Execute","dur":{{{dur}}}},{"cat":"Session","name":"model_run","dur":{{{dur}}}}""";

    [Fact]
    public void Node_events_belong_to_the_model_run_after_them_and_are_summed_per_op_type()
    {
        var runs = OrtProfileReader.Read(Trace($"[{{\"cat\":\"Session\",\"name\":\"session_initialization\",\"dur\":900}},{Node("MatMul", 5)},{Node("Add", 7)},{Node("MatMul", 4)},{Run(30)},{Node("Add", 1)},{Run(2)}]"));

        Assert.Equal(2, runs.Count);
        Assert.Equal(30, runs[0].Micros);
        Assert.Equal([new OpTime("MatMul", 2, 9), new OpTime("Add", 1, 7)], runs[0].Ops);
        Assert.Equal([new OpTime("Add", 1, 1)], runs[1].Ops);
    }

    [Fact]
    public void Runs_split_into_prefill_and_decode_after_the_warm_up_or_stay_one_phase_when_the_count_does_not_fit()
    {
        // One warm-up and two repeats of (prefill + 2 tokens): 9 runs; run i takes i+1 us in one Mul kernel of 10*(i+1).
        var runs = Enumerable.Range(0, 9).Select(i => new ProfiledRun(10 * (i + 1), [new OpTime("Mul", 1, i + 1)])).ToList();
        var profile = BenchProfile.Summarize("p.json", runs, warmups: 1, repeats: 2, generateTokens: 2);

        var prefill = profile.Phases.Single(p => p.Name == "prefill");
        var decode = profile.Phases.Single(p => p.Name == "decode");
        Assert.Equal(2, prefill.Steps);
        Assert.Equal((4 + 7) / 1e3, prefill.KernelMs, 12);              // runs 3 and 6 (0-based) start the repeats
        Assert.Equal((40 + 70) / 1e3, prefill.RunMs, 12);
        Assert.Equal(4, decode.Steps);
        Assert.Equal((5 + 6 + 8 + 9) / 1e3, decode.KernelMs, 12);
        Assert.Equal(1.0, decode.Ops[0].CallsPerStep);
        Assert.Equal(10.0, decode.Ops[0].PercentOfRun, 9);

        var whole = BenchProfile.Summarize("p.json", runs.Take(8).ToList(), warmups: 1, repeats: 2, generateTokens: 2);
        Assert.Equal("all", Assert.Single(whole.Phases).Name);
    }

    [Fact]
    public void A_file_that_is_not_a_profile_is_one_user_error_naming_it()
    {
        var path = Trace("{\"not\": \"an array\"");
        var e = Assert.Throws<UserErrorException>(() => OrtProfileReader.Read(path));
        Assert.StartsWith(path + ": not an ORT profile", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        var missingOp = Assert.Throws<UserErrorException>(() => OrtProfileReader.Read(Trace("[{\"cat\":\"Node\",\"name\":\"x_kernel_time\",\"dur\":1}]")));
        Assert.Contains("op_name", missingOp.Message);
    }

    [Fact]
    public void Profiled_bench_writes_the_profile_and_its_phases_agree_with_the_embedding_inputs_shapes()
    {
        var folder = CompileTiny();
        var profiles = Path.Combine(_dir, "profiles");
        const int prompt = 6, gen = 3, repeats = 2;
        var report = new BenchRunner(new BenchOptions
        {
            PromptLength = prompt, GenerateTokens = gen, Repeats = repeats, ProfileDirectory = profiles, BandwidthBufferBytes = 8L << 20,
        }).Run([folder]);

        var profile = report.Rows[0].Result.Profile!;
        string file = Path.Combine(profiles, "tiny.ort-profile.json");
        Assert.Equal(Path.GetFullPath(file), profile.File);
        Assert.Equal(["tiny.ort-profile.json"], Directory.GetFiles(profiles).Select(Path.GetFileName));   // ORT's own file name and nothing half-written

        // Reference: a run is a prefill when the embedding Gather's ids are [1, prompt], a decode step when [1, 1].
        var kernel = new Dictionary<string, double> { ["prefill"] = 0, ["decode"] = 0 };
        var runs = new List<(string Phase, double Micros)>();
        double pending = 0;
        string? phase = null;
        using (var doc = JsonDocument.Parse(File.ReadAllBytes(file)))
        {
            foreach (var e in doc.RootElement.EnumerateArray())
            {
                string name = e.GetProperty("name").GetString()!;
                if (name.EndsWith("_kernel_time", StringComparison.Ordinal))
                {
                    pending += e.GetProperty("dur").GetDouble();
                    if (name.StartsWith("/model/embed_tokens/Gather", StringComparison.Ordinal))
                    {
                        var ids = e.GetProperty("args").GetProperty("input_type_shape")[1].GetProperty("int64");
                        phase = ids[1].GetInt32() == prompt ? "prefill" : ids[1].GetInt32() == 1 ? "decode" : "?";
                    }
                }
                else if (name == "model_run")
                {
                    runs.Add((phase!, pending));
                    pending = 0;
                }
            }
        }
        Assert.Equal((1 + repeats) * (1 + gen), runs.Count);
        foreach (var (p, micros) in runs.Skip(1 + gen)) kernel[p] += micros;   // after the warm-up repeat
        Assert.Equal(repeats, runs.Skip(1 + gen).Count(r => r.Phase == "prefill"));

        var prefill = profile.Phases.Single(p => p.Name == "prefill");
        var decode = profile.Phases.Single(p => p.Name == "decode");
        Assert.Equal(repeats, prefill.Steps);
        Assert.Equal(repeats * gen, decode.Steps);
        Assert.Equal(kernel["prefill"] / 1e3, prefill.KernelMs, 6);
        Assert.Equal(kernel["decode"] / 1e3, decode.KernelMs, 6);
        Assert.True(decode.KernelMs <= decode.RunMs);
        Assert.Contains(decode.Ops, o => o.OpType == "MatMul" && o.CallsPerStep >= 1);

        var table = report.ToTable();
        Assert.Contains("profile of tiny:", table);
        Assert.Contains("decode: 6 tokens", table);
        Assert.Contains("calls/token", table);
    }

    [Fact]
    public void Profile_without_the_ort_engine_is_refused_on_one_line()
    {
        var folder = CompileTiny();
        using (var unprofiled = new OnnxMoe.Runtime.InferenceSession(Path.Combine(folder, "model.onnx")))
            Assert.Throws<InvalidOperationException>(() => unprofiled.EndProfiling());
        var r = CliRunner.Run("bench", folder, "--engine", "genai", "--profile", Path.Combine(_dir, "p"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("--profile", r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.False(Directory.Exists(Path.Combine(_dir, "p")));
    }
}
