using System.CommandLine;
using System.Reflection;
using OnnxMoe.Runtime;

namespace OnnxMoe.Cli.Commands;

internal static class VersionCommand
{
    public static Command Create()
    {
        var command = new Command("version", "Print the onnxmoe version and the ONNX Runtime library it uses (version and path).");
        command.SetAction(_ =>
        {
            string version = typeof(VersionCommand).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "?";
            Console.WriteLine($"onnxmoe {version}");
            Console.WriteLine($"onnxruntime {OrtRuntime.Version} (binding Microsoft.ML.OnnxRuntime.Managed {OrtRuntime.BindingVersion})");
            Console.WriteLine($"library {OrtRuntime.LibraryPath}");
            Console.WriteLine($"providers {string.Join(", ", OrtRuntime.AvailableProviders)}");
            return 0;
        });
        return command;
    }
}
