namespace OnnxMoe.Tests.Serialization;

/// <summary>The ONNX backend test corpus (Debian package libonnx-testdata).</summary>
internal static class BackendCorpus
{
    public const string Root = "/usr/include/onnx/backend/test/data";
    public static readonly string[] Categories = ["node", "simple", "real", "pytorch-converted", "pytorch-operator"];

    public sealed record Case(string Category, string Name, string Directory)
    {
        public string ModelPath => Path.Combine(Directory, "model.onnx");
        public override string ToString() => $"{Category}/{Name}";
    }

    /// <summary>Every test folder of the corpus, sorted; those without model.onnx are returned too so callers can report them.</summary>
    public static IReadOnlyList<Case> All()
    {
        var cases = new List<Case>();
        foreach (var cat in Categories)
        {
            string dir = Path.Combine(Root, cat);
            if (!System.IO.Directory.Exists(dir)) continue;
            foreach (var d in System.IO.Directory.GetDirectories(dir).Order(StringComparer.Ordinal))
                cases.Add(new Case(cat, Path.GetFileName(d), d));
        }
        return cases;
    }
}
