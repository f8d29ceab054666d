using OnnxMoe.Checkpoints;

namespace OnnxMoe.Tests.Lowering;

/// <summary>The random tiny checkpoints with golden logits under tests/data/families/ (written by tools/make_random_checkpoints.py).</summary>
internal static class FamilyData
{
    public static string Root
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            {
                string p = Path.Combine(d.FullName, "tests", "data", "families");
                if (Directory.Exists(p)) return p;
            }
            throw new DirectoryNotFoundException("tests/data/families not found above " + AppContext.BaseDirectory);
        }
    }

    public static IEnumerable<string> Names => Directory.GetDirectories(Root).Select(Path.GetFileName).Order(StringComparer.Ordinal)!;

    /// <summary>The bundled trained models (models/small-mixtral, models/tiny-*), which carry golden logits in the same layout.</summary>
    public static IEnumerable<string> TrainedModels => ["small-mixtral", "tiny-deepseek", "tiny-mixtral"];

    public static string Dir(string name) => TrainedModels.Contains(name)
        ? Path.GetFullPath(Path.Combine(Root, "..", "..", "..", "models", name))
        : Path.Combine(Root, name);

    /// <summary>(input ids, golden logits [seq, vocab]) per prompt.</summary>
    public static List<(long[] Ids, float[] Logits, long Vocab)> Prompts(string name)
    {
        var result = new List<(long[], float[], long)>();
        using var f = SafetensorsFile.Open(Path.Combine(Dir(name), "golden.safetensors"));
        for (int i = 0; f.Contains($"prompt_{i}.input_ids"); i++)
        {
            var ids = f[$"prompt_{i}.input_ids"].GetSpan<long>().ToArray();
            var logits = f[$"prompt_{i}.logits"];
            result.Add((ids, logits.ToFloatArray(), logits.Shape[^1]));
        }
        return result;
    }
}
