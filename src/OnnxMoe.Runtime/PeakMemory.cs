using System.Globalization;

namespace OnnxMoe.Runtime;

/// <summary>Resident memory of this process, in bytes, from /proc/self/status (Linux).</summary>
/// <param name="ResidentBytes">VmRSS: resident set size now.</param>
/// <param name="PeakResidentBytes">VmHWM: the highest resident set size since start (or the last <see cref="PeakMemory.TryResetPeak"/>).</param>
public readonly record struct MemoryUsage(long ResidentBytes, long PeakResidentBytes);

/// <summary>Reads the process's current and peak resident memory (for benchmarks and memory tests).</summary>
public static class PeakMemory
{
    /// <summary>Current and peak resident set size; throws <see cref="PlatformNotSupportedException"/> off Linux.</summary>
    public static MemoryUsage Read()
    {
        if (!File.Exists("/proc/self/status")) throw new PlatformNotSupportedException("reading resident memory needs Linux's /proc/self/status");
        long rss = -1, hwm = -1;
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = ParseKilobytes(line);
            else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = ParseKilobytes(line);
        }
        if (rss < 0 || hwm < 0) throw new InvalidDataException("/proc/self/status has no VmRSS/VmHWM lines");
        return new MemoryUsage(rss, hwm);
    }

    /// <summary>VmRSS in bytes.</summary>
    public static long ResidentBytes => Read().ResidentBytes;

    /// <summary>VmHWM in bytes.</summary>
    public static long PeakResidentBytes => Read().PeakResidentBytes;

    /// <summary>Resets VmHWM to the current RSS (writes 5 to /proc/self/clear_refs); false where the kernel refuses.</summary>
    public static bool TryResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    // Lines look like "VmHWM:\t  123456 kB".
    private static long ParseKilobytes(string line)
    {
        var parts = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length < 3 || parts[2] != "kB" || !long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out long kb))
            throw new InvalidDataException($"unexpected /proc/self/status line '{line}'");
        return kb * 1024;
    }
}
