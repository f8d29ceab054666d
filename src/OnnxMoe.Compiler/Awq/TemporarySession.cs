using OnnxMoe.Ir;
using OnnxMoe.Onnx;
using OnnxMoe.Runtime;

namespace OnnxMoe.Compiler.Awq;

/// <summary>
/// An ORT session over an IR model written to a private temporary folder (external data beside it);
/// disposing closes the session and deletes the folder. Owns both.
/// </summary>
public sealed class TemporarySession : IDisposable
{
    private readonly string _directory;

    public TemporarySession(Model model, SessionConfig? config = null, string name = "region")
    {
        _directory = Directory.CreateTempSubdirectory("onnxmoe-awq-").FullName;
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
