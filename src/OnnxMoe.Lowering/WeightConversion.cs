using System.Buffers;
using System.Runtime.InteropServices;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Lowering;

/// <summary>
/// Checkpoint weights as artifact initializers. Conversions (dtype change, [out,in] to [in,out]
/// transpose) are <see cref="LazyTensor"/>s run when the writer streams that tensor, so only one
/// converted tensor is in memory at a time; unchanged tensors are passed through as-is.
/// </summary>
public static class WeightConversion
{
    /// <summary><paramref name="source"/> in element type <paramref name="target"/> (same shape).</summary>
    public static Tensor Convert(Tensor source, DataType target)
    {
        if (source.DataType == target) return source;
        CheckFloat(source, target);
        return new LazyTensor(target, source.Shape,
            () => Materialize(target.ByteCount(source.ElementCount), s => WriteConverted(source, target, s), source.Name),
            s => WriteConverted(source, target, s)) { Name = source.Name };
    }

    /// <summary>A 2-D [out, in] linear weight as the [in, out] MatMul operand in <paramref name="target"/>.</summary>
    public static Tensor TransposeLinear(Tensor source, DataType target)
    {
        if (source.Shape.Length != 2) throw new ArgumentException($"linear weight {source.Name} has rank {source.Shape.Length}, expected 2");
        CheckFloat(source, target);
        int rows = checked((int)source.Shape[0]), cols = checked((int)source.Shape[1]);
        return new LazyTensor(target, [cols, rows],
            () => Materialize(target.ByteCount((long)rows * cols), s => WriteTransposed(source, rows, cols, target, s), source.Name),
            s => WriteTransposed(source, rows, cols, target, s)) { Name = source.Name };
    }

    /// <summary>Several tensors concatenated along axis 0 (after conversion), computed lazily.</summary>
    public static Tensor ConcatRows(IReadOnlyList<Tensor> parts, DataType target)
    {
        foreach (var p in parts) CheckFloat(p, target);
        return LazyTensor.ConcatRows(parts.Select(p => Convert(p, target)).ToList());
    }

    /// <summary>Output bytes of a streamed conversion in one new array (for <see cref="Tensor.GetBytes"/> callers).</summary>
    private static byte[] Materialize(long length, Action<Stream> write, string? name)
    {
        if (length > Array.MaxLength) throw new InvalidOperationException($"tensor {name} is {length} bytes: too large for one array, stream it with WriteTo");
        var bytes = GC.AllocateUninitializedArray<byte>((int)length);
        using var ms = new MemoryStream(bytes, writable: true);
        write(ms);
        if (ms.Position != length) throw new InvalidOperationException($"tensor {name}: conversion produced {ms.Position} bytes, expected {length}");
        return bytes;
    }

    /// <summary>Output chunk of the streamed conversions (bytes); small enough to stay cache- and pool-friendly.</summary>
    private const int ChunkBytes = 4 << 20;

    /// <summary>Element-wise conversion, streamed chunk by chunk: file tensors are read in chunks, never whole.
    /// Each converted chunk is written in the background while the next one is read and converted.</summary>
    private static void WriteConverted(Tensor source, DataType target, Stream destination)
    {
        DataType from = source.DataType;
        if (from == target) { source.WriteTo(destination); return; }
        int inSize = from.BitWidth() / 8, outSize = target.BitWidth() / 8;
        long n = source.ElementCount;
        int chunk = (int)Math.Min(ChunkBytes / Math.Max(inSize, outSize), Math.Max(n, 1));
        var pool = ArrayPool<byte>.Shared;
        byte[][] outBufs = [pool.Rent(chunk * outSize), pool.Rent(chunk * outSize)];
        var file = source as FileTensor;
        byte[]? inBuf = file != null ? pool.Rent(chunk * inSize) : null;
        var writer = new WriteBehind(destination);
        try
        {
            ReadOnlySpan<byte> all = file != null ? default : source.GetBytes();
            int cur = 0;
            for (long at = 0; at < n; cur ^= 1)
            {
                int m = (int)Math.Min(chunk, n - at);
                ReadOnlySpan<byte> src;
                if (file != null)
                {
                    var span = inBuf.AsSpan(0, m * inSize);
                    file.File.ReadExactly(file.Offset + at * inSize, span);
                    src = span;
                }
                else src = all.Slice(checked((int)(at * inSize)), m * inSize);
                TensorKernels.Convert(src, from, outBufs[cur].AsSpan(0, m * outSize), target);
                writer.Write(outBufs[cur], m * outSize);      // waits for the write of the other buffer first
                at += m;
            }
            writer.Wait();
        }
        finally
        {
            writer.WaitQuietly();
            foreach (var b in outBufs) pool.Return(b);
            if (inBuf != null) pool.Return(inBuf);
        }
    }

