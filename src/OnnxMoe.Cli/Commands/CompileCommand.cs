using System.CommandLine;
using OnnxMoe.Compiler.Compile;

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
        var fuse = new Option<string>("--fuse")
        {
            Description = "on (default): end the pipeline with pass `fuse` (ONNX Runtime's fused MoE/QMoE, GroupQueryAttention and SkipSimplifiedLayerNormalization ops, " +
                          "measured faster on CPU; genai_config.json then shares the KV buffer); off: standard ONNX ops only.",
            DefaultValueFactory = _ => "on",
        };
        fuse.AcceptOnlyFromAmong("on", "off");
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an existing output folder (only once the new one is complete)." };
        var printIr = new Option<bool>("--print-ir-after-change") { Description = "Print the IR text after every pass that changed the model (stderr)." };
        var verifyOrt = new Option<bool>("--verify-ort") { Description = "After every pass that changed the model, also check that ONNX Runtime loads it (an in-memory session; slow for big models)." };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Print per-step detail (each AWQ scale group, each selection round) besides the progress display." };
        var json = new Option<bool>("--json") { Description = "Print only compile_report.json's contents on stdout (no progress display)." };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var calibrationMemory = CommonOptions.CalibrationMemory();
        var command = new Command("compile", "Compile a Hugging Face MoE checkpoint (Mixtral, DeepSeek-MoE, Qwen2-MoE, Qwen3-MoE, OLMoE) into an ONNX Runtime model folder, " +
            "optionally compressed by a pass pipeline or recipe. Weights stream from the checkpoint; memory stays bounded. " +
            "On a terminal a live display shows each stage (lowering, every pass with its calibration, writing) with bars, elapsed time and ETA; " +
            "in a pipe or CI, a few plain lines.\n" +
            "Examples:\n  onnxmoe compile models/tiny-mixtral -o out/tiny-mixtral\n  onnxmoe compile models/tiny-mixtral -o out/tiny-mixtral-bd-awq --recipe block-drop-awq\n" +
            "  onnxmoe compile ckpt -o out --pipeline \"drop-blocks{blocks=3,7},quantize-int4{method=rtn,block-size=32}\"")
        {
            checkpoint, output, dtype, pipeline, recipe, calibration, samples, seqLen, fuse, overwrite, printIr, verifyOrt, verbose, json, device, threads, calibrationMemory,
        };
        command.SetAction(parse =>
        {
            bool print = parse.GetValue(printIr), asJson = parse.GetValue(json);
            var request = new CompileRequest
            {
                Checkpoint = parse.GetValue(checkpoint)!,
                Output = parse.GetValue(output)!,
                Pipeline = parse.GetValue(pipeline),
                Recipe = parse.GetValue(recipe),
                Samples = parse.GetValue(samples),
                SeqLen = parse.GetValue(seqLen),
                CalibrationText = parse.GetValue(calibration),
                WeightType = CompileRequest.ParseDType(parse.GetValue(dtype)!),
                Overwrite = parse.GetValue(overwrite),
                Fuse = parse.GetValue(fuse) == "on",
                Session = CommonOptions.SessionConfig(parse.GetValue(device)!, parse.GetValue(threads)),
                CalibrationMemory = CommonOptions.ParseSize(parse.GetValue(calibrationMemory), "--calibration-memory"),
                VerifyOrt = parse.GetValue(verifyOrt),
                AfterChange = print ? (m, record) => Console.Error.Write($"// IR after {record.Invocation}\n{Ir.Printing.IrPrinter.Print(m)}") : null,
            };
            var job = new CompileJob(request);   // option errors before the first progress line
            if (asJson)
            {
                Console.WriteLine(job.Run().ToJson());
                return 0;
            }
            Console.Error.WriteLine($"compiling {job.CheckpointDirectory} -> {job.OutputDirectory}" + (job.Pipeline.Steps.Count > 0 ? $" with {job.Pipeline}" : ""));
            var report = Progress.RunCompile(parse.GetValue(verbose), sink => job.WithProgress(sink).Run());
            Console.WriteLine($"{report.Family} ({report.Architecture}), {report.NumLayers} layers ({report.MoeLayers} MoE), {report.Parameters.Total:N0} parameters, " +
                $"{report.Bytes.Model + report.Bytes.Data:N0} bytes written in {report.Timings.TotalSeconds:F1} s, peak RSS {Runtime.PeakMemory.PeakResidentBytes / (1 << 20):N0} MiB -> {job.OutputDirectory}");
            return 0;
        });
        return command;
    }
}
