using Google.Protobuf;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;


namespace OnnxMoe.Onnx;

public enum ExternalDataMode
{
    /// <summary>All tensor bytes inside the .onnx file (the file must stay under 2 GiB).</summary>
    Embed,
    /// <summary>Initializers of at least <see cref="OnnxWriteOptions.ExternalThreshold"/> bytes go to one <c>&lt;name&gt;.onnx.data</c> file.</summary>
    External,
}

/// <summary>Writer settings. Defaults: external data, 1 KiB threshold, 4096-byte offsets for tensors of 64 KiB and more.</summary>
public sealed record OnnxWriteOptions
{
    public ExternalDataMode ExternalData { get; init; } = ExternalDataMode.External;
    /// <summary>Initializers of at least this many bytes are written to the data file (External mode).</summary>
    public long ExternalThreshold { get; init; } = 1024;
    /// <summary>Tensors of at least this many bytes start at a multiple of <see cref="PageAlignment"/> (so a runtime can map them); smaller ones at a multiple of 16.</summary>
    public long PageAlignThreshold { get; init; } = 64 * 1024;
    public int PageAlignment { get; init; } = 4096;
    /// <summary>Data file name, relative to the model's folder; default <c>&lt;model file name&gt;.data</c>.</summary>
    public string? DataFileName { get; init; }
    /// <summary>Called after each tensor streamed to the data file with (bytes written, bytes in all).</summary>
    public Action<long, long>? Progress { get; init; }

    public static OnnxWriteOptions Embedded { get; } = new() { ExternalData = ExternalDataMode.Embed };
}

/// <summary>A model serialized for an in-memory session (<see cref="OnnxWriter.ToMemory"/>): the ModelProto bytes and the
/// image of the external data file they refer to (null when every tensor is embedded). Owns the image; dispose it
/// once the session that reads it is gone.</summary>
public sealed class InMemoryModel(byte[] proto, string dataFileName, NativeBuffer? data) : IDisposable
{
    public const string DefaultDataFileName = "model.onnx.data";
    public byte[] Proto { get; } = proto;
    public string DataFileName { get; } = dataFileName;
    public NativeBuffer? Data { get; private set; } = data;

    /// <summary>Hands the data image to a new owner (e.g. a session); this object no longer frees it.</summary>
    public NativeBuffer? DetachData()
    {
        var d = Data;
        Data = null;
        return d;
    }

    public void Dispose() => Data?.Dispose();
}

/// <summary>What a write produced. <see cref="DataPath"/> is null when no tensor went external.</summary>
public sealed record OnnxWriteResult(string ModelPath, long ModelBytes, string? DataPath, long DataBytes, int ExternalTensors);

/// <summary>
/// Writes the IR as ONNX. Tensor bytes are streamed from their source (<see cref="Tensor.WriteTo"/>)
/// into the data file, so a model never sits in memory whole; the ModelProto holds only small
/// embedded tensors. Output is atomic (temporary names in the target folder, renamed at the end;
/// nothing is left behind on failure) and deterministic (same IR, same bytes).
/// </summary>
public static class OnnxWriter
{
    /// <summary>Embedded tensor bytes allowed in one ModelProto: 2 GiB less 16 MiB for the graph itself.</summary>
    public const long MaxEmbeddedBytes = int.MaxValue - (16L << 20);

