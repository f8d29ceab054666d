using OnnxMoe.Ir;

namespace OnnxMoe.Compiler.Compile;

/// <summary>
/// One compile's hold on its output folder, from the first byte to the rename into place. While it lives:
/// <list type="bullet">
/// <item>an advisory lock on <c>.&lt;name&gt;.lock</c> beside the target (an open file with <see cref="FileShare.None"/>, flock on Unix)
/// keeps other compiles of the same target out; a second compile fails at once with one line naming the folder and the holder's pid;</item>
/// <item>the artifact is built in the hidden sibling <see cref="BuildDirectory"/> (<c>.&lt;name&gt;.tmp-&lt;pid&gt;</c>);
/// leftovers of killed compiles of the same target (<c>.&lt;name&gt;.tmp-*</c>) are removed first, as no live compile can own them;</item>
/// <item><see cref="Publish"/> renames it into place: a fresh target appears whole (one rename); an existing one is swapped with the
/// new folder in one atomic step on Linux (renameat2 RENAME_EXCHANGE), so the target path always holds a complete artifact, old or new.</item>
/// </list>
/// Disposing without publishing removes the build folder; disposing always releases the lock (the lock file is removed).
/// Durability against power loss (fsync) is not attempted; a killed process never leaves a partial target.
/// </summary>
public sealed class OutputFolder : IDisposable
{
    private readonly FileStream _lock;
    private bool _published;

    private OutputFolder(string target, string lockPath, FileStream lockStream, string buildDirectory, IReadOnlyList<string> removed)
    {
        Target = target;
        LockPath = lockPath;
        _lock = lockStream;
        BuildDirectory = buildDirectory;
        RemovedLeftovers = removed;
    }

    /// <summary>The output folder (full path).</summary>
    public string Target { get; }
    public string LockPath { get; }
    /// <summary>The empty hidden sibling folder the artifact is built in.</summary>
    public string BuildDirectory { get; }
    /// <summary>Folders of interrupted compiles of this target that were removed when the lock was taken.</summary>
    public IReadOnlyList<string> RemovedLeftovers { get; }

    // Test seams for the kill trials: ONNXMOE_TEST_PUBLISH_PAUSE_MS sleeps at each step of the publish (widening the moments a
    // kill aims at); ONNXMOE_TEST_NO_EXCHANGE=1 forces the two-rename fallback (which the trials must catch leaving no target).
    private static readonly int PauseMs = int.TryParse(Environment.GetEnvironmentVariable("ONNXMOE_TEST_PUBLISH_PAUSE_MS"), out int ms) ? ms : 0;
    private static readonly bool NoExchange = Environment.GetEnvironmentVariable("ONNXMOE_TEST_NO_EXCHANGE") == "1";

    private static void Pause()
    {
        if (PauseMs > 0) Thread.Sleep(PauseMs);
    }

