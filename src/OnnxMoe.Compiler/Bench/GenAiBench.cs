using System.Diagnostics;
using System.Reflection;
using Microsoft.ML.OnnxRuntimeGenAI;
using OnnxMoe.Inference.Models;
using UserErrorException = OnnxMoe.Ir.UserErrorException;
using OnnxMoe.Runtime;

namespace OnnxMoe.Compiler.Bench;

/// <summary>
/// The GenAI engine of <see cref="BenchRunner"/>: the folder loaded by ONNX Runtime GenAI with its genai_config.json,
/// the same synthetic prompt, prefill = AppendTokens of the prompt, decode = one GenerateNextToken per token (greedy).
/// </summary>
internal static class GenAiBench
{
    /// <summary>The GenAI package version built against (Directory.Packages.props; the managed assembly has none of its own).</summary>
    public static string Version => typeof(GenAiBench).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
        .FirstOrDefault(a => a.Key == "OnnxRuntimeGenAIVersion")?.Value ?? "?";

    public static void WarmUp(BenchRunner runner, ModelFolder folder)
    {
        using var config = OpenConfig(runner.Options, folder);
        using var model = Load(config, folder);
        RunOnce(runner.Options, model, VocabSize(folder));
    }

    /// <summary>Measures one folder as <see cref="BenchRunner.Measure"/> does (same warm-up, repeats, medians and memory rules).</summary>
    public static BenchModelResult Measure(BenchRunner runner, ModelFolder folder, string name)
    {
        var options = runner.Options;
        int vocab = VocabSize(folder);
        BenchRunner.ReleaseFreedMemory();
        bool isolated = PeakMemory.TryResetPeak();
        long before = PeakMemory.ResidentBytes;
        var load = Stopwatch.StartNew();
        var prefill = new List<double>();
        var decode = new List<double>();
        using var config = OpenConfig(options, folder);
        using var model = Load(config, folder);
        double loadSeconds = load.Elapsed.TotalSeconds;
        for (int run = 0; run < options.WarmupRuns + options.Repeats; run++)
        {
            var (p, d) = RunOnce(options, model, vocab);
            if (run < options.WarmupRuns) continue;
            prefill.Add(p);
            decode.AddRange(d);
            runner.Progress($"  repeat {run - options.WarmupRuns + 1}/{options.Repeats}: prefill {p * 1e3:F1} ms, decode median {BenchRunner.Median(d) * 1e3:F2} ms/token");
        }
        var memory = PeakMemory.Read();
        double prefillMedian = BenchRunner.Median(prefill), decodeMedian = BenchRunner.Median(decode);
        return new BenchModelResult(name, folder.Directory, BenchRunner.ModelFileBytes(folder), options.PromptLength, options.GenerateTokens, 1, options.Repeats,
            prefillMedian * 1e3, options.PromptLength / prefillMedian,
            decodeMedian * 1e3, 1 / decodeMedian,
            memory.PeakResidentBytes, memory.PeakResidentBytes - before, isolated, loadSeconds) { Engine = BenchEngine.GenAi.Name() };
    }

    /// <summary>GenAI's model over the folder; GenAI's refusal (e.g. a genai_config.json of an older onnxmoe) is a user error naming the folder.</summary>
    private static Model Load(Config config, ModelFolder folder)
    {
        try
        {
            return new Model(config);
        }
        catch (OnnxRuntimeGenAIException e)
        {
            throw new UserErrorException($"{folder.Directory}: ORT GenAI cannot load this folder: {e.Message} (recompile it with this onnxmoe)");
        }
    }

    private static int VocabSize(ModelFolder folder) =>
        folder.GenAi?.VocabSize ?? throw new UserErrorException($"{folder.Directory}: --engine genai needs genai_config.json with vocab_size (onnxmoe compile writes it)");

    /// <summary>The folder's genai_config.json; --threads, when given, overrides its intra-op thread count.</summary>
    private static Config OpenConfig(BenchOptions options, ModelFolder folder)
    {
        _ = VocabSize(folder);
        OrtRuntime.EnsureInitialized();   // GenAI then uses the libonnxruntime already loaded in this process
        Config config;
        try
        {
            config = new Config(folder.Directory);
        }
        catch (OnnxRuntimeGenAIException e)
        {
            throw new UserErrorException($"{folder.Directory}: ORT GenAI cannot read genai_config.json: {e.Message} (recompile it with this onnxmoe)");
        }
        if (options.Session is { IntraOpThreads: > 0 } session)
            config.Overlay("{\"model\":{\"decoder\":{\"session_options\":{\"intra_op_num_threads\":" + session.IntraOpThreads + "}}}}");
        return config;
    }

    /// <summary>
    /// One prefill (seconds) and the per-token decode times (seconds). After AppendTokens the prompt's logits are
    /// computed; the first GenerateNextToken only picks a token from them (untimed, as the ORT engine's argmax after
    /// prefill), each later one runs the model on the previous token. min_length keeps an EOS from ending the run early.
    /// </summary>
    private static (double Prefill, List<double> Decode) RunOnce(BenchOptions options, Model model, int vocab)
    {
        int[] ids = [.. BenchRunner.PromptIds(options.PromptLength, vocab).Select(i => (int)i)];
        int total = options.PromptLength + options.GenerateTokens + 1;
        using var parameters = new GeneratorParams(model);
        parameters.SetSearchOption("max_length", total);
        parameters.SetSearchOption("min_length", total);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new Generator(model, parameters);
        var sw = Stopwatch.StartNew();
        generator.AppendTokens(ids);
        double prefill = sw.Elapsed.TotalSeconds;
        generator.GenerateNextToken();
        var times = new List<double>(options.GenerateTokens);
        for (int g = 0; g < options.GenerateTokens; g++)
        {
            sw.Restart();
            generator.GenerateNextToken();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        return (prefill, times);
    }
}
