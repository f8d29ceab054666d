namespace OnnxMoe.Runtime;

/// <summary>ORT's error codes (OrtErrorCode in onnxruntime_c_api.h).</summary>
public enum OrtErrorCode
{
    Ok = 0,
    Fail = 1,
    InvalidArgument = 2,
    NoSuchFile = 3,
    NoModel = 4,
    EngineError = 5,
    RuntimeException = 6,
    InvalidProtobuf = 7,
    ModelLoaded = 8,
    NotImplemented = 9,
    InvalidGraph = 10,
    EpFail = 11,
}

/// <summary>An ONNX Runtime call failed; <see cref="Exception.Message"/> carries ORT's own message.</summary>
public class OrtException : Exception
{
    public OrtException(OrtErrorCode code, string message, Exception? inner = null) : base(message, inner) => Code = code;

    public OrtErrorCode Code { get; }
}

/// <summary>The ONNX Runtime native library is missing, cannot be loaded, or is too old.</summary>
public sealed class OrtLibraryException : Exception
{
    public OrtLibraryException(string message, Exception? inner = null) : base(message, inner) { }
}
