using System.CommandLine;
using System.CommandLine.Parsing;
using OnnxMoe.Ir;

namespace OnnxMoe.Cli;

/// <summary>Entry point. Exit codes: 0 success, 1 user error (one-line message), 2 internal error.</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand(
            "onnxmoe: compiles Mixture-of-Experts checkpoints (Hugging Face safetensors) into small, fast ONNX models " +
            "for ONNX Runtime, with expert trimming (expert/layer/block drop) and 4-bit expert slimming (MatMulNBits, AWQ).");
        foreach (var command in CommandCatalog.All()) root.Subcommands.Add(command);
        try
        {
            var parsed = root.Parse(args);
            // Help and version clear parse errors themselves; any other parse error is a short message, not the whole help.
            if (parsed.Errors.Count > 0 && parsed.Action is not { ClearsParseErrors: true }) return ErrorReporter.ReportParseErrors(parsed);
            return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (Exception e)
        {
            return ErrorReporter.Report(e);
        }
    }
}

/// <summary>Turns exceptions into the CLI's exit codes and one-line messages.</summary>
public static class ErrorReporter
{
    public const int UserError = 1;
    public const int InternalError = 2;

    public static int Report(Exception e)
    {
        if (e is AggregateException { InnerExceptions.Count: 1 } agg) e = agg.InnerExceptions[0];
        if (IsUserError(e))
        {
            Console.Error.WriteLine($"onnxmoe: error: {e.Message}");
            return UserError;
        }
        Console.Error.WriteLine($"onnxmoe: internal error: {e.GetType().Name}: {e.Message}");
        if (Environment.GetEnvironmentVariable("ONNXMOE_DEBUG") == "1") Console.Error.WriteLine(e);
        else Console.Error.WriteLine("onnxmoe: set ONNXMOE_DEBUG=1 for the stack trace");
        return InternalError;
    }

    /// <summary>The parse errors (at most three), one line each, then where to read the usage.</summary>
    public static int ReportParseErrors(ParseResult parsed)
    {
        foreach (var error in parsed.Errors.Take(3))
            Console.Error.WriteLine($"onnxmoe: error: {FriendlyTypes(error.Message).ReplaceLineEndings(" ").Trim()}");
        var names = new List<string>();
        for (var r = (SymbolResult?)parsed.CommandResult; r != null; r = r.Parent)
            if (r is CommandResult { Command: not RootCommand } c) names.Insert(0, c.Command.Name);
        Console.Error.WriteLine($"see onnxmoe {string.Join(" ", names.Append("--help"))}");
        return UserError;
    }

    // System.CommandLine names the CLR type it expected (System.Nullable`1[System.Int32]); say it in words.
    private static string FriendlyTypes(string message) => System.Text.RegularExpressions.Regex.Replace(message,
        @"as expected type '(?:System\.Nullable`1\[)?System\.(\w+)\]?'", m => m.Groups[1].Value switch
        {
            "Int32" or "Int64" => "as an integer",
            "Double" or "Single" => "as a number",
            "Boolean" => "as true or false",
            var other => "as a " + other.ToLowerInvariant(),
        });

    // ORT's own errors are about the model or the environment the user gave, so they count as user errors.
    private static bool IsUserError(Exception e) => e is UserErrorException or Onnx.OnnxFormatException
        or Runtime.OrtException or Runtime.OrtLibraryException
        or FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException or InvalidDataException;
}
