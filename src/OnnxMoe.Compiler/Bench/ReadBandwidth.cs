using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;

namespace OnnxMoe.Compiler.Bench;

/// <summary>
/// The machine's streaming read bandwidth as this process sees it: <see cref="Threads"/> threads each sum their share of
/// a buffer much larger than the caches (System.Numerics vectors, four accumulators), best pass of several.
/// </summary>
/// <param name="BytesPerSecond">Best pass: buffer bytes / wall time from the start signal until the last thread is done.</param>
public sealed record ReadBandwidth(double BytesPerSecond, long BufferBytes, int Threads, int Passes)
{
    /// <summary>One GiB: well beyond the last-level cache of the machines this runs on.</summary>
    public const long DefaultBufferBytes = 1L << 30;

    /// <summary>Measures with a buffer of <paramref name="bufferBytes"/> (allocated, filled, and freed again before returning).</summary>
    public static unsafe ReadBandwidth Measure(long bufferBytes, int threads, int passes = 5)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bufferBytes, 1L << 20);
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(passes, 1);
        int vectorBytes = Vector<ulong>.Count * sizeof(ulong);
        long chunk = bufferBytes / threads / (4 * vectorBytes) * (4 * vectorBytes);   // whole unrolled steps per thread
        if (chunk == 0) throw new ArgumentException($"buffer of {bufferBytes} bytes is too small for {threads} threads");
        long used = chunk * threads;
        var buffer = (byte*)NativeMemory.AlignedAlloc((nuint)used, 4096);
        try
        {
            // Written pages are backed by memory; a never-written buffer would read the kernel's shared zero page.
            for (long off = 0; off < used; off += int.MaxValue / 2)
                new Span<byte>(buffer + off, (int)Math.Min(int.MaxValue / 2, used - off)).Fill(0x5a);
            double best = 0;
            ulong check = 0;
            for (int pass = 0; pass < passes; pass++)
            {
                var sums = new ulong[threads];
                using var start = new Barrier(threads + 1);
                var workers = new Thread[threads];
                for (int t = 0; t < threads; t++)
                {
                    int index = t;
                    workers[t] = new Thread(() =>
                    {
                        start.SignalAndWait();
                        sums[index] = Sum(buffer + index * chunk, chunk);
                    }) { IsBackground = true };
                    workers[t].Start();
                }
                start.SignalAndWait();
                var clock = Stopwatch.StartNew();
                foreach (var w in workers) w.Join();
                double seconds = clock.Elapsed.TotalSeconds;
                best = Math.Max(best, used / seconds);
                foreach (var s in sums) check = unchecked(check + s);
            }
            // Every byte is 0x5a: the sums prove the reads happened (and keep them from being optimized away).
            ulong perPass = unchecked((ulong)(used / sizeof(ulong)) * 0x5a5a5a5a5a5a5a5aUL);
            if (check != unchecked(perPass * (ulong)passes)) throw new InvalidOperationException("bandwidth probe read back wrong sums");
            return new ReadBandwidth(best, used, threads, passes);
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    private static unsafe ulong Sum(byte* start, long bytes)
    {
        Vector<ulong> a = default, b = default, c = default, d = default;
        int step = Vector<ulong>.Count;
        var p = (ulong*)start;
        var end = (ulong*)(start + bytes);
        for (; p < end; p += 4 * step)
        {
            a += Vector.Load(p);
            b += Vector.Load(p + step);
            c += Vector.Load(p + 2 * step);
            d += Vector.Load(p + 3 * step);
        }
        return Vector.Sum(a + b + c + d);
    }
}
