using System.Buffers.Binary;
using System.Text.Json;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Checkpoints;

/// <summary>
/// One opened .safetensors file. Opening reads and validates only the header; tensors are
/// <see cref="FileTensor"/>s over one shared handle and read nothing until used. Owns the handle:
/// dispose after the last tensor has been read (the tensors keep no other reference alive).
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    /// <summary>Header size cap, as in the reference implementation.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly SharedFile _file;
    private readonly Dictionary<string, FileTensor> _tensors;

    private SafetensorsFile(SharedFile file, Dictionary<string, FileTensor> tensors, List<string> order,
        IReadOnlyDictionary<string, string> metadata, long dataStart)
    {
        _file = file;
        _tensors = tensors;
        TensorNames = order;
        Metadata = metadata;
        DataStart = dataStart;
    }

    public string Path => _file.Path;
    /// <summary>Absolute offset of the first data byte (8 + header length).</summary>
    public long DataStart { get; }
    /// <summary>Tensor names in data order (ascending offset).</summary>
    public IReadOnlyList<string> TensorNames { get; }
    /// <summary>The optional "__metadata__" string map.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    public bool Contains(string name) => _tensors.ContainsKey(name);

    public FileTensor this[string name] => _tensors.TryGetValue(name, out var t) ? t
        : throw new CheckpointException($"{Path}: no tensor named '{name}'");

    public bool TryGetTensor(string name, out FileTensor tensor) => _tensors.TryGetValue(name, out tensor!);

    /// <summary>Opens and validates <paramref name="path"/>; every violation is a <see cref="CheckpointException"/> naming the file and tensor.</summary>
    public static SafetensorsFile Open(string path)
    {
        SharedFile file;
        try { file = new SharedFile(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"{path}: cannot open safetensors file: {e.Message}", e);
        }
        try { return Parse(file); }
        catch { file.Dispose(); throw; }
    }

    private static SafetensorsFile Parse(SharedFile file)
    {
        string p = file.Path;
        if (file.Length < 8) throw new CheckpointException($"{p}: not a safetensors file: {file.Length} bytes, the 8-byte header length is missing");
        Span<byte> lenBytes = stackalloc byte[8];
        file.ReadExactly(0, lenBytes);
        ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
        if (headerLen > MaxHeaderBytes) throw new CheckpointException($"{p}: safetensors header claims {headerLen} bytes, over the {MaxHeaderBytes}-byte cap (corrupt or not a safetensors file)");
        if ((long)headerLen > file.Length - 8) throw new CheckpointException($"{p}: safetensors header claims {headerLen} bytes but the file has only {file.Length - 8} after the length (truncated)");
        var header = new byte[headerLen];
        file.ReadExactly(8, header);
        long dataStart = 8 + (long)headerLen;
        long dataLength = file.Length - dataStart;

        var doc = JsonText.Parse(header, default, problem => new CheckpointException($"{p}: safetensors header is {problem} (corrupt or not a safetensors file)"));

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CheckpointException($"{p}: safetensors header is not a JSON object");
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var entries = new List<(string Name, DataType Type, long[] Shape, long Begin, long End)>();
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw new CheckpointException($"{p}: __metadata__ is not an object");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String) throw new CheckpointException($"{p}: __metadata__ entry '{m.Name}' is not a string");
                        metadata[m.Name] = m.Value.GetString()!;
                    }
                    continue;
                }
                entries.Add(ParseEntry(p, prop));
            }

            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var e in entries)
            {
                if (!seen.Add(e.Name)) throw new CheckpointException($"{p}: tensor '{e.Name}' appears twice in the header");
                long need = ByteSize(p, e.Name, e.Type, e.Shape);
                if (e.End - e.Begin != need)
                    throw new CheckpointException($"{p}: tensor '{e.Name}' is {SafetensorsDType.ToName(e.Type)}[{string.Join(",", e.Shape)}] = {need} bytes but data_offsets [{e.Begin}, {e.End}) span {e.End - e.Begin}");
                if (e.End > dataLength)
                    throw new CheckpointException($"{p}: tensor '{e.Name}' data_offsets [{e.Begin}, {e.End}) run past the data area of {dataLength} bytes (file truncated?)");
            }

            // Offsets must tile the data area exactly: sorted, contiguous, from 0 to its end.
            var ordered = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
            long cursor = 0;
            string? previous = null;
            foreach (var e in ordered)
            {
                if (e.Begin < cursor) throw new CheckpointException($"{p}: tensor '{e.Name}' data_offsets [{e.Begin}, {e.End}) overlap tensor '{previous}' (which ends at {cursor})");
                if (e.Begin > cursor) throw new CheckpointException($"{p}: {e.Begin - cursor} bytes before tensor '{e.Name}' (offset {cursor}..{e.Begin}) belong to no tensor");
                cursor = e.End;
                previous = e.Name;
            }
            if (cursor != dataLength)
                throw new CheckpointException(cursor < dataLength
                    ? $"{p}: {dataLength - cursor} trailing bytes after the last tensor belong to no tensor"
                    : $"{p}: tensors need {cursor} data bytes but the file has {dataLength} (truncated)");

            var tensors = new Dictionary<string, FileTensor>(StringComparer.Ordinal);
            foreach (var e in ordered)
                tensors[e.Name] = new FileTensor(e.Type, e.Shape, file, dataStart + e.Begin, e.End - e.Begin) { Name = e.Name };
            return new SafetensorsFile(file, tensors, ordered.Select(e => e.Name).ToList(), metadata, dataStart);
        }
    }

    private static (string, DataType, long[], long, long) ParseEntry(string p, JsonProperty prop)
    {
        string name = prop.Name;
        var v = prop.Value;
        if (v.ValueKind != JsonValueKind.Object) throw new CheckpointException($"{p}: tensor '{name}': header entry is not an object");
        if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new CheckpointException($"{p}: tensor '{name}': missing string field 'dtype'");
        if (!SafetensorsDType.TryParse(dt.GetString()!, out var type))
            throw new CheckpointException($"{p}: tensor '{name}': unsupported dtype '{dt.GetString()}' (supported: {string.Join(", ", SafetensorsDType.Names)})");
        if (!v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new CheckpointException($"{p}: tensor '{name}': missing array field 'shape'");
        var shape = new long[sh.GetArrayLength()];
        int i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0)
                throw new CheckpointException($"{p}: tensor '{name}': shape entry {d} is not a non-negative integer");
            shape[i++] = dim;
        }
        if (!v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new CheckpointException($"{p}: tensor '{name}': 'data_offsets' must be an array [begin, end]");
        var o = off.EnumerateArray().ToArray();
        if (o[0].ValueKind != JsonValueKind.Number || o[1].ValueKind != JsonValueKind.Number
            || !o[0].TryGetInt64(out long begin) || !o[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw new CheckpointException($"{p}: tensor '{name}': bad data_offsets [{o[0]}, {o[1]}]");
        return (name, type, shape, begin, end);
    }

    /// <summary>Bytes of a tensor, checked: a shape whose element or byte count overflows int64 is refused, not wrapped.</summary>
    private static long ByteSize(string p, string name, DataType type, long[] shape)
    {
        try
        {
            long n = 1;
            foreach (var d in shape) n = checked(n * d);
            return checked(n * type.BitWidth() + 7) / 8;
        }
        catch (OverflowException) { throw new CheckpointException($"{p}: tensor '{name}': shape [{string.Join(",", shape)}] of {SafetensorsDType.ToName(type)} overflows a 64-bit byte count"); }
    }

    public void Dispose() => _file.Dispose();
}
