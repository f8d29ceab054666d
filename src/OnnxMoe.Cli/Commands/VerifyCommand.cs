using System.CommandLine;
using OnnxMoe.Compiler.Verify;

namespace OnnxMoe.Cli.Commands;

internal static class VerifyCommand
{
    public static Command Create()
    {
        var folder = new Argument<string>("model-dir") { Description = "A compiled model folder (what `onnxmoe compile` wrote)." };
        var command = new Command("verify", "Check a compiled model folder without running it: model.onnx's structure and types, external data offsets and " +
            "lengths inside model.onnx.data, genai_config.json against the graph's inputs and outputs, the onnxmoe metadata, compile_report.json, " +
            "and the tokenizer files. One line per problem on stderr and exit 1 when any; a one-line summary and exit 0 when clean.\n" +
            "Example: onnxmoe verify out/tiny-mixtral") { folder };
        command.SetAction(parse =>
        {
            var result = ModelFolderVerifier.Verify(parse.GetValue(folder)!);
            foreach (var problem in result.Problems) Console.Error.WriteLine(problem);
            if (result.IsClean) Console.WriteLine(result.Summary);
            else Console.Error.WriteLine(result.Summary);
            return result.IsClean ? 0 : ErrorReporter.UserError;
        });
        return command;
    }
}