    public static OnnxWriteResult Write(Model model, string path, OnnxWriteOptions? options = null)
    {
        options ??= new OnnxWriteOptions();
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir)) throw new OnnxFormatException($"{path}: output folder {dir} does not exist");
        string dataName = options.DataFileName ?? Path.GetFileName(full) + ".data";
        if (Path.IsPathRooted(dataName) || dataName.Contains('/') || dataName.Contains('\\'))
            throw new ArgumentException($"data file name '{dataName}' must be a plain file name (it is stored relative to the model)");
        string dataFull = Path.Combine(dir, dataName);

        long threshold = options.ExternalData == ExternalDataMode.External ? options.ExternalThreshold : long.MaxValue;
        long embedded = EmbeddedBytes(model, threshold);
        if (embedded > MaxEmbeddedBytes)
            throw new OnnxFormatException($"{path}: {embedded} bytes of tensor data would be embedded in the model, over the 2 GiB protobuf limit; " +
                "write it with external data" + (options.ExternalData == ExternalDataMode.External ? " (lower the external-data threshold)" : ""));
        var plan = options.ExternalData == ExternalDataMode.External ? new ExternalPlan(dataName, options) : null;
        var proto = new ModelEncoder(plan).EncodeModel(model);

        string tmpModel = TempName(full), tmpData = TempName(dataFull);
        bool dataRenamed = false;
        try
        {
            long dataBytes = 0;
            if (plan is { Entries.Count: > 0 }) dataBytes = WriteData(plan, tmpData, options.Progress);
            long modelBytes;
            using (var fs = new FileStream(tmpModel, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                proto.WriteTo(fs);
                modelBytes = fs.Length;
            }
            if (plan is { Entries.Count: > 0 })
            {
                File.Move(tmpData, dataFull, overwrite: true);
                dataRenamed = true;
            }
            File.Move(tmpModel, full, overwrite: true);
            return new OnnxWriteResult(full, modelBytes, dataRenamed ? dataFull : null, dataBytes, plan?.Entries.Count ?? 0);
        }
        catch
        {
            TryDelete(tmpModel);
            TryDelete(tmpData);
            if (dataRenamed) TryDelete(dataFull);
            throw;
        }
    }

    /// <summary>Serializes a model with all data embedded (for in-memory sessions and tests); throws over 2 GiB.</summary>
    public static byte[] ToBytes(Model model)
    {
        long embedded = EmbeddedBytes(model, long.MaxValue);
        if (embedded > MaxEmbeddedBytes)
            throw new OnnxFormatException($"model holds {embedded} bytes of tensor data, over the 2 GiB protobuf limit of an embedded model; write it to a file with external data");
        return new ModelEncoder(null).EncodeModel(model).ToByteArray();
    }

    /// <summary>
    /// Serializes a model for an in-memory ORT session: the ModelProto (small tensors embedded) and, for the main
    /// graph's initializers of at least <see cref="OnnxWriteOptions.ExternalThreshold"/> bytes, one aligned native
    /// image of the external data file <see cref="InMemoryModel.DataFileName"/> that the proto refers to. Tensors
    /// stream into the image one at a time; nothing touches the disk.
    /// </summary>
    public static InMemoryModel ToMemory(Model model, OnnxWriteOptions? options = null)
    {
        options ??= new OnnxWriteOptions();
        string dataName = options.DataFileName ?? InMemoryModel.DefaultDataFileName;
        var plan = new ExternalPlan(dataName, options) { TopLevelOnly = true };
        var proto = new ModelEncoder(plan).EncodeModel(model);
        long embedded = proto.CalculateSize();
        if (embedded > MaxEmbeddedBytes)
            throw new OnnxFormatException($"model proto would be {embedded} bytes, over the 2 GiB protobuf limit; lower the external-data threshold");
        NativeBuffer? data = null;
        if (plan.Entries.Count > 0)
        {
            data = new NativeBuffer(plan.Size, options.PageAlignment);
            try
            {
                WriteData(plan, data.AsStream());
            }
            catch
            {
                data.Dispose();
                throw;
            }
        }
        return new InMemoryModel(proto.ToByteArray(), dataName, data);
    }

    /// <summary>Tensor bytes that stay inside the ModelProto when initializers of at least <paramref name="threshold"/> bytes go external. Reads no data.</summary>
    private static long EmbeddedBytes(Model model, long threshold)
    {
        long total = 0;
        void VisitGraph(Graph g)
        {
            foreach (var v in g.Initializers)
                if (v.ConstValue is { } t && (t is StringTensor || t.ByteLength < threshold)) total += t.ByteLength;
            foreach (var s in g.SparseInitializers) total += s.Tensor.Values.ByteLength + s.Tensor.Indices.ByteLength;
            foreach (var n in g.Nodes) VisitNode(n);
        }
        void VisitNode(Node n)
        {
            foreach (var a in n.Attributes)
                switch (a.Value)
                {
                    case Tensor t: total += t.ByteLength; break;
                    case Tensor[] ts: total += ts.Sum(t => t.ByteLength); break;
                    case SparseTensor s: total += s.Values.ByteLength + s.Indices.ByteLength; break;
                    case Graph sub: VisitGraph(sub); break;
                    case Graph[] subs: foreach (var sub in subs) VisitGraph(sub); break;
                }
        }
        VisitGraph(model.Graph);
        foreach (var f in model.Functions) foreach (var n in f.Body.Nodes) VisitNode(n);
        return total;
    }

    /// <summary>Writes one tensor as a serialized TensorProto (.pb), atomically. <paramref name="name"/> overrides the tensor's name.</summary>
    public static void WriteTensor(Tensor tensor, string path, string? name = null)
    {
        var proto = new ModelEncoder(null).EncodeTensor(tensor, name ?? tensor.Name, initializer: false);
        string full = Path.GetFullPath(path);
        string tmp = TempName(full);
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16)) proto.WriteTo(fs);
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            TryDelete(tmp);
            throw;
        }
    }

    private static long WriteData(ExternalPlan plan, string tmpPath, Action<long, long>? progress)
    {
        using var fs = new FileStream(tmpPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
        long written = WriteData(plan, fs, progress);
        fs.Flush();
        return written;
    }

    /// <summary>Streams the plan's tensors into <paramref name="target"/> at their offsets (zero padding between); returns the bytes written.</summary>
    private static long WriteData(ExternalPlan plan, Stream target, Action<long, long>? progress = null)
    {
        var counter = new CountingStream(target);
        var zeros = new byte[plan.Entries.Count == 0 ? 0 : 4096];
        foreach (var (tensor, offset) in plan.Entries)
        {
            while (counter.Position < offset)
                counter.Write(zeros, 0, (int)Math.Min(zeros.Length, offset - counter.Position));
            long before = counter.Position;
            tensor.WriteTo(counter);
            long written = counter.Position - before;
            if (written != tensor.ByteLength)
                throw new InvalidOperationException($"tensor {tensor.Name} ({tensor}) wrote {written} bytes, expected {tensor.ByteLength}");
            progress?.Invoke(counter.Position, plan.Size);
        }
        return counter.Position;
    }

    private static string TempName(string finalPath) =>
        Path.Combine(Path.GetDirectoryName(finalPath)!, $".{Path.GetFileName(finalPath)}.{Guid.NewGuid():N}.tmp");

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>Write-only pass-through that counts bytes (tensors stream into it; it never buffers).</summary>
    private sealed class CountingStream(Stream inner) : Stream
    {
        private long _position;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _position;
        public override long Position { get => _position; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) { inner.Write(buffer, offset, count); _position += count; }
        public override void Write(ReadOnlySpan<byte> buffer) { inner.Write(buffer); _position += buffer.Length; }
    }
}
