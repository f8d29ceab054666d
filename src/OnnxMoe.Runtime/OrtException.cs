using System.Text.RegularExpressions;

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

    /// <summary>The binding's exception as ours: its "[ErrorCode:X] message" text split into code and message,
    /// with <paramref name="context"/> (e.g. the model path) in front when ORT's message does not name it.</summary>
    internal static OrtException From(Microsoft.ML.OnnxRuntime.OnnxRuntimeException e, string? context = null)
    {
        var m = Regex.Match(e.Message, @"^\[ErrorCode:(\w+)\]\s*(.*)$", RegexOptions.Singleline);
        var code = OrtErrorCode.Fail;
        string message = e.Message;
        if (m.Success)
        {
            message = m.Groups[2].Value;
            code = m.Groups[1].Value switch
            {
                "ExecutionProviderFailure" or "EPFail" => OrtErrorCode.EpFail,
                var name when Enum.TryParse<OrtErrorCode>(name, out var parsed) => parsed,
                _ => OrtErrorCode.Fail,
            };
        }
        message = message.Trim();
        if (context != null && !message.Contains(context, StringComparison.Ordinal)) message = $"{context}: {message}";
        return new OrtException(code, message, e);
    }
}

/// <summary>The ONNX Runtime native library is missing, cannot be loaded, or does not match the binding.</summary>
public sealed class OrtLibraryException : Exception
{
    public OrtLibraryException(string message, Exception? inner = null) : base(message, inner) { }
}
