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

    public static Option<string?> CalibrationMemory() => new("--calibration-memory")
    {
        Description = "Memory calibration may use: one decoder block's weights resident at a time, a batch of activations, and the hidden " +
                      "states between blocks (beyond the budget they spill to a temporary file), e.g. 2GiB, 512MiB (default: half of the " +
                      "machine's or container's memory). A block that does not fit is an error naming the size it needs.",
    };

    /// <summary>A size such as 4GiB, 512MiB, 1.5GB or a byte count; null stays null.</summary>
    public static long? ParseSize(string? text, string option)
    {
        if (text is null) return null;
        string t = text.Trim();
        (string suffix, long unit)[] units = [("GiB", 1L << 30), ("MiB", 1L << 20), ("KiB", 1L << 10), ("GB", 1_000_000_000), ("MB", 1_000_000), ("B", 1)];
        foreach (var (suffix, unit) in units)
            if (t.EndsWith(suffix, StringComparison.OrdinalIgnoreCase) &&
                double.TryParse(t[..^suffix.Length], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) &&
                v > 0 && v * unit < long.MaxValue / 2)
                return (long)(v * unit);
        if (long.TryParse(t, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out long raw) && raw > 0) return raw;
        throw new UserErrorException($"{option} '{text}': expected a size like 4GiB, 512MiB or a byte count");
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
