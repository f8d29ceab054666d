using System.CommandLine;
using OnnxMoe.Cli.Commands;

namespace OnnxMoe.Cli;

/// <summary>Every top-level command, in the order `onnxmoe --help` lists them.</summary>
internal static class CommandCatalog
{
    public static IEnumerable<Command> All() =>
    [
        InspectCommand.Create(),
        ConvertCommand.Create(),
        RunCommand.Create(),
        GenerateCommand.Create(),
        EvalCommand.Create(),
        VersionCommand.Create(),
    ];
}
