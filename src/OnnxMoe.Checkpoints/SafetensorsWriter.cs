using System.Buffers.Binary;
using System.Text.Json;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Checkpoints;

/// <summary>
/// Writes a .safetensors file, streaming one tensor at a time (each tensor's <see cref="Tensor.WriteTo"/>
/// runs while writing, so lazy tensors are computed then). Written to a temporary name beside the
/// target and renamed when complete.
/// </summary>
public static class SafetensorsWriter
{
    public static void Write(string path, IReadOnlyList<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = BuildHeader(tensors, metadata);
        string tmp = path + ".tmp";
        try
        {
            using (var stream = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> len = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
                stream.Write(len);
                stream.Write(header);
                foreach (var (name, t) in tensors)
                {
                    long before = stream.Position;
                    t.WriteTo(stream);
                    if (stream.Position - before != t.ByteLength)
                        throw new InvalidOperationException($"tensor {name} wrote {stream.Position - before} bytes, expected {t.ByteLength}");
                }
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }

    /// <summary>The JSON header, space-padded to a multiple of 8 bytes as the reference writer does.</summary>
    public static byte[] BuildHeader(IReadOnlyList<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var kv in metadata.OrderBy(k => k.Key, StringComparer.Ordinal)) w.WriteString(kv.Key, kv.Value);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, t) in tensors)
            {
                w.WriteStartObject(name);
                w.WriteString("dtype", SafetensorsDType.ToName(t.DataType));
                w.WriteStartArray("shape");
                foreach (var d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                offset += t.ByteLength;
                w.WriteNumberValue(offset);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        var bytes = ms.ToArray();
        int padded = (bytes.Length + 7) / 8 * 8;
        var result = new byte[padded];
        bytes.CopyTo(result, 0);
        for (int i = bytes.Length; i < padded; i++) result[i] = (byte)' ';
        return result;
    }
}
