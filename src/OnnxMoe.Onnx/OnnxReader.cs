using Google.Protobuf;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx.Proto;

namespace OnnxMoe.Onnx;

/// <summary>
/// Reads ONNX files into the IR. Embedded tensor data becomes <see cref="InMemoryTensor"/> (typed
/// fields converted to raw little-endian bytes; the original field is remembered for the writer);
/// external data becomes lazy <see cref="FileTensor"/>s over one shared handle per data file, with
/// every range checked against the file. Any malformed input raises <see cref="OnnxFormatException"/>.
/// </summary>
public static class OnnxReader
{
    /// <summary>Reads a model file; external data is resolved relative to the file's folder and read lazily.</summary>
    public static Model Read(string path)
    {
        string full = Path.GetFullPath(path);
        var proto = Parse(full, ModelProto.Parser, "ONNX model");
        return Guard(path, () => new ModelDecoder(path, Path.GetDirectoryName(full)!).DecodeModel(proto));
    }

    /// <summary>Reads a model from serialized bytes; external data, if any, is looked up in <paramref name="baseDirectory"/>.</summary>
    public static Model Read(ReadOnlySpan<byte> modelBytes, string baseDirectory, string displayName = "<memory>")
    {
        ModelProto proto;
        try { proto = ModelProto.Parser.ParseFrom(modelBytes); }
        catch (InvalidProtocolBufferException e) { throw new OnnxFormatException($"{displayName}: not a valid ONNX model ({e.Message})", e); }
        return Guard(displayName, () => new ModelDecoder(displayName, Path.GetFullPath(baseDirectory)).DecodeModel(proto));
    }

    /// <summary>Reads a serialized TensorProto (.pb, as in the ONNX test data sets). The tensor's name is in <see cref="Tensor.Name"/>.</summary>
    public static Tensor ReadTensor(string path)
    {
        string full = Path.GetFullPath(path);
        var proto = Parse(full, TensorProto.Parser, "TensorProto");
        return Guard(path, () => new ModelDecoder(path, Path.GetDirectoryName(full)!).DecodeTensor(proto, "file"));
    }

    /// <summary>Whatever else a malformed but parseable file trips over becomes one clear format error.</summary>
    private static T Guard<T>(string path, Func<T> decode)
    {
        try { return decode(); }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or OverflowException or InvalidDataException or IOException and not OnnxFormatException)
        {
            throw new OnnxFormatException($"{path}: malformed ONNX content ({e.Message})", e);
        }
    }

    private static T Parse<T>(string path, MessageParser<T> parser, string what) where T : IMessage<T>
    {
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            if (stream.Length > int.MaxValue)
                throw new OnnxFormatException($"{path}: {stream.Length} bytes is over the 2 GiB protobuf limit; not a valid {what}");
            return parser.ParseFrom(stream);
        }
        catch (InvalidProtocolBufferException e) { throw new OnnxFormatException($"{path}: not a valid {what} ({e.Message})", e); }
        catch (FileNotFoundException) { throw new OnnxFormatException($"{path}: file not found"); }
        catch (DirectoryNotFoundException) { throw new OnnxFormatException($"{path}: file not found"); }
        catch (UnauthorizedAccessException e) { throw new OnnxFormatException($"{path}: cannot read ({e.Message})", e); }
    }
}
