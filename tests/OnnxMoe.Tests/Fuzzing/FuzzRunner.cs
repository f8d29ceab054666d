using System.Diagnostics;
using Xunit.Abstractions;

namespace OnnxMoe.Tests.Fuzzing;

/// <summary>
/// Runs a reader over a seeded corpus of mutated inputs. Every case must succeed or throw one of the
/// reader's documented user-error types (never another type), within a per-case timeout, and leave the
/// case folder as it found it. Failures list the case number, the mutation and the exception, so a case
/// reproduces with the same base seed.
/// </summary>
internal static class FuzzRunner
{
    public static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(30);   // generous: a shared 2-core machine under load runs a case 20x slower
    private const int MaxMessageLines = 3;

    /// <param name="makeCase">builds case <c>i</c> with its <see cref="Mutator"/> inside the case folder; returns what to run.</param>
    public static FuzzStats Run(string reader, int cases, int baseSeed, Type[] allowed, Func<int, Mutator, string, Action> makeCase, ITestOutputHelper? output = null)
    {
        var failures = new List<string>();
        int rejected = 0, ran = 0;
        var sw = Stopwatch.StartNew();
        using var root = new TempFolder();
        for (int i = 0; i < cases && failures.Count < 5; i++)
        {
            string dir = Path.Combine(root.Path, "case");
            Directory.CreateDirectory(dir);
            var mutator = new Mutator(baseSeed + i);
            ran++;
            var run = makeCase(i, mutator, dir);
            var before = Snapshot(dir);
            var task = Task.Run(run);
            bool finished;
            try { finished = task.Wait(CaseTimeout); }
            catch (AggregateException) { finished = true; }
            if (!finished)
            {
                failures.Add($"case {i} ({mutator.Describe}): no result after {CaseTimeout.TotalSeconds} s (hang?)");
                break; // the task still runs; its folder cannot be reused
            }
            if (task.Exception?.InnerException is { } e)
            {
                if (allowed.Any(t => t.IsInstanceOfType(e)))
                {
                    rejected++;
                    // One line; pipeline errors add the text and a caret under the column.
                    if (e.Message.Split('\n').Length > MaxMessageLines) failures.Add($"case {i} ({mutator.Describe}): message of more than {MaxMessageLines} lines: {e.Message}");
                }
                else failures.Add($"case {i} ({mutator.Describe}): {e.GetType().Name}: {e.Message}\n{e.StackTrace}");
            }
            var after = Snapshot(dir);
            if (!after.SetEquals(before))
                failures.Add($"case {i} ({mutator.Describe}): left files behind: {string.Join(", ", after.Except(before))}");
            Directory.Delete(dir, recursive: true);
        }
        var stats = new FuzzStats(reader, ran, rejected, sw.Elapsed);
        output?.WriteLine(stats.ToString());
        Assert.True(failures.Count == 0, $"{reader} fuzzing (base seed {baseSeed}) found {failures.Count} problem(s):\n" + string.Join("\n\n", failures));
        return stats;
    }

    private static HashSet<string> Snapshot(string dir) =>
        Directory.EnumerateFileSystemEntries(dir, "*", SearchOption.AllDirectories).Select(p => Path.GetRelativePath(dir, p)).ToHashSet();
}

internal sealed record FuzzStats(string Reader, int Cases, int Rejected, TimeSpan Elapsed)
{
    public override string ToString() =>
        $"{Reader}: {Cases} cases, {Rejected} rejected as user errors, {Cases - Rejected} accepted, {Elapsed.TotalSeconds:F1} s ({Cases / Math.Max(Elapsed.TotalSeconds, 1e-3):F0} cases/s)";
}
