using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Ir;
using OnnxMoe.Passes;
using OnnxMoe.Runtime;

namespace OnnxMoe.Compiler.Compile;

/// <summary>
/// Everything one compile needs: the checkpoint, the output folder, what to apply (a pipeline or a recipe),
/// calibration settings, the device calibration runs on, and where progress goes. <see cref="CompileJob.Run(CompileRequest)"/>
/// carries it out end to end; the CLI only fills it in and renders the progress.
/// </summary>
public sealed record CompileRequest
{
    /// <summary>Hugging Face checkpoint folder (config.json, safetensors, tokenizer files).</summary>
    public required string Checkpoint { get; init; }
    /// <summary>Output model folder; built aside and renamed into place when complete.</summary>
    public required string Output { get; init; }
    /// <summary>Pass pipeline text, e.g. "drop-blocks{n=25%},quantize-int4"; excludes <see cref="Recipe"/>.</summary>
    public string? Pipeline { get; init; }
    /// <summary>A built-in recipe name or a recipe .yaml path: a pipeline plus calibration settings; excludes <see cref="Pipeline"/>.</summary>
    public string? Recipe { get; init; }
    /// <summary>Calibration samples; null: the recipe's, else 128 (the paper).</summary>
    public int? Samples { get; init; }
    /// <summary>Tokens per calibration sample; null: the recipe's, else 2048 (the paper).</summary>
    public int? SeqLen { get; init; }
    /// <summary>Calibration text file; null: the recipe's, else the bundled default.</summary>
    public string? CalibrationText { get; init; }
    /// <summary>Weight/activation precision of the artifact: <see cref="DataType.Float"/> (fp32) or <see cref="DataType.Float16"/> (fp16).</summary>
    public DataType WeightType { get; init; } = DataType.Float;
    public int Opset { get; init; } = 21;
    /// <summary>End the pipeline with pass <c>fuse</c> (fused MoE/QMoE and attention ops; measured faster on ORT's CPU provider)
    /// unless it already runs it; false leaves standard ONNX ops.</summary>
    public bool Fuse { get; init; } = true;
    /// <summary>Replace an existing output folder (swapped in only once the new one is complete).</summary>
    public bool Overwrite { get; init; }
    /// <summary>Device and threads of the ORT sessions calibration and AWQ create; null: CPU, ORT's default threads.</summary>
    public SessionConfig? Session { get; init; }
    /// <summary>Bytes calibration may hold (one block's weights, a batch of activations, hidden states in memory; beyond, states spill
    /// to a file); null: half of what the machine (or container) allows.</summary>
    public long? CalibrationMemory { get; init; }
    /// <summary>After every pass that changed the model, check that ONNX Runtime loads it (an in-memory session).</summary>
    public bool VerifyOrt { get; init; }
    /// <summary>Called after every pass that changed the model (e.g. to print the IR).</summary>
    public Action<Model, PassRunRecord>? AfterChange { get; init; }
    /// <summary>Where stages, counts and detail lines go; null: nowhere.</summary>
    public ICompileProgress? Progress { get; init; }
    /// <summary>Pass registry; null: <see cref="PassRegistry.CreateDefault"/>.</summary>
    public PassRegistry? Registry { get; init; }
    /// <summary>Extra services for the passes (tests swap in calibration stand-ins); runs after the defaults are registered.</summary>
    public Action<PassContext>? ConfigureServices { get; init; }
    public CancellationToken CancellationToken { get; init; }

    /// <summary>Parses the CLI's --dtype value (fp32|fp16).</summary>
    public static DataType ParseDType(string text) => text.Trim().ToLowerInvariant() switch
    {
        "fp32" or "f32" or "float32" => DataType.Float,
        "fp16" or "f16" or "float16" => DataType.Float16,
        _ => throw new UserErrorException($"--dtype '{text}' is not supported; use fp32 or fp16"),
    };

    /// <summary>The pipeline and calibration settings this request stands for, every pass constructed (so option errors
    /// surface before any lowering or calibration work) and the calibration settings checked.</summary>
    public (PassPipeline Pipeline, CalibrationSettings Calibration) Resolve()
    {
        var registry = Registry ?? PassRegistry.CreateDefault();
        if (Pipeline != null && Recipe != null) throw new UserErrorException("--pipeline and --recipe exclude each other: a recipe is a pipeline plus calibration settings");
        Recipe? recipe = Recipe != null ? RecipeLoader.Resolve(Recipe, registry) : null;
        var pipeline = recipe?.Pipeline ?? PassPipeline.Parse(Pipeline ?? "", registry);
        if (Fuse && !pipeline.Steps.Any(s => s.Name == "fuse")) pipeline = pipeline.Concat(PassPipeline.Parse("fuse", registry));
        _ = pipeline.CreatePasses().ToList();
        var calibration = recipe?.Calibration ?? new CalibrationSettings();
        calibration = calibration with
        {
            Samples = Samples ?? calibration.Samples,
            SeqLen = SeqLen ?? calibration.SeqLen,
            Text = CalibrationText ?? calibration.Text,
        };
        return (pipeline, calibration.Validate());
    }
}

/// <summary>
/// Receives a compile's progress: stages (lowering, calibration, each pass, writing) with counts, and detail lines
/// (per AWQ group, per selection round) that a display shows only when asked to be verbose. Called on the compiling
/// thread; implementations must be quick.
/// </summary>
public interface ICompileProgress
{
    /// <summary>A stage starts. <paramref name="total"/> is its unit count, 0 when unknown.</summary>
    void StageStarted(string stage, long total, string unit);
    /// <summary>A stage advanced to <paramref name="done"/> of <paramref name="total"/>; <paramref name="detail"/> says what it works on.</summary>
    void StageAdvanced(string stage, long done, long total, string? detail);
    /// <summary>A stage ended; <paramref name="summary"/> says what it did (e.g. "changed, 3 blocks removed").</summary>
    void StageFinished(string stage, string? summary);
    /// <summary>A detail line (verbose output).</summary>
    void Detail(string message);
}
