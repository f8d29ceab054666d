using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxMoe.Checkpoints;
using OnnxMoe.Ir;
using OnnxMoe.Lowering;
using OnnxMoe.Onnx;

namespace OnnxMoe.Compiler.Compile;

/// <summary>Options of a <see cref="CompileJob"/>.</summary>
public sealed record CompileOptions
{
    /// <summary>Weight/activation precision of the artifact: <see cref="DataType.Float"/> (fp32) or <see cref="DataType.Float16"/> (fp16).</summary>
    public DataType WeightType { get; init; } = DataType.Float;
    public int Opset { get; init; } = 21;
    /// <summary>Replace an existing output folder (swapped in only once the new one is complete).</summary>
    public bool Overwrite { get; init; }
    /// <summary>Pass pipeline applied after lowering, recorded in the report ("" = none). The caller runs it through <see cref="Transform"/>.</summary>
    public string Pipeline { get; init; } = "";
    /// <summary>Optional rewrite of the lowered model before it is written (the pass manager hooks in here).</summary>
    public Action<LoweredModel>? Transform { get; init; }

    /// <summary>Parses the CLI's --dtype value (fp32|fp16).</summary>
    public static DataType ParseDType(string text) => text.Trim().ToLowerInvariant() switch
    {
        "fp32" or "f32" or "float32" => DataType.Float,
        "fp16" or "f16" or "float16" => DataType.Float16,
        _ => throw new UserErrorException($"--dtype '{text}' is not supported; use fp32 or fp16"),
    };
}

/// <summary>
/// Compiles a Hugging Face checkpoint folder into an ORT model folder: model.onnx, model.onnx.data,
/// tokenizer files, genai_config.json and compile_report.json. Weights stream from the checkpoint
/// to the data file one tensor at a time. Atomic: everything is built in a hidden sibling folder
/// that is renamed into place at the end; on failure no output folder is left behind.
/// </summary>
public sealed class CompileJob
{
    public const string ModelFileName = "model.onnx";
    public const string DataFileName = "model.onnx.data";
    public const string GenAiConfigFileName = "genai_config.json";
    public const string ReportFileName = "compile_report.json";

    public CompileJob(string checkpointDirectory, string outputDirectory, CompileOptions? options = null)
    {
        CheckpointDirectory = Path.GetFullPath(checkpointDirectory);
        OutputDirectory = Path.GetFullPath(outputDirectory.TrimEnd('/', '\\'));
        Options = options ?? new CompileOptions();
    }

    public string CheckpointDirectory { get; }
    public string OutputDirectory { get; }
    public CompileOptions Options { get; }

    /// <summary>Runs the job; returns the report also written to compile_report.json.</summary>
    public CompileReport Run()
    {
        var total = Stopwatch.StartNew();
        if (Directory.Exists(OutputDirectory) && !Options.Overwrite && Directory.EnumerateFileSystemEntries(OutputDirectory).Any())
            throw new UserErrorException($"{OutputDirectory}: output folder already exists and is not empty (remove it or pass --overwrite)");
        if (File.Exists(OutputDirectory)) throw new UserErrorException($"{OutputDirectory}: output path is a file");
        string parent = Path.GetDirectoryName(OutputDirectory)!;
        Directory.CreateDirectory(parent);
        string temp = Path.Combine(parent, $".{Path.GetFileName(OutputDirectory)}.tmp-{Environment.ProcessId}");
        if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        Directory.CreateDirectory(temp);
        try
        {
            var report = Build(temp, total);
            Publish(temp);
            return report;
        }
        catch
        {
            try { if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true); } catch (IOException) { }
            throw;
        }
    }

    private CompileReport Build(string temp, Stopwatch total)
    {
        var sw = Stopwatch.StartNew();
        using var checkpoint = CheckpointFolder.Open(CheckpointDirectory);
        double openS = sw.Elapsed.TotalSeconds;

        sw.Restart();
        var lowered = DecoderLowering.Lower(checkpoint, new LoweringOptions { WeightType = Options.WeightType, Opset = Options.Opset });
        Options.Transform?.Invoke(lowered);
        double lowerS = sw.Elapsed.TotalSeconds;

        sw.Restart();
        var written = OnnxWriter.Write(lowered.Model, Path.Combine(temp, ModelFileName), new OnnxWriteOptions { DataFileName = DataFileName });
        double writeS = sw.Elapsed.TotalSeconds;

        foreach (var file in checkpoint.TokenizerFiles) File.Copy(file, Path.Combine(temp, Path.GetFileName(file)));
        // Passes rewrite the structure metadata (e.g. drop-blocks renumbers layers), so read it back from the model.
        var structure = Structure.DecoderStructure.TryRead(lowered.Model) ?? lowered.Structure;
        File.WriteAllText(Path.Combine(temp, GenAiConfigFileName), GenAiConfigFactory.From(lowered.Spec, ModelFileName, structure.NumLayers).ToJson() + "\n");

        var report = new CompileReport
        {
            Source = CheckpointDirectory,
            Family = lowered.Spec.Family.Name,
            Architecture = lowered.Spec.Architecture,
            DType = Options.WeightType == DataType.Float16 ? "fp16" : "fp32",
            Opset = Options.Opset,
            Pipeline = Options.Pipeline,
            NumLayers = structure.NumLayers,
            MoeLayers = structure.Blocks.Count(b => b.Ffn?.Kind == Structure.FfnKind.Moe),
            Parameters = ParameterCounts.Of(lowered.Model.Graph),
            Bytes = new ByteCounts(checkpoint.TotalTensorBytes, written.ModelBytes, written.DataBytes),
            TokenizerFiles = checkpoint.TokenizerFiles.Select(Path.GetFileName).ToList()!,
            Timings = new Timings(openS, lowerS, writeS, total.Elapsed.TotalSeconds),
        };
        File.WriteAllText(Path.Combine(temp, ReportFileName), report.ToJson() + "\n");
        return report;
    }

    /// <summary>Renames the finished temp folder into place (replacing an old output only now, when overwriting).</summary>
    private void Publish(string temp)
    {
        if (Directory.Exists(OutputDirectory))
        {
            string old = temp + ".old";
            Directory.Move(OutputDirectory, old);
            Directory.Move(temp, OutputDirectory);
            Directory.Delete(old, recursive: true);
        }
        else Directory.Move(temp, OutputDirectory);
    }
}

