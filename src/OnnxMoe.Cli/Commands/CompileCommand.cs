using System.CommandLine;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Ir;
using OnnxMoe.Passes;

namespace OnnxMoe.Cli.Commands;

internal static class CompileCommand
{
    public static Command Create()
    {
        var checkpoint = new Argument<string>("checkpoint-dir") { Description = "Hugging Face checkpoint folder: config.json, model.safetensors (or sharded with model.safetensors.index.json), tokenizer.json." };
        var output = new Option<string>("--output", "-o") { Description = "Output model folder (model.onnx, model.onnx.data, genai_config.json, tokenizer files, compile_report.json); built aside and renamed into place when complete.", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "Weight and activation precision of the artifact: fp32 (default, best on CPU) or fp16.", DefaultValueFactory = _ => "fp32" };
        var pipeline = new Option<string?>("--pipeline") { Description = "Pass pipeline to apply after lowering, e.g. \"drop-blocks{n=25%},quantize-int4{block-size=128},cleanup\" (see `onnxmoe passes`)." };
        var recipe = new Option<string?>("--recipe") { Description = "A built-in recipe name (see `onnxmoe recipes`) or a recipe .yaml file: a pipeline plus calibration settings." };
        var calibration = new Option<string?>("--calibration") { Description = "Calibration text file for passes that score the model (default: the recipe's, else models/data/kjv-calibration.txt)." };
        var samples = new Option<int?>("--samples") { Description = "Calibration samples (default: the recipe's, else 128 as in the paper)." };
        var seqLen = new Option<int?>("--seq-len") { Description = "Tokens per calibration sample (default: the recipe's, else 2048 as in the paper)." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an existing output folder (only once the new one is complete)." };
        var printIr = new Option<bool>("--print-ir-after-change") { Description = "Print the IR text after every pass that changed the model (stderr)." };
        var verifyOrt = new Option<bool>("--verify-ort") { Description = "After every pass that changed the model, also check that ONNX Runtime loads it (writes a temporary copy: slow for big models)." };
        var command = new Command("compile", "Compile a Hugging Face MoE checkpoint (Mixtral, DeepSeek-MoE, Qwen2-MoE, Qwen3-MoE, OLMoE) into an ONNX Runtime model folder, " +
            "optionally compressed by a pass pipeline or recipe. Weights stream from the checkpoint; memory stays bounded.\n" +
            "Examples:\n  onnxmoe compile models/tiny-mixtral -o out/tiny-mixtral\n  onnxmoe compile models/tiny-mixtral -o out/tiny-mixtral-bd --recipe block-drop-8\n" +
            "  onnxmoe compile ckpt -o out --pipeline \"drop-blocks{blocks=3,7},quantize-int4{method=rtn,block-size=32}\"")
        {
            checkpoint, output, dtype, pipeline, recipe, calibration, samples, seqLen, overwrite, printIr, verifyOrt,
        };
        command.SetAction(parse =>
        {
            string source = CommonOptions.ExistingFolder(parse.GetValue(checkpoint)!, "checkpoint");
            var registry = PassRegistry.CreateDefault();
            string? pipelineText = parse.GetValue(pipeline), recipeName = parse.GetValue(recipe);
            if (pipelineText != null && recipeName != null) throw new UserErrorException("--pipeline and --recipe exclude each other: a recipe is a pipeline plus calibration settings");
            Recipe? chosen = recipeName != null ? RecipeLoader.Resolve(recipeName, registry) : null;
            PassPipeline passes = chosen?.Pipeline ?? PassPipeline.Parse(pipelineText ?? "", registry);
            _ = passes.CreatePasses().ToList();   // option errors before any lowering or calibration work
            var calib = chosen?.Calibration ?? new CalibrationSettings();
            calib = calib with
            {
                Samples = parse.GetValue(samples) ?? calib.Samples,
                SeqLen = parse.GetValue(seqLen) ?? calib.SeqLen,
                Text = parse.GetValue(calibration) ?? calib.Text,
            };
            CommonOptions.CheckCalibration(calib);

            bool print = parse.GetValue(printIr), ortCheck = parse.GetValue(verifyOrt);
            PipelineRunReport? passReport = null;
            var options = new CompileOptions
            {
                WeightType = CompileOptions.ParseDType(parse.GetValue(dtype)!),
                Overwrite = parse.GetValue(overwrite),
                Pipeline = passes.ToString(),
                Transform = passes.Steps.Count == 0 ? null : lowered =>
                {
                    var manager = new PassManager
                    {
                        AfterChange = print ? (m, record) => Console.Error.Write($"// IR after {record.Invocation}\n{Ir.Printing.IrPrinter.Print(m)}") : null,
                        ExternalCheck = ortCheck ? OrtLoadCheck : null,
                    };
                    var context = new PassContext { Log = message => Console.Error.WriteLine($"  {message}") };
                    var calibrationProgress = new StageReporter("calibration");
                    var awqProgress = new StageReporter("awq");
                    CalibrationServices.Register(context, source, calib,
                        p => calibrationProgress.Report(p.Stage, p.SamplesDone, p.SamplesTotal),
                        p => awqProgress.Report(p.Stage, p.Done, p.Total));
                    passReport = manager.Run(lowered.Model, passes, context);
                },
            };
            var job = new CompileJob(source, parse.GetValue(output)!, options);
            Console.Error.WriteLine($"compiling {job.CheckpointDirectory} -> {job.OutputDirectory}" + (passes.Steps.Count > 0 ? $" with {passes}" : ""));
            var report = job.Run();
            if (passReport is { Counters.Count: > 0 })
                Console.Error.WriteLine("pass counters: " + string.Join(", ", passReport.Counters.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}")));
            Console.WriteLine($"{report.Family} ({report.Architecture}), {report.NumLayers} layers ({report.MoeLayers} MoE), {report.Parameters.Total:N0} parameters, " +
                $"{report.Bytes.Model + report.Bytes.Data:N0} bytes written in {report.Timings.TotalSeconds:F1} s, peak RSS {Runtime.PeakMemory.PeakResidentBytes / (1 << 20):N0} MiB -> {job.OutputDirectory}");
            return 0;
        });
        return command;
    }

    /// <summary>Opens an ORT session on the model (written to a temporary folder): a pass that leaves a graph ORT rejects fails here.</summary>
    private static void OrtLoadCheck(Model model, string passName)
    {
        try
        {
            using var session = new Compiler.InMemorySession(model, name: "verify");
        }
        catch (Runtime.OrtException e)
        {
            throw new InvalidOperationException($"after pass {passName}, ONNX Runtime rejects the model: {e.Message}", e);
        }
    }
}
