using System.CommandLine;
using OnnxMoe.Checkpoints;
using OnnxMoe.Compiler.Analysis;
using OnnxMoe.Compiler.Calibration;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Ir;
using OnnxMoe.Lowering;
using OnnxMoe.Onnx;
using OnnxMoe.Passes;

namespace OnnxMoe.Cli.Commands;

internal static class AnalyzeCommand
{
    public static Command Create()
    {
        var source = new Argument<string>("model") { Description = "A Hugging Face checkpoint folder, or a model folder written by `onnxmoe compile`." };
        var calibration = new Option<string?>("--calibration") { Description = "Calibration text file (default: models/data/kjv-calibration.txt)." };
        var samples = new Option<int>("--samples") { Description = "Calibration samples (the paper: 128).", DefaultValueFactory = _ => 128 };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per sample (the paper: 2048). A short text gives as many whole samples as it holds.", DefaultValueFactory = _ => 2048 };
        var recipes = new Option<string[]>("--recipe") { Description = "Recipes to evaluate (names or files; default: every built-in recipe)." };
        var output = new Option<string?>("--output", "-o") { Description = "Folder for analysis.json and the SVG charts (blocks.svg, layers.svg, experts.svg)." };
        var json = new Option<bool>("--json") { Description = "Print the analysis as JSON instead of tables and bar charts." };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var calibrationMemory = CommonOptions.CalibrationMemory();
        var command = new Command("analyze", "Score a model on calibration text with ONNX Runtime: per-block and per-MoE-layer cosine similarities (input vs output), " +
            "per-expert routing weight; shows which blocks, layers and experts each recipe would remove.\n" +
            "Example: onnxmoe analyze models/tiny-mixtral --samples 16 --seq-len 256 -o out/analysis")
        {
            source, calibration, samples, seqLen, recipes, output, json, device, threads, calibrationMemory,
        };
        command.SetAction(parse =>
        {
            string dir = CommonOptions.ExistingFolder(parse.GetValue(source)!, "model");
            var settings = new CalibrationSettings(parse.GetValue(samples), parse.GetValue(seqLen), parse.GetValue(calibration) ?? CalibrationSettings.DefaultText).Validate();
            Model model;
            CheckpointFolder? checkpoint = null;
            if (File.Exists(Path.Combine(dir, "model.onnx"))) model = OnnxReader.Read(Path.Combine(dir, "model.onnx"));
            else
            {
                checkpoint = CheckpointFolder.Open(dir);
                model = DecoderLowering.Lower(checkpoint).Model;
            }
            using (checkpoint)
            {
                long? budget = CommonOptions.ParseSize(parse.GetValue(calibrationMemory), "--calibration-memory");
                var session = CommonOptions.SessionConfig(parse.GetValue(device)!, parse.GetValue(threads));
                var corpus = CalibrationCorpus.FromSettings(dir, settings);
                var names = parse.GetValue(recipes) is { Length: > 0 } r ? r : null;
                var report = Progress.Run("calibration", advance =>
                {
                    using var calibration = CalibrationServices.Create(() => corpus, settings, new RegionRunnerOptions
                    {
                        Session = session, MemoryBudget = budget ?? 0, MemoryBudgetExplicit = budget is not null,
                        Progress = p => advance(p.SamplesDone, p.SamplesTotal, p.Stage), Log = Console.Error.WriteLine,
                    });
                    var scores = calibration.Scores;
                    var analysis = Analyzer.Run(model, scores, PassRegistry.CreateDefault(), names);
                    if (scores.Windows is { } w) Console.Error.WriteLine($"scored on {w.Count} samples x {w.Length} tokens from {corpus.Source}");
                    return analysis;
                });
                if (parse.GetValue(json)) Console.WriteLine(report.ToJson());
                else
                {
                    foreach (var table in report.Tables()) Console.WriteLine(Format(table));
                    foreach (var kind in AnalysisReport.ChartKinds)
                    {
                        Console.WriteLine($"{kind}:");
                        Console.WriteLine(report.BarChart(kind));
                    }
                }
                if (parse.GetValue(output) is { } outDir)
                {
                    Directory.CreateDirectory(outDir);
                    File.WriteAllText(Path.Combine(outDir, "analysis.json"), report.ToJson() + "\n");
                    foreach (var kind in AnalysisReport.ChartKinds) File.WriteAllText(Path.Combine(outDir, $"{kind}.svg"), report.ToSvg(kind));
                    Console.Error.WriteLine($"wrote {outDir}/analysis.json and {string.Join(", ", AnalysisReport.ChartKinds.Select(k => k + ".svg"))}");
                }
            }
            return 0;
        });
        return command;
    }

    private static string Format(Table table)
    {
        var rows = new List<IReadOnlyList<string>> { table.Header };
        rows.AddRange(table.Rows);
        var widths = Enumerable.Range(0, table.Header.Count).Select(c => rows.Max(r => c < r.Count ? r[c].Length : 0)).ToArray();
        var sb = new System.Text.StringBuilder();
        sb.Append(table.Title).Append('\n');
        foreach (var row in rows)
            sb.Append("  ").Append(string.Join("  ", row.Select((cell, c) => cell.PadRight(widths[c])))).Append('\n');
        return sb.ToString();
    }
}