/// <summary>compile_report.json. Everything but <see cref="Timings"/> is deterministic.</summary>
public sealed record CompileReport
{
    public required string Source { get; init; }
    public required string Family { get; init; }
    public required string Architecture { get; init; }
    public required string DType { get; init; }
    public required int Opset { get; init; }
    public required string Pipeline { get; init; }
    public required int NumLayers { get; init; }
    public required int MoeLayers { get; init; }
    public required ParameterCounts Parameters { get; init; }
    public required ByteCounts Bytes { get; init; }
    public required List<string> TokenizerFiles { get; init; }
    public required Timings Timings { get; init; }

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
    public string ToJson() => JsonSerializer.Serialize(this, Json);
    public static CompileReport FromJson(string json) => JsonSerializer.Deserialize<CompileReport>(json, Json)!;
}

/// <param name="CheckpointTensors">Bytes of all tensors in the source safetensors files.</param>
/// <param name="Model">Bytes of model.onnx.</param>
/// <param name="Data">Bytes of model.onnx.data.</param>
public sealed record ByteCounts(long CheckpointTensors, long Model, long Data);

public sealed record Timings(double OpenSeconds, double LowerSeconds, double WriteSeconds, double TotalSeconds);

/// <summary>Weight parameters of a lowered graph by role (from node-name prefixes of each weight's first user).</summary>
public sealed record ParameterCounts(long Total, long Embedding, long Attention, long Norms, long Router, long RoutedExperts, long SharedExperts, long DenseMlp, long LmHead)
{
    /// <summary>Counts initializers that are weights (named after checkpoint tensors, not builder constants under "/");
    /// a MatMulNBits weight counts as its K x N logical parameters.</summary>
    public static ParameterCounts Of(Graph g)
    {
        long total = 0, embed = 0, attn = 0, norms = 0, router = 0, routed = 0, shared = 0, dense = 0, head = 0;
        foreach (var v in g.Initializers)
        {
            if (v.Name.StartsWith('/') || v.ConstValue is not { } t) continue;
            long n;
            // Quantized linears count their logical K x N weights (codes), not their packed bytes, scales or zero points.
            if (v.Uses.FirstOrDefault(u => u.Node.OpType == "MatMulNBits") is { Node: not null } q)
            {
                if (q.Index != 1) continue;
                n = q.Node.GetInt("K", 0) * q.Node.GetInt("N", 0);
            }
            else if (t.DataType.IsFloatingPoint()) n = t.ElementCount;
            else continue;
            total += n;
            string user = v.Uses.Count > 0 ? v.Uses[0].Node.Name : "";
            if (user.Contains("layernorm/") || user.Contains("_norm/") || user.StartsWith("/model/norm/")) norms += n;
            else if (user.StartsWith("/model/embed_tokens/")) embed += n;
            else if (user.StartsWith("/lm_head/")) head += n;
            else if (user.Contains("/attn/")) attn += n;
            else if (user.Contains("/moe/router/")) router += n;
            else if (user.Contains("/moe/experts.")) routed += n;
            else if (user.Contains("/moe/shared_expert")) shared += n;
            else dense += n;
        }
        return new ParameterCounts(total, embed, attn, norms, router, routed, shared, dense, head);
    }
}
