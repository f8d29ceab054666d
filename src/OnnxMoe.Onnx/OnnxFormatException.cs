namespace OnnxMoe.Onnx;

/// <summary>
/// A model or tensor file that cannot be read or written as ONNX: malformed protobuf, truncated
/// file, bad external-data reference, missing data file, or a model too large to embed.
/// The message names the file and what is wrong; the CLI maps this type to exit code 1.
/// </summary>
public sealed class OnnxFormatException : IOException
{
    public OnnxFormatException(string message) : base(message) { }
    public OnnxFormatException(string message, Exception inner) : base(message, inner) { }
}
