using System.CommandLine;
using OnnxMoe.Ir.Printing;
using OnnxMoe.Onnx;

namespace OnnxMoe.Cli.Commands;

internal static class InspectCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Path of the .onnx file (external data is found next to it; tensor bytes are not read)." };
        var graph = new Option<bool>("--graph") { Description = "Also print the whole graph in onnxmoe's stable text form (the form `diff` and snapshot tests use)." };
        var json = new Option<bool>("--json") { Description = "Print the summary as JSON (for scripts)." };
        var command = new Command("inspect", "Summarise a model: IR version and opsets, inputs/outputs with types and shapes, operator histogram, parameters and bytes by dtype, external data files.")
        {
            model, graph, json,
        };
        command.SetAction(parse =>
        {
            string path = CommonOptions.ExistingFile(parse.GetValue(model)!, "model");
            var m = OnnxReader.Read(path);
            var summary = ModelSummary.Of(m);
            Console.Write(parse.GetValue(json) ? summary.ToJson() + Environment.NewLine : summary.ToText());
            if (parse.GetValue(graph))
            {
                Console.WriteLine();
                Console.Write(IrPrinter.Print(m));
            }
            return 0;
        });
        return command;
    }
}
