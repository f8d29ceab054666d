using OnnxMoe.Ir;
using OnnxMoe.Onnx;
using OnnxMoe.Runtime;

namespace OnnxMoe.Compiler;

/// <summary>
/// An ORT session over an IR model held in memory: the ModelProto as bytes, its large initializers in one native
/// external-data image that ORT reads in place (<see cref="OnnxWriter.ToMemory"/>). Nothing is written to disk.
/// Owns the session and the image. Used by calibration, AWQ and `compile --verify-ort`.
/// </summary>
public sealed class InMemorySession : IDisposable
{
    public InMemorySession(Model model, SessionConfig? config = null, string name = "region")
    {
        using var serialized = OnnxWriter.ToMemory(model);
        // The session owns the image from here on, and frees it also when it fails to open.
        var data = serialized.DetachData();
        var files = data is null ? null : new[] { new ExternalDataFile(serialized.DataFileName, data) };
        Session = new InferenceSession(serialized.Proto, $"{name} (in memory)", config, files);
    }

    public InferenceSession Session { get; }

    public void Dispose() => Session.Dispose();
}