    /// <summary>Takes the target's lock, checks it may be written, removes leftovers of killed compiles and creates the build folder.
    /// Every failure a user can cause (target is a file or a non-empty folder without <paramref name="overwrite"/>, another compile
    /// holds the lock, a read-only or full disk, a parent that is a file) is a <see cref="UserErrorException"/>.</summary>
    public static OutputFolder Begin(string target, bool overwrite)
    {
        target = Path.GetFullPath(target.TrimEnd('/', '\\'));
        string name = Path.GetFileName(target);
        string parent = Path.GetDirectoryName(target) ?? throw new UserErrorException($"{target}: cannot write a model folder at a file-system root");
        if (File.Exists(target)) throw new UserErrorException($"{target}: output path is a file");
        try { Directory.CreateDirectory(parent); }
        catch (IOException e) { throw CannotWrite(target, e); }
        catch (UnauthorizedAccessException e) { throw CannotWrite(target, e); }

        string lockPath = Path.Combine(parent, $".{name}.lock");
        var lockStream = TakeLock(target, lockPath, parent, name);
        try
        {
            if (!overwrite && Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
                throw new UserErrorException($"{target}: output folder already exists and is not empty (remove it or pass --overwrite)");
            var removed = new List<string>();
            foreach (var leftover in BuildFolders(parent, name).Select(b => b.Path).Order(StringComparer.Ordinal))
            {
                Directory.Delete(leftover, recursive: true);
                removed.Add(leftover);
            }
            string build = Path.Combine(parent, $".{name}.tmp-{Environment.ProcessId}");
            Directory.CreateDirectory(build);
            return new OutputFolder(target, lockPath, lockStream, build, removed);
        }
        catch (IOException e)
        {
            Release(lockStream, lockPath);
            throw CannotWrite(target, e);
        }
        catch (Exception)
        {
            Release(lockStream, lockPath);
            throw;
        }
    }

    /// <summary>Puts the finished build folder in place of the target (see the class summary) and deletes the old artifact, if any.</summary>
    public void Publish()
    {
        Pause();
        if (!Directory.Exists(Target))
        {
            Directory.Move(BuildDirectory, Target);
            _published = true;
            return;
        }
        if (!NoExchange && LinuxFileSystem.TryExchange(BuildDirectory, Target))
        {
            // The build path now holds the old artifact; if this process dies while deleting it, the next compile removes the rest.
            _published = true;
            Pause();
            TryDeleteFolder(BuildDirectory);
            return;
        }
        // No atomic exchange here (not Linux, or a file system without it): two renames, with a moment without a target between them.
        string old = BuildDirectory + ".old";
        Directory.Move(Target, old);
        Pause();
        Directory.Move(BuildDirectory, Target);
        _published = true;
        Pause();
        TryDeleteFolder(old);
    }

    /// <summary>Deletes an old artifact once the new one is in place; what cannot be deleted now the next compile removes.</summary>
    private static void TryDeleteFolder(string path)
    {
        try { Directory.Delete(path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>Removes the build folder unless published, and releases the lock.</summary>
    public void Dispose()
    {
        if (!_published)
            try { if (Directory.Exists(BuildDirectory)) Directory.Delete(BuildDirectory, recursive: true); }
            catch (IOException) { }   // the next compile of this target removes it
        Release(_lock, LockPath);
    }

    private static FileStream TakeLock(string target, string lockPath, string parent, string name)
    {
        for (int attempt = 0; ; attempt++)
        {
            FileStream stream;
            try
            {
                stream = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.None);
            }
            catch (IOException e) when (LinuxFileSystem.IsLockedByAnother(e))
            {
                throw new UserErrorException($"{target}: another compile ({Holder(parent, name)}) is writing this output folder; " +
                    "wait for it to finish or choose another --output");
            }
            catch (IOException e) { throw CannotWrite(target, e); }
            catch (UnauthorizedAccessException e) { throw CannotWrite(target, e); }
            // The holder we waited on may have removed the file while we opened it: our lock is then on a file no one else sees.
            if (!LinuxFileSystem.IsUnlinked(stream.SafeFileHandle)) return stream;
            stream.Dispose();
            if (attempt == 10) throw new UserErrorException($"{target}: cannot take the lock {lockPath} (it keeps being replaced)");
        }
    }

    /// <summary>"pid N" of the live compile building this target (from its build folder's name), else "another process".</summary>
    private static string Holder(string parent, string name)
    {
        foreach (var (_, pid) in BuildFolders(parent, name))
            if (pid != Environment.ProcessId && LinuxFileSystem.IsAlive(pid)) return $"pid {pid}";
        return "another process";
    }

    /// <summary>Build folders of compiles of this target (<c>.&lt;name&gt;.tmp-&lt;pid&gt;</c>, and <c>.old</c> of the two-rename publish),
    /// not those of a target that merely starts with the same name.</summary>
    private static IEnumerable<(string Path, int Pid)> BuildFolders(string parent, string name)
    {
        string prefix = $".{name}.tmp-";
        foreach (var dir in Directory.EnumerateDirectories(parent, prefix + "*"))
        {
            string suffix = System.IO.Path.GetFileName(dir)[prefix.Length..];
            if (suffix.EndsWith(".old", StringComparison.Ordinal)) suffix = suffix[..^4];
            if (suffix.Length > 0 && suffix.All(char.IsAsciiDigit) && int.TryParse(suffix, out int pid)) yield return (dir, pid);
        }
    }

    private static void Release(FileStream stream, string lockPath)
    {
        // Unlink while still holding the lock (Unix), so a waiter that opened the old file notices (IsUnlinked) and retries.
        if (!OperatingSystem.IsWindows()) TryDelete(lockPath);
        stream.Dispose();
        if (OperatingSystem.IsWindows()) TryDelete(lockPath);
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private static UserErrorException CannotWrite(string target, Exception e) =>
        e is IOException io && LinuxFileSystem.IsDiskFull(io)
            ? new UserErrorException($"{target}: no space left on the device; nothing was written")
            : new UserErrorException($"{target}: cannot write the output folder ({e.Message})");
}
