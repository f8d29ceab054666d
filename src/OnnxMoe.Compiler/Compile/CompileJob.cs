using System.Diagnostics;
using System.Text.Json;
using OnnxMoe.Checkpoints;
using OnnxMoe.Ir;
using OnnxMoe.Lowering;
using OnnxMoe.Onnx;
using OnnxMoe.Compiler.Calibration;
using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Passes;
using OnnxMoe.Structure;

namespace OnnxMoe.Compiler.Compile;

/// <summary>
/// Compiles a Hugging Face checkpoint folder into an ORT model folder: model.onnx, model.onnx.data,
/// tokenizer files, genai_config.json and compile_report.json, applying the request's pipeline or recipe
/// (with calibration where a pass scores the model). Weights stream from the checkpoint to the data file one
/// tensor at a time. Atomic: everything is built in a hidden sibling folder that is renamed into place at the
/// end; on failure no output folder is left behind.
/// </summary>
public sealed class CompileJob
{
    public const string ModelFileName = "model.onnx";
    public const string DataFileName = "model.onnx.data";
    public const string GenAiConfigFileName = "genai_config.json";
    public const string ReportFileName = "compile_report.json";

    /// <summary>Checks the request (checkpoint folder, pipeline or recipe, every pass's options, calibration settings)
    /// before any work; errors are <see cref="UserErrorException"/>s.</summary>
    public CompileJob(CompileRequest request)
    {
        Request = request;
        CheckpointDirectory = Path.GetFullPath(request.Checkpoint);
        OutputDirectory = Path.GetFullPath(request.Output.TrimEnd('/', '\\'));
        if (!Directory.Exists(CheckpointDirectory)) throw new UserErrorException($"{request.Checkpoint}: no such checkpoint folder");
        (Pipeline, Calibration) = request.Resolve();
    }

    private CompileJob(CompileJob resolved, CompileRequest request)
    {
        Request = request;
        CheckpointDirectory = resolved.CheckpointDirectory;
        OutputDirectory = resolved.OutputDirectory;
        (Pipeline, Calibration) = (resolved.Pipeline, resolved.Calibration);
    }

    public CompileRequest Request { get; }
    public string CheckpointDirectory { get; }
    public string OutputDirectory { get; }
    /// <summary>The pipeline the request stands for (its recipe's, or the parsed pipeline text).</summary>
    public PassPipeline Pipeline { get; }
    /// <summary>Calibration settings: the recipe's, overridden by the request's.</summary>
    public CalibrationSettings Calibration { get; }

    /// <summary>The same job reporting to <paramref name="progress"/> (a display created once the job is known to be valid).</summary>
    public CompileJob WithProgress(ICompileProgress? progress) => new(this, Request with { Progress = progress });

    /// <summary>Compiles <paramref name="request"/> end to end; returns the report also written to compile_report.json.</summary>
    public static CompileReport Run(CompileRequest request) => new CompileJob(request).Run();

    /// <summary>Runs the job; returns the report also written to compile_report.json.</summary>
    public CompileReport Run()
    {
        var total = Stopwatch.StartNew();
        using var output = OutputFolder.Begin(OutputDirectory, Request.Overwrite);
        foreach (var leftover in output.RemovedLeftovers) Request.Progress?.Detail($"removed {leftover}, left by an interrupted compile");
        try
        {
            var report = Build(output.BuildDirectory, Pipeline, Calibration, total);
            output.Publish();
            return report;
        }
        catch (IOException e) when (LinuxFileSystem.IsDiskFull(e))
        {
            throw new UserErrorException($"{OutputDirectory}: no space left on the device while writing the model folder; nothing was written");
        }
    }

