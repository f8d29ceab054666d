using OnnxMoe.Ir;
using OnnxMoe.Onnx;
using OnnxMoe.Runtime;

namespace OnnxMoe.Compiler;

/// <summary>
/// An ORT session over an IR model written to a private temporary folder (external data beside it),
/// created under <c>parentDirectory</c> or the system temp folder; disposing closes the session and
/// deletes the folder. Owns both. Used by calibration, AWQ and `compile --verify-ort`.
/// </summary>
public sealed class TemporarySession : IDisposable
{
    private readonly string _directory;

    public TemporarySession(Model model, SessionConfig? config = null, string name = "region", string? parentDirectory = null)
    {
        _directory = parentDirectory == null
            ? Directory.CreateTempSubdirectory("onnxmoe-session-").FullName
            : Directory.CreateDirectory(Path.Combine(parentDirectory, "onnxmoe-session-" + Guid.NewGuid().ToString("N"))).FullName;
        try
        {
            var path = Path.Combine(_directory, name + ".onnx");
            OnnxWriter.Write(model, path);
            Session = new InferenceSession(path, config);
        }
        catch
        {
            TryDeleteDirectory();
            throw;
        }
    }

    public InferenceSession Session { get; }

    public void Dispose()
    {
        Session?.Dispose();
        TryDeleteDirectory();
    }

    private void TryDeleteDirectory()
    {
        try { Directory.Delete(_directory, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
