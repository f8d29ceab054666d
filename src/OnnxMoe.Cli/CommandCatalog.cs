using System.CommandLine;

namespace OnnxMoe.Cli;

/// <summary>Every top-level command, in the order `onnxmoe --help` lists them.</summary>
internal static class CommandCatalog
{
    public static IEnumerable<Command> All() => [];
}