    private CompileReport Build(string temp, PassPipeline pipeline, CalibrationSettings calibration, Stopwatch total)
    {
        var progress = Request.Progress;
        var sw = Stopwatch.StartNew();
        progress?.StageStarted("lowering", 0, "");
        using var checkpoint = CheckpointFolder.Open(CheckpointDirectory);
        double openS = sw.Elapsed.TotalSeconds;

        sw.Restart();
        var lowered = DecoderLowering.Lower(checkpoint, new LoweringOptions { WeightType = Request.WeightType, Opset = Request.Opset });
        double lowerS = sw.Elapsed.TotalSeconds;
        progress?.StageFinished("lowering", $"{lowered.Spec.Family.Name}, {lowered.Structure.NumLayers} layers");

        sw.Restart();
        var passes = pipeline.Steps.Count == 0 ? null : RunPasses(lowered, pipeline, calibration);
        double passesS = sw.Elapsed.TotalSeconds;

        sw.Restart();
        progress?.StageStarted("writing", 0, "bytes");
        var written = OnnxWriter.Write(lowered.Model, Path.Combine(temp, ModelFileName), new OnnxWriteOptions
        {
            DataFileName = DataFileName,
            Progress = progress is null ? null : (done, all) => progress.StageAdvanced("writing", done, all, null),
        });
        double writeS = sw.Elapsed.TotalSeconds;
        progress?.StageFinished("writing", $"{written.ModelBytes + written.DataBytes:N0} bytes");

        foreach (var file in checkpoint.TokenizerFiles) File.Copy(file, Path.Combine(temp, Path.GetFileName(file)));
        // Passes rewrite the structure metadata (e.g. drop-blocks renumbers layers), so read it back from the model.
        var structure = Structure.DecoderStructure.TryRead(lowered.Model) ?? lowered.Structure;
        File.WriteAllText(Path.Combine(temp, GenAiConfigFileName), GenAiConfigFactory.From(lowered.Spec, ModelFileName, structure).ToJson() + "\n");

        var report = new CompileReport
        {
            Source = CheckpointDirectory,
            Family = lowered.Spec.Family.Name,
            Architecture = lowered.Spec.Architecture,
            DType = Request.WeightType == DataType.Float16 ? "fp16" : "fp32",
            Opset = Request.Opset,
            Pipeline = lowered.Model.GetMetadata(PassManager.PipelineMetadataKey) ?? "",
            Passes = passes?.Passes.Select(p => new PassReport(p.PassName, p.Canonical, p.Changed, p.Elapsed.TotalSeconds,
                new SortedDictionary<string, long>(p.Counters.ToDictionary(), StringComparer.Ordinal))).ToList() ?? [],
            NumLayers = structure.NumLayers,
            MoeLayers = structure.Blocks.Count(b => b.Ffn?.Kind == Structure.FfnKind.Moe),
            Parameters = ParameterCounts.Of(lowered.Model.Graph),
            Bytes = new ByteCounts(checkpoint.TotalTensorBytes, written.ModelBytes, written.DataBytes),
            TokenizerFiles = checkpoint.TokenizerFiles.Select(Path.GetFileName).ToList()!,
            Timings = new Timings(openS, lowerS, passesS, writeS, total.Elapsed.TotalSeconds),
            Calibration = _calibration,
        };
        File.WriteAllText(Path.Combine(temp, ReportFileName), report.ToArtifactJson() + "\n");
        return report;
    }

    /// <summary>Runs the pipeline over the lowered model with the calibration services its passes may ask for.</summary>
    private PipelineRunReport RunPasses(LoweredModel lowered, PassPipeline pipeline, CalibrationSettings calibration)
    {
        var progress = Request.Progress;
        string current = "";
        var manager = new PassManager
        {
            AfterChange = Request.AfterChange,
            ExternalCheck = Request.VerifyOrt ? OrtLoadCheck : null,
            BeforePass = (i, n, invocation) =>
            {
                current = $"pass {i + 1}/{n} {invocation.Split('{')[0]}";
                progress?.StageStarted(current, 0, "");
                progress?.Detail(invocation);
            },
            AfterPass = record => progress?.StageFinished(current, (record.Changed ? "changed" : "no change") +
                (record.Counters.Count > 0 ? ": " + string.Join(", ", record.Counters.Select(kv => $"{kv.Key}={kv.Value}")) : "")),
        };
        var context = new PassContext { Log = progress is null ? null : progress.Detail, CancellationToken = Request.CancellationToken };
        using var calibrationServices = CalibrationServices.Register(context, CheckpointDirectory, calibration, new RegionRunnerOptions
            {
                Session = Request.Session,
                MemoryBudget = Request.CalibrationMemory ?? 0,
                MemoryBudgetExplicit = Request.CalibrationMemory is not null,
                Progress = p => progress?.StageAdvanced(current, p.SamplesDone, p.SamplesTotal, $"calibration {p.Stage}"),
                Log = progress is null ? null : progress.Detail,
            },
            p => progress?.StageAdvanced(current, p.Done, p.Total, $"awq {p.Stage} {p.Item}"));
        Request.ConfigureServices?.Invoke(context);
        var run = manager.Run(lowered.Model, pipeline, context);
        if (calibrationServices.Runner is { Used: true } runner)
            _calibration = new CalibrationReport(runner.Budget, runner.PeakBlockBytes, runner.Store.PeakInMemoryBytes, runner.Store.SpilledBytes, runner.BlocksRun);
        return run;
    }

    private CalibrationReport? _calibration;

    /// <summary>Opens an ORT session on the model (in memory): a pass that leaves a graph ORT rejects fails here.</summary>
    private static void OrtLoadCheck(Model model, string passName)
    {
        try
        {
            using var session = new InMemorySession(model, name: "verify");
        }
        catch (Runtime.OrtException e)
        {
            throw new InvalidOperationException($"after pass {passName}, ONNX Runtime rejects the model: {e.Message}", e);
        }
    }
}

