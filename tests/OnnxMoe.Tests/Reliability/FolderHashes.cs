using System.Security.Cryptography;

namespace OnnxMoe.Tests.Reliability;

internal static class FolderHashes
{
    /// <summary>Every entry's SHA-256 by name ("&lt;folder&gt;" for a subfolder): two folders hold the same artifact when these are equal.</summary>
    public static SortedDictionary<string, string> Of(string dir) =>
        new(Directory.EnumerateFileSystemEntries(dir).ToDictionary(f => Path.GetFileName(f),
            f => File.Exists(f) ? Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))) : "<folder>"), StringComparer.Ordinal);
}
