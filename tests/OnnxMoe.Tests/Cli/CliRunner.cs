using System.Diagnostics;

namespace OnnxMoe.Tests.Cli;

/// <summary>Runs the real `onnxmoe` CLI (the onnxmoe.dll copied next to the tests) in a child process.</summary>
internal static class CliRunner
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public override string ToString() => $"exit {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
    }

    public static string RepoRoot { get; } = FindRepoRoot();

    public static Result Run(params string[] args) => RunIn(RepoRoot, args);

    public static Result RunIn(string workingDirectory, params string[] args) => RunWith(workingDirectory, null, args);

    /// <summary>Runs the CLI with extra environment variables (a null value removes the variable).</summary>
    public static Result RunWith(string workingDirectory, IReadOnlyDictionary<string, string?>? environment, params string[] args)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "onnxmoe.dll");
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        if (environment != null)
            foreach (var (key, value) in environment)
                if (value is null) psi.Environment.Remove(key);
                else psi.Environment[key] = value;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"onnxmoe {string.Join(" ", args)} did not finish in 5 minutes");
        }
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "OnnxMoe.sln"))) return dir.FullName;
        throw new InvalidOperationException("cannot find the repository root (OnnxMoe.sln) above " + AppContext.BaseDirectory);
    }
}