/// <summary>compile_report.json: the file holds everything but the wall-clock figures (<see cref="Timings"/>, each pass's seconds),
/// so the same compile gives the same bytes; <see cref="ToJson"/> (the CLI's --json) includes them.</summary>
public sealed record CompileReport
{
    public required string Source { get; init; }
    public required string Family { get; init; }
    public required string Architecture { get; init; }
    public required string DType { get; init; }
    public required int Opset { get; init; }
    /// <summary>The canonical pipeline (every option spelled out), the same string as the model's onnxmoe.pipeline metadata; "" when none.</summary>
    public required string Pipeline { get; init; }
    /// <summary>One entry per pass run, in order.</summary>
    public required List<PassReport> Passes { get; init; }
    public required int NumLayers { get; init; }
    public required int MoeLayers { get; init; }
    public required ParameterCounts Parameters { get; init; }
    public required ByteCounts Bytes { get; init; }
    public required List<string> TokenizerFiles { get; init; }
    /// <summary>Wall-clock seconds of this run; not in the folder's file, so all zero in a report read back from it.</summary>
    public Timings Timings { get; init; } = new(0, 0, 0, 0, 0);
    /// <summary>What calibration held, when a pass calibrated (its budget depends on the machine, so not in the folder's file).</summary>
    public CalibrationReport? Calibration { get; init; }

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>The report as written into the model folder: <see cref="ToJson"/> without timings, per-pass seconds and calibration memory.</summary>
    public string ToArtifactJson()
    {
        var node = JsonSerializer.SerializeToNode(this, Json)!.AsObject();
        node.Remove("timings");
        node.Remove("calibration");
        foreach (var pass in node["passes"]!.AsArray()) pass!.AsObject().Remove("seconds");
        return node.ToJsonString(Json);
    }
    public static CompileReport FromJson(string json) => JsonSerializer.Deserialize<CompileReport>(json, Json)!;
}

/// <summary>Calibration's memory: its budget, the largest block resident at once, hidden states in memory at most and spilled, blocks run.</summary>
public sealed record CalibrationReport(long BudgetBytes, long PeakBlockBytes, long PeakHiddenStateBytes, long SpilledBytes, int BlocksRun);

/// <param name="CheckpointTensors">Bytes of all tensors in the source safetensors files.</param>
/// <param name="Model">Bytes of model.onnx.</param>
/// <param name="Data">Bytes of model.onnx.data.</param>
public sealed record ByteCounts(long CheckpointTensors, long Model, long Data);

/// <param name="LowerSeconds">Lowering alone (building the graph over the lazily read weights).</param>
/// <param name="PassesSeconds">All passes, calibration included.</param>
/// <param name="WriteSeconds">Writing model.onnx and streaming the weights into model.onnx.data.</param>
public sealed record Timings(double OpenSeconds, double LowerSeconds, double PassesSeconds, double WriteSeconds, double TotalSeconds);

/// <summary>One pass of the compile: its name, canonical invocation (all options), whether it changed the model, wall seconds and counters.</summary>
public sealed record PassReport(string Name, string Options, bool Changed, double Seconds, SortedDictionary<string, long> Counters);

/// <summary>Weight parameters of a lowered graph by role (<see cref="NodeRoles"/> of each weight's first user).</summary>
public sealed record ParameterCounts(long Total, long Embedding, long Attention, long Norms, long Router, long RoutedExperts, long SharedExperts, long DenseMlp, long LmHead)
{
    /// <summary>Counts initializers that are weights (named after checkpoint tensors, not builder constants under "/");
    /// a MatMulNBits weight counts as its K x N logical parameters.</summary>
    public static ParameterCounts Of(Graph g)
    {
        long total = 0, embed = 0, attn = 0, norms = 0, router = 0, routed = 0, shared = 0, dense = 0, head = 0;
        foreach (var v in g.Initializers)
        {
            if (v.ConstValue is not { } t) continue;
            long n;
            // Fused MoE layers (pass fuse): the stacked expert weights are fc1 (input 2) and fc2 (input 4 of MoE, 5 of QMoE),
            // a QMoE's packed codes counting as their logical weights.
            if (v.Uses.FirstOrDefault(u => u.Node.OpType is "MoE" or "QMoE" && u.Node.Domain == "com.microsoft") is { Node: not null } f)
            {
                if (f.Index != 2 && f.Index != (f.Node.OpType == "MoE" ? 4 : 5)) continue;
                n = f.Node.OpType == "QMoE" ? t.ElementCount * 8 / f.Node.GetInt("expert_weight_bits", 4) : t.ElementCount;
            }
            else if (v.Name.StartsWith('/')) continue;
            // Quantized linears count their logical K x N weights (codes), not their packed bytes, scales or zero points.
            else if (v.Uses.FirstOrDefault(u => u.Node.OpType == "MatMulNBits") is { Node: not null } q)
            {
                if (q.Index != 1) continue;
                n = q.Node.GetInt("K", 0) * q.Node.GetInt("N", 0);
            }
            else if (t.DataType.IsFloatingPoint()) n = t.ElementCount;
            else continue;
            total += n;
            switch (NodeRoles.Of(v.Uses.Count > 0 ? v.Uses[0].Node.Name : ""))
            {
                case NodeRole.Norm: norms += n; break;
                case NodeRole.Embedding: embed += n; break;
                case NodeRole.LmHead: head += n; break;
                case NodeRole.Attention: attn += n; break;
                case NodeRole.Router: router += n; break;
                case NodeRole.RoutedExpert: routed += n; break;
                case NodeRole.SharedExpert or NodeRole.SharedExpertGate: shared += n; break;
                default: dense += n; break;
            }
        }
        return new ParameterCounts(total, embed, attn, norms, router, routed, shared, dense, head);
    }
}