    /// <summary>
    /// [rows, cols] source as its [cols, rows] transpose in <paramref name="target"/>, streamed in bands of output rows:
    /// the source is read once (whole, into reused scratch memory), each band is transposed in the source element
    /// width (cache-blocked, parallel) and converted, then written in the background while the next band is computed.
    /// Memory: the source tensor plus four band buffers of at most 4 MiB.
    /// </summary>
    private static void WriteTransposed(Tensor source, int rows, int cols, DataType target, Stream destination)
    {
        DataType from = source.DataType;
        int inSize = from.BitWidth() / 8, outSize = target.BitWidth() / 8;
        long total = (long)rows * cols;
        if (total == 0) return;
        if (total > int.MaxValue) throw new InvalidOperationException($"linear weight {source.Name} has {total} elements: more than 2^31 per tensor is not supported");
        long rowBytes = (long)rows * Math.Max(inSize, outSize);
        int band = (int)Math.Clamp(ChunkBytes / rowBytes, 1, cols);
        if (band >= 64) band = band / 64 * 64;       // whole tiles per band
        var pool = ArrayPool<byte>.Shared;
        byte[][] tBufs = [pool.Rent(checked(band * rows * inSize)), pool.Rent(checked(band * rows * inSize))];
        byte[][]? oBufs = from == target ? null : [pool.Rent(checked(band * rows * outSize)), pool.Rent(checked(band * rows * outSize))];
        var writer = new WriteBehind(destination);
        try
        {
            using var scratch = SourceBytes(source, total * inSize);
            int cur = 0;
            for (int j0 = 0; j0 < cols; j0 += band, cur ^= 1)
            {
                int k = Math.Min(band, cols - j0);
                var t = tBufs[cur].AsSpan(0, k * rows * inSize);
                switch (inSize)
                {
                    case 2: TensorKernels.TransposeRows(scratch.As<ushort>((int)total), rows, cols, j0, k, MemoryMarshal.Cast<byte, ushort>(t)); break;
                    case 4: TensorKernels.TransposeRows(scratch.As<uint>((int)total), rows, cols, j0, k, MemoryMarshal.Cast<byte, uint>(t)); break;
                    default: TensorKernels.TransposeRows(scratch.As<ulong>((int)total), rows, cols, j0, k, MemoryMarshal.Cast<byte, ulong>(t)); break;
                }
                if (oBufs == null) writer.Write(tBufs[cur], t.Length);
                else
                {
                    TensorKernels.Convert(t, from, oBufs[cur].AsSpan(0, k * rows * outSize), target);
                    writer.Write(oBufs[cur], k * rows * outSize);
                }
            }
            writer.Wait();
        }
        finally
        {
            writer.WaitQuietly();
            foreach (var b in tBufs) pool.Return(b);
            if (oBufs != null) foreach (var b in oBufs) pool.Return(b);
        }
    }

    /// <summary>
    /// One write in flight on the thread pool while the caller fills its other buffer (double buffering). Writes stay
    /// in order and never overlap: each <see cref="Write"/> first waits for the previous one.
    /// </summary>
    private sealed class WriteBehind(Stream destination)
    {
        private Task _pending = Task.CompletedTask;

