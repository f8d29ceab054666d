using System.Runtime.CompilerServices;
using System.Text;
using DiffPlex;

namespace OnnxMoe.Tests.Snapshots;

/// <summary>
/// Golden-text assertions against checked-in files in <c>tests/OnnxMoe.Tests/Snapshots/__snapshots__</c>
/// (the source tree, not bin/). A mismatch writes <c>&lt;name&gt;.received.txt</c> beside the snapshot and
/// fails with a unified diff; <c>ONNXMOE_UPDATE_SNAPSHOTS=1</c> accepts the received text instead.
/// </summary>
public static class Snapshot
{
    public const string UpdateVariable = "ONNXMOE_UPDATE_SNAPSHOTS";

    private static readonly Lazy<SnapshotStore> Default = new(() =>
        new SnapshotStore(Path.Combine(SourceDirectory(), "__snapshots__"), Environment.GetEnvironmentVariable(UpdateVariable) == "1"));

    /// <summary>Asserts that <paramref name="actual"/> equals snapshot <paramref name="name"/> (line endings normalised).</summary>
    public static void Match(string actual, string name) => Default.Value.Match(actual, name);

    /// <summary>This file's folder: from the compiler's record of the source path, else found by walking up from bin/.</summary>
    private static string SourceDirectory([CallerFilePath] string thisFile = "")
    {
        var dir = Path.GetDirectoryName(thisFile);
        if (dir != null && File.Exists(Path.Combine(dir, "Snapshot.cs"))) return dir;
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            var candidate = Path.Combine(d.FullName, "tests", "OnnxMoe.Tests", "Snapshots");
            if (File.Exists(Path.Combine(candidate, "Snapshot.cs"))) return candidate;
            if (File.Exists(Path.Combine(d.FullName, "OnnxMoe.Tests.csproj"))) return Path.Combine(d.FullName, "Snapshots");
        }
        throw new InvalidOperationException($"cannot find tests/OnnxMoe.Tests/Snapshots above {AppContext.BaseDirectory}");
    }
}

/// <summary>Snapshots in one folder; <see cref="Snapshot"/> uses the checked-in one, tests of the helper use a temporary one.</summary>
public sealed class SnapshotStore(string directory, bool update)
{
    public string Directory { get; } = directory;
    public bool Update { get; } = update;

    public string PathOf(string name) => Path.Combine(Directory, name + ".txt");
    public string ReceivedPathOf(string name) => Path.Combine(Directory, name + ".received.txt");

    public void Match(string actual, string name)
    {
        if (name.Length == 0 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.') || name.EndsWith(".received", StringComparison.Ordinal))
            throw new ArgumentException($"snapshot name '{name}' must be letters, digits, '-', '_' or '.'");
        actual = Normalise(actual);
        var path = PathOf(name);
        var received = ReceivedPathOf(name);
        string? expected = File.Exists(path) ? Normalise(File.ReadAllText(path)) : null;
        if (expected == actual)
        {
            File.Delete(received);
            return;
        }
        if (Update)
        {
            System.IO.Directory.CreateDirectory(Directory);
            WriteAtomically(path, actual);
            File.Delete(received);
            return;
        }
        System.IO.Directory.CreateDirectory(Directory);
        WriteAtomically(received, actual);
        var message = expected == null
            ? $"snapshot {name} does not exist yet: wrote {received}\n(review it, then rename it to {Path.GetFileName(path)} or rerun with {Snapshot.UpdateVariable}=1)"
            : $"snapshot {name} differs: wrote {received}\n(accept with {Snapshot.UpdateVariable}=1)\n{UnifiedDiff(expected, actual, Path.GetFileName(path), Path.GetFileName(received))}";
        throw new SnapshotMismatchException(message);
    }

    private static string Normalise(string s) => s.ReplaceLineEndings("\n");

    private static void WriteAtomically(string path, string text)
    {
        var tmp = path + ".tmp";
        File.WriteAllText(tmp, text, new UTF8Encoding(false));
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>A unified diff (3 lines of context) of two texts, line by line.</summary>
    public static string UnifiedDiff(string expected, string actual, string expectedLabel, string actualLabel, int context = 3)
    {
        var result = new Differ().CreateLineDiffs(expected.Replace("\r", ""), actual.Replace("\r", ""), ignoreWhitespace: false);
        var a = result.PiecesOld;
        var b = result.PiecesNew;
        var blocks = result.DiffBlocks;
        var sb = new StringBuilder();
        sb.Append("--- ").Append(expectedLabel).Append('\n');
        sb.Append("+++ ").Append(actualLabel).Append('\n');
        int i = 0;
        while (i < blocks.Count)
        {
            // Merge blocks whose context would overlap into one hunk.
            int j = i;
            while (j + 1 < blocks.Count && blocks[j + 1].DeleteStartA - (blocks[j].DeleteStartA + blocks[j].DeleteCountA) <= 2 * context) j++;
            int startA = Math.Max(0, blocks[i].DeleteStartA - context);
            int startB = Math.Max(0, blocks[i].InsertStartB - (blocks[i].DeleteStartA - startA));
            int endA = Math.Min(a.Length, blocks[j].DeleteStartA + blocks[j].DeleteCountA + context);
            int endB = Math.Min(b.Length, blocks[j].InsertStartB + blocks[j].InsertCountB + (endA - (blocks[j].DeleteStartA + blocks[j].DeleteCountA)));
            sb.Append($"@@ -{startA + 1},{endA - startA} +{startB + 1},{endB - startB} @@\n");
            int pa = startA;
            for (int k = i; k <= j; k++)
            {
                var blk = blocks[k];
                for (; pa < blk.DeleteStartA; pa++) sb.Append(' ').Append(a[pa]).Append('\n');
                for (int d = 0; d < blk.DeleteCountA; d++) sb.Append('-').Append(a[blk.DeleteStartA + d]).Append('\n');
                for (int n = 0; n < blk.InsertCountB; n++) sb.Append('+').Append(b[blk.InsertStartB + n]).Append('\n');
                pa = blk.DeleteStartA + blk.DeleteCountA;
            }
            for (; pa < endA; pa++) sb.Append(' ').Append(a[pa]).Append('\n');
            i = j + 1;
        }
        return sb.ToString();
    }
}

public sealed class SnapshotMismatchException(string message) : Xunit.Sdk.XunitException(message);
