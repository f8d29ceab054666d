using System.CommandLine;
using OnnxMoe.Cli.Commands;

namespace OnnxMoe.Cli;

/// <summary>Every top-level command, in the order `onnxmoe --help` lists them.</summary>
internal static class CommandCatalog
{
    public static IEnumerable<Command> All() =>
    [
        CompileCommand.Create(),
        GenerateCommand.Create(),
        EvalCommand.Create(),
        AnalyzeCommand.Create(),
        DiffCommand.Create(),
        VerifyCommand.Create(),
        BenchCommand.Create(),
        ReportCommand.Create(),
        InspectCommand.Create(),
        RecipesCommand.Create(),
        PassesCommand.Create(),
        ConvertCommand.Create(),
        SynthCommand.Create(),
        RunCommand.Create(),
        VersionCommand.Create(),
    ];
}
