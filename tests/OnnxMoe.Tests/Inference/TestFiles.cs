using System.Runtime.CompilerServices;

namespace OnnxMoe.Tests.Inference;

internal static class TestFiles
{
    public static string FixturePath(string name, [CallerFilePath] string self = "") =>
        Path.Combine(Path.GetDirectoryName(self)!, "Fixtures", name);

    /// <summary>The repository root (the folder holding OnnxMoe.sln), found from this source file.</summary>
    public static string RepositoryRoot([CallerFilePath] string self = "")
    {
        var dir = new DirectoryInfo(Path.GetDirectoryName(self)!);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "OnnxMoe.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("repository root not found");
    }
}
