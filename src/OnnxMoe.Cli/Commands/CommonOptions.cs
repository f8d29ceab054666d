using System.CommandLine;
using OnnxMoe.Ir;
using OnnxMoe.Runtime;

namespace OnnxMoe.Cli.Commands;

/// <summary>Options several commands share, with one definition of their help text and parsing.</summary>
internal static class CommonOptions
{
    public static Option<string> Device() => new("--device")
    {
        Description = "Execution provider: cpu (default) or cuda (needs a build with -p:OrtFlavor=gpu, or ONNXMOE_ORT_LIBRARY naming a CUDA build of ONNX Runtime; never falls back silently).",
        DefaultValueFactory = _ => "cpu",
    };

    public static Option<int> Threads() => new("--threads")
    {
        Description = "ORT intra-op threads (0 = ORT's default: one per core).",
        DefaultValueFactory = _ => 0,
    };

    public static SessionConfig SessionConfig(string device, int threads)
    {
        ExecutionDevice parsed;
        try
        {
            parsed = Runtime.SessionConfig.ParseDevice(device);
        }
        catch (ArgumentException e)
        {
            throw new UserErrorException($"--device: {e.Message}");
        }
        if (threads < 0) throw new UserErrorException($"--threads must be 0 or more, got {threads}");
        return new SessionConfig { Device = parsed, IntraOpThreads = threads };
    }

    public static string ExistingFile(string path, string what)
    {
        if (Directory.Exists(path)) throw new UserErrorException($"{path}: is a folder, expected {what} file");
        if (!File.Exists(path)) throw new UserErrorException($"{path}: no such {what} file");
        return path;
    }

    public static string ExistingFolder(string path, string what)
    {
        if (!Directory.Exists(path)) throw new UserErrorException($"{path}: no such {what} folder");
        return path;
    }
}
