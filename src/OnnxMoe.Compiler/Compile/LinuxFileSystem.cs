using System.Runtime.InteropServices;

namespace OnnxMoe.Compiler.Compile;

/// <summary>The one place onnxmoe calls libc directly: Linux file-system calls .NET does not expose.</summary>
internal static partial class LinuxFileSystem
{
    private const int AtFdCwd = -100;
    private const uint RenameExchange = 2;
    private const int ENOSYS = 38, EINVAL = 22, EXDEV = 18, ENOTSUP = 95;

    /// <summary>Swaps two existing paths in one atomic step (renameat2 with RENAME_EXCHANGE): at no instant is either missing.
    /// Returns false when the kernel or file system cannot (not Linux, no renameat2, a file system without exchange);
    /// other failures throw <see cref="IOException"/>.</summary>
    public static bool TryExchange(string a, string b)
    {
        if (!OperatingSystem.IsLinux()) return false;
        int rc;
        try { rc = renameat2(AtFdCwd, a, AtFdCwd, b, RenameExchange); }
        catch (EntryPointNotFoundException) { return false; }   // a libc older than glibc 2.28
        if (rc == 0) return true;
        int errno = Marshal.GetLastPInvokeError();
        if (errno is ENOSYS or EINVAL or ENOTSUP) return false;
        throw new IOException($"cannot swap {b} with {a}: {Marshal.GetPInvokeErrorMessage(errno)}", errno);
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int renameat2(int olddirfd, string oldpath, int newdirfd, string newpath, uint flags);

    /// <summary>Whether an I/O error means the disk (or the user's quota) is full: ENOSPC/EDQUOT on Unix (.NET keeps the errno in
    /// HResult), ERROR_DISK_FULL/ERROR_HANDLE_DISK_FULL on Windows.</summary>
    public static bool IsDiskFull(IOException e) =>
        OperatingSystem.IsWindows() ? (e.HResult & 0xFFFF) is 112 or 39
        : e.HResult is 28 || (OperatingSystem.IsLinux() ? e.HResult == 122 : e.HResult == 69);

    /// <summary>Whether another process holds a <see cref="FileShare.None"/> lock on a file we tried to open (EWOULDBLOCK from flock
    /// on Unix, ERROR_SHARING_VIOLATION on Windows).</summary>
    public static bool IsLockedByAnother(IOException e) =>
        OperatingSystem.IsWindows() ? (e.HResult & 0xFFFF) is 32 or 33 : e.HResult is 11 or 35 && e.GetType() == typeof(IOException);

    /// <summary>Whether the process with this id is running (Linux: /proc; elsewhere assumed running).</summary>
    public static bool IsAlive(int pid) => !OperatingSystem.IsLinux() || Directory.Exists($"/proc/{pid}");

    /// <summary>Whether the open file <paramref name="handle"/> has been unlinked from its path (Linux /proc/self/fd; false elsewhere).</summary>
    public static bool IsUnlinked(Microsoft.Win32.SafeHandles.SafeFileHandle handle)
    {
        if (!OperatingSystem.IsLinux()) return false;
        var target = new FileInfo($"/proc/self/fd/{handle.DangerousGetHandle()}").LinkTarget;
        return target is null || target.EndsWith(" (deleted)", StringComparison.Ordinal);
    }
}
