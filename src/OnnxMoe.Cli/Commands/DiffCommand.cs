using System.CommandLine;
using OnnxMoe.Compiler.Diff;
using OnnxMoe.Onnx;

namespace OnnxMoe.Cli.Commands;

internal static class DiffCommand
{
    public const int Equal = 0, Different = 1, Trouble = 2;

    public static Command Create()
    {
        var a = new Argument<string>("a") { Description = "The first (old) .onnx file, or a model folder holding model.onnx." };
        var b = new Argument<string>("b") { Description = "The second (new) .onnx file, or a model folder holding model.onnx." };
        var json = new Option<bool>("--json") { Description = "Print the diff as JSON." };
        var command = new Command("diff", "Structural diff of two models: inputs/outputs, nodes by hierarchical name, initializers by name/shape/dtype/content hash, metadata, opsets.\n" +
            "Stable text for snapshot tests. Exit code: 0 equal, 1 different, 2 error (diff's convention).\n" +
            "Example: onnxmoe diff out/base/model.onnx out/block-drop/model.onnx") { a, b, json };
        command.SetAction(parse =>
        {
            try
            {
                var ma = OnnxReader.Read(ModelPath(parse.GetValue(a)!));
                var mb = OnnxReader.Read(ModelPath(parse.GetValue(b)!));
                var diff = ModelDiff.Compute(ma, mb);
                if (parse.GetValue(json)) Console.WriteLine(diff.ToJson());
                else Console.Write(diff.ToText());
                return diff.IsEmpty ? Equal : Different;
            }
            catch (Exception e)
            {
                // diff's own convention: errors are 2, not the CLI's usual 1 (1 means "different").
                ErrorReporter.Report(e);
                return Trouble;
            }
        });
        return command;
    }

    private static string ModelPath(string path)
    {
        if (Directory.Exists(path)) path = Path.Combine(path, "model.onnx");
        return CommonOptions.ExistingFile(path, "model");
    }
}
