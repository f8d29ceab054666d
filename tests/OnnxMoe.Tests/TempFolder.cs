namespace OnnxMoe.Tests;

/// <summary>A fresh temporary folder for one test, deleted on disposal.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder() => Path = Directory.CreateTempSubdirectory("onnxmoe-tests-").FullName;

    public string Path { get; }

    /// <summary>Full path of <paramref name="relative"/> inside the folder.</summary>
    public string this[string relative] => System.IO.Path.Combine(Path, relative);

    /// <summary>Writes <paramref name="bytes"/> to <paramref name="fileName"/> in the folder and returns its path.</summary>
    public string Write(string fileName, byte[] bytes)
    {
        string path = this[fileName];
        File.WriteAllBytes(path, bytes);
        return path;
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
