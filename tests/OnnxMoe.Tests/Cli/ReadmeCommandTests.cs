using System.Text.RegularExpressions;

namespace OnnxMoe.Tests.Cli;

/// <summary>Every `onnxmoe ...` line of the README's usage block runs, in order, in a scratch folder
/// that sees the repository's models/, and succeeds (diff: exit 1 = "different" is its success).</summary>
public sealed class ReadmeCommandTests
{
    [Fact]
    public void ReadmeUsageCommandsRun()
    {
        var commands = ReadmeCommands().ToList();
        Assert.True(commands.Count >= 10, $"found only {commands.Count} onnxmoe commands in README.md");
        using var tmp = new TempFolder();
        Directory.CreateSymbolicLink(tmp["models"], Path.Combine(CliRunner.RepoRoot, "models"));
        foreach (var args in commands)
        {
            var r = CliRunner.RunIn(tmp.Path, args);
            int expected = args[0] == "diff" ? 1 : 0;
            Assert.True(r.ExitCode == expected, $"onnxmoe {string.Join(" ", args)}\n{r}");
        }
    }

    /// <summary>Lines of ```bash blocks that start with "onnxmoe ", split like a shell would (quotes, trailing # comments).</summary>
    internal static IEnumerable<string[]> ReadmeCommands()
    {
        bool inBlock = false;
        foreach (var raw in File.ReadLines(Path.Combine(CliRunner.RepoRoot, "README.md")))
        {
            string line = raw.Trim();
            if (line.StartsWith("```", StringComparison.Ordinal)) { inBlock = !inBlock && line.StartsWith("```bash", StringComparison.Ordinal); continue; }
            if (!inBlock || !line.StartsWith("onnxmoe ", StringComparison.Ordinal)) continue;
            var words = Regex.Matches(line, "\"([^\"]*)\"|(\\S+)").Select(m => m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value).ToList();
            int comment = words.IndexOf("#");
            if (comment < 0) comment = words.FindIndex(w => w.StartsWith('#'));
            if (comment >= 0) words = words[..comment];
            yield return words.Skip(1).ToArray();
        }
    }
}