        public void Write(byte[] buffer, int count)
        {
            Wait();
            _pending = Task.Run(() => destination.Write(buffer, 0, count));
        }

        /// <summary>Waits for the write in flight; rethrows its exception as is.</summary>
        public void Wait() => _pending.GetAwaiter().GetResult();

        /// <summary>For cleanup paths: waits (so buffers are not reused while written) without throwing again.</summary>
        public void WaitQuietly()
        {
            try { _pending.Wait(); } catch (AggregateException) { }
        }
    }

    /// <summary>The raw bytes of <paramref name="source"/>: file tensors are read into reused native scratch memory
    /// (no size limit of managed arrays, freed deterministically); other tensors give their own bytes.</summary>
    private static unsafe SourceView SourceBytes(Tensor source, long length)
    {
        if (source is not FileTensor file) return new SourceView(source.GetBytes(), null);
        var block = NativeScratch.Rent((nuint)length);
        try
        {
            for (long done = 0; done < length;)
            {
                int n = (int)Math.Min(1 << 30, length - done);
                file.File.ReadExactly(file.Offset + done, new Span<byte>(block.Pointer + done, n));
                done += n;
            }
            return new SourceView(default, block);
        }
        catch
        {
            block.Dispose();
            throw;
        }
    }

    private readonly ref struct SourceView(ReadOnlySpan<byte> bytes, NativeScratch? native)
    {
        private readonly ReadOnlySpan<byte> _bytes = bytes;

        /// <summary>The first <paramref name="count"/> elements of width sizeof(T).</summary>
        public unsafe ReadOnlySpan<T> As<T>(int count) where T : unmanaged =>
            native != null ? new ReadOnlySpan<T>(native.Pointer, count) : MemoryMarshal.Cast<byte, T>(_bytes)[..count];

        public void Dispose() => native?.Dispose();
    }

    /// <summary>
    /// Native memory for whole source tensors, reused across tensors: one block (the largest needed so far) is kept
    /// between uses, so a compile holds at most the largest tensor here and pages are not faulted in per tensor.
    /// Concurrent renters get their own blocks.
    /// </summary>
    private sealed unsafe class NativeScratch : IDisposable
    {
        private static readonly Lock Gate = new();
        private static NativeScratch? s_kept;

        private NativeScratch(nuint length)
        {
            Pointer = (byte*)NativeMemory.Alloc(Math.Max(length, 1));
            Length = length;
        }

        public byte* Pointer { get; private set; }
        public nuint Length { get; }

        public static NativeScratch Rent(nuint length)
        {
            lock (Gate)
            {
                if (s_kept != null && s_kept.Length >= length)
                {
                    var k = s_kept;
                    s_kept = null;
                    return k;
                }
            }
            return new NativeScratch(length);
        }

        public void Dispose()
        {
            NativeScratch? free = this;
            lock (Gate)
            {
                if (s_kept == null || s_kept.Length < Length)
                {
                    free = s_kept;
                    s_kept = this;
                }
            }
            if (free != null)
            {
                NativeMemory.Free(free.Pointer);
                free.Pointer = null;
            }
        }
    }

    private static void CheckFloat(Tensor source, DataType target)
    {
        if (source.DataType is not (DataType.Float or DataType.Float16 or DataType.BFloat16 or DataType.Double))
            throw new Checkpoints.CheckpointException($"tensor {source.Name}: element type {source.DataType.Name()} is not a float type");
        if (target is not (DataType.Float or DataType.Float16))
            throw new ArgumentException($"weights can be written as f32 or f16, not {target.Name()}");
    }

    public static byte[] Encode(float[] values, DataType target)
    {
        if (target == DataType.Float) return MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
        var bytes = new byte[values.LongLength * 2];
        System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(values, MemoryMarshal.Cast<byte, Half>(bytes.AsSpan()));
        return bytes;
    }
}
