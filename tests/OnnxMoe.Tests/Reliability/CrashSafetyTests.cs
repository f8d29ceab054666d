using System.Diagnostics;
using OnnxMoe.Compiler.Verify;
using OnnxMoe.Tests.Cli;
using Xunit.Abstractions;

namespace OnnxMoe.Tests.Reliability;

/// <summary>
/// compile's output folder under SIGKILL, concurrent compiles and a full disk, with the real CLI in child processes:
/// the target holds nothing (fresh) or a complete artifact, old or new, at every instant; the next compile removes what
/// killed runs left; a second compile of a locked folder fails in one line; a full disk is one line and leaves nothing.
/// </summary>
[Collection(nameof(CrashSafetyTests))]   // timing-sensitive: not beside each other
public sealed class CrashSafetyTests(ITestOutputHelper log) : IDisposable
{
    private static readonly string Checkpoint = Path.Combine(CliRunner.RepoRoot, "models/tiny-mixtral");
    private readonly TempFolder _tmp = new();

    public void Dispose() => _tmp.Dispose();

    private static Process Start(string output, bool overwrite, string dtype = "fp32", IReadOnlyDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = CliRunner.RepoRoot,
        };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "onnxmoe.dll"), "compile", Checkpoint, "-o", output, "--dtype", dtype })
            psi.ArgumentList.Add(a);
        if (overwrite) psi.ArgumentList.Add("--overwrite");
        psi.Environment["NO_COLOR"] = "1";
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }

    private static (int Exit, string Stderr) Finish(Process p)
    {
        var stderr = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(120_000), "compile did not finish in 2 minutes");
        return (p.ExitCode, stderr.Result);
    }

    private string Compile(string name, string dtype)
    {
        var (exit, stderr) = Finish(Start(_tmp[name], overwrite: false, dtype));
        Assert.True(exit == 0, stderr);
        Assert.True(ModelFolderVerifier.Verify(_tmp[name]).IsClean);
        return _tmp[name];
    }

    private static string[] Leftovers(string parent) =>
        Directory.EnumerateFileSystemEntries(parent).Select(Path.GetFileName).Where(n => n!.StartsWith('.')).Order().ToArray()!;

    [Fact]
    public void Sigkill_at_random_moments_never_leaves_a_partial_or_missing_target_and_the_next_compile_cleans_up()
    {
        // Two different complete artifacts to tell old from new: fp16 (the old one under --overwrite) and fp32 (new).
        var oldPrint = FolderHashes.Of(Compile("ref-old", "fp16"));
        var newPrint = FolderHashes.Of(Compile("ref-new", "fp32"));
        Assert.NotEqual(newPrint, oldPrint);
        string parent = _tmp["trials"], target = Path.Combine(parent, "out");
        Directory.CreateDirectory(parent);
        // Pauses of 150 ms before and after the swap (a test seam) widen the moments around it, which a tiny model otherwise passes in microseconds.
        var env = new Dictionary<string, string> { ["ONNXMOE_TEST_PUBLISH_PAUSE_MS"] = "150" };
        var clock = Stopwatch.StartNew();
        var (exit0, err0) = Finish(Start(target, overwrite: false, env: env));
        double runMs = clock.Elapsed.TotalMilliseconds;
        Assert.True(exit0 == 0, err0);

        var random = new Random(20261201);
        int trials = 0, killed = 0, leftBehind = 0;
        var outcomes = new Dictionary<string, int>();
        var finished = new List<double> { runMs };   // durations of runs not killed: the kill moments follow the machine's speed
        foreach (bool overwrite in new[] { false, true })
            for (int killedHere = 0, i = 0; killedHere < 6 && i < 30; i++)
            {
                if (overwrite)
                {
                    // Start each --overwrite trial from the complete old artifact.
                    if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
                    CopyFolder(_tmp["ref-old"], target);
                }
                else if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
                int delay = (int)(random.NextDouble() * finished.Average() * 1.2);   // a few finish first: the moments span the whole run
                using var p = Start(target, overwrite, env: env);
                bool missingSeen = false, aroundPublish = overwrite && i % 2 == 1;
                var watch = Stopwatch.StartNew();
                // Every other --overwrite trial aims at the publish: its moment counts from when the build folder is complete
                // (compile_report.json written last), over the pause before the swap, the swap, and the removal of the old folder.
                string report = Path.Combine(parent, $".out.tmp-{p.Id}", "compile_report.json");
                bool Waiting() => aroundPublish ? !File.Exists(report) && watch.ElapsedMilliseconds < 60_000 : watch.ElapsedMilliseconds < delay;
                while (!p.HasExited && (Waiting() || (aroundPublish && Restart())))
                    if (!overwrite) Thread.Sleep(1);
                    else if (!Directory.Exists(target)) missingSeen = true;   // polled as fast as it goes: "at every instant"
                bool Restart()
                {
                    aroundPublish = false;
                    delay = random.Next(0, 400);
                    watch.Restart();
                    return true;
                }
                if (!p.HasExited)
                {
                    p.Kill();
                    killed++;
                    killedHere++;
                }
                else if (!(overwrite && i % 2 == 1)) finished.Add(watch.Elapsed.TotalMilliseconds);
                p.WaitForExit();
                trials++;
                Assert.False(missingSeen, $"trial {trials} (--overwrite, kill at {delay} ms): the target was missing for a moment");
                string outcome;
                if (!Directory.Exists(target))
                {
                    Assert.False(overwrite, $"trial {trials} (--overwrite, kill at {delay} ms): no target left");
                    outcome = "nothing";
                }
                else
                {
                    var print = FolderHashes.Of(target);
                    outcome = print.SequenceEqual(newPrint) ? "new" : print.SequenceEqual(oldPrint) ? "old" : "MIXED";
                    Assert.True(outcome != "MIXED", $"trial {trials} (kill at {delay} ms): target holds neither the old nor the new artifact: " +
                        string.Join(", ", print.Keys));
                    Assert.True(ModelFolderVerifier.Verify(target).IsClean);
                }
                if (Leftovers(parent).Length > 0) leftBehind++;
                string key = (overwrite ? "overwrite:" : "fresh:") + outcome;
                outcomes[key] = outcomes.GetValueOrDefault(key) + 1;
            }
        log.WriteLine($"{trials} trials ({killed} killed, compile alone {runMs:F0} ms), {leftBehind} left hidden folders behind; outcomes: " +
            string.Join(", ", outcomes.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key}={kv.Value}")));
        Assert.True(killed >= 12, $"only {killed} of {trials} compiles were killed before they finished");

        // The next compile removes every leftover of the killed ones, and leaves only its folder.
        var (exit, stderr) = Finish(Start(target, overwrite: true));
        Assert.True(exit == 0, stderr);
        Assert.Empty(Leftovers(parent));
        Assert.Equal(newPrint, FolderHashes.Of(target));
    }

    [Fact]
    public void The_two_rename_fallback_leaves_a_moment_without_target_which_the_watch_sees()
    {
        // The control for the watch above: forcing the old two-rename publish (a test seam), the target disappears for a while.
        CopyFolder(Compile("ref", "fp16"), _tmp["out"]);
        foreach (bool exchange in new[] { true, false })
        {
            var env = new Dictionary<string, string> { ["ONNXMOE_TEST_PUBLISH_PAUSE_MS"] = "300" };
            if (!exchange) env["ONNXMOE_TEST_NO_EXCHANGE"] = "1";
            using var p = Start(_tmp["out"], overwrite: true, env: env);
            bool missingSeen = false;
            var stderr = p.StandardError.ReadToEndAsync();
            while (!p.HasExited) if (!Directory.Exists(_tmp["out"])) missingSeen = true;
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, stderr.Result);
            Assert.Equal(!exchange, missingSeen);
        }
    }

    [Fact]
    public void A_second_compile_into_a_folder_being_written_fails_in_one_line_naming_the_folder_and_the_holder()
    {
        string target = _tmp["out"];
        using var first = Start(target, overwrite: true, env: new Dictionary<string, string> { ["ONNXMOE_TEST_PUBLISH_PAUSE_MS"] = "2000" });
        string building = Path.Combine(_tmp.Path, $".out.tmp-{first.Id}");
        var watch = Stopwatch.StartNew();
        while (!Directory.Exists(building) && watch.Elapsed < TimeSpan.FromSeconds(60) && !first.HasExited) Thread.Sleep(5);
        Assert.True(Directory.Exists(building), "the first compile never created its build folder");

        var (exit2, err2) = Finish(Start(target, overwrite: true));
        Assert.Equal(1, exit2);
        var errors = err2.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.StartsWith("onnxmoe:")).ToList();
        Assert.Single(errors);
        Assert.Contains(target, errors[0]);
        Assert.Contains($"pid {first.Id}", errors[0]);

        var (exit1, err1) = Finish(first);
        Assert.True(exit1 == 0, err1);
        Assert.True(ModelFolderVerifier.Verify(target).IsClean);
        Assert.Empty(Leftovers(_tmp.Path));
    }

    [Fact]
    public void Compiles_started_together_into_one_folder_end_with_one_complete_artifact()
    {
        string target = _tmp["out"];
        int won = 0, refused = 0;
        for (int round = 0; round < 3; round++)
        {
            var both = new[] { Start(target, overwrite: true), Start(target, overwrite: true) };
            foreach (var p in both)
            {
                var (exit, stderr) = Finish(p);
                p.Dispose();
                if (exit == 0) won++;
                else
                {
                    Assert.True(exit == 1 && stderr.Contains("another compile"), stderr);
                    refused++;
                }
            }
            Assert.True(ModelFolderVerifier.Verify(target).IsClean);
            Assert.Empty(Leftovers(_tmp.Path));
        }
        log.WriteLine($"{won} compiles won, {refused} were refused by the lock");
        Assert.True(won >= 3);
    }

    [Fact]
    public void A_full_disk_is_one_line_and_leaves_nothing()
    {
        string mount = _tmp["small"];
        Directory.CreateDirectory(mount);
        // A 1 MiB tmpfs (the tiny model needs 16 MB); mounting needs root, so elsewhere this test only says it could not run.
        var m = Process.Start(new ProcessStartInfo("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mount])
            { RedirectStandardError = true, RedirectStandardOutput = true })!;
        m.WaitForExit();
        if (m.ExitCode != 0)
        {
            log.WriteLine($"skipped: cannot mount a tmpfs here ({m.StandardError.ReadToEnd().Trim()})");
            return;
        }
        try
        {
            var (exit, stderr) = Finish(Start(Path.Combine(mount, "out"), overwrite: false));
            Assert.Equal(1, exit);
            var errors = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.StartsWith("onnxmoe:")).ToList();
            Assert.Single(errors);
            Assert.Contains("no space left", errors[0]);
            Assert.Contains(Path.Combine(mount, "out"), errors[0]);
            Assert.Empty(Directory.EnumerateFileSystemEntries(mount));
        }
        finally
        {
            Process.Start("umount", [mount]).WaitForExit();
        }
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.EnumerateFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }
}
