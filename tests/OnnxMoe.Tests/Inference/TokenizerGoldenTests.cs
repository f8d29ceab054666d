using System.Text.Json;
using OnnxMoe.Inference.Tokenization;

namespace OnnxMoe.Tests.Inference;

/// <summary>Every string of the training script's tokenizer_golden.json files: exact ids and exact decoded text.</summary>
public class TokenizerGoldenTests
{
    public static TheoryData<string> GoldenFolders() => new()
    {
        "models/tiny-mixtral",
        "models/tiny-deepseek",
        "models/small-mixtral",
        "tests/data/tokenizers/bytelevel-gpt2",
    };

    [Theory]
    [MemberData(nameof(GoldenFolders))]
    public void EncodeAndDecodeMatchGolden(string folder)
    {
        var dir = Path.Combine(TestFiles.RepositoryRoot(), folder);
        var goldenPath = Path.Combine(dir, "tokenizer_golden.json");
        if (!File.Exists(goldenPath)) return; // the trained tokenizers land with the training branch

        var tokenizer = Tokenizer.Load(Path.Combine(dir, "tokenizer.json"));
        using var golden = JsonDocument.Parse(File.ReadAllText(goldenPath));
        var cases = golden.RootElement.GetProperty("cases").EnumerateArray().ToList();
        Assert.NotEmpty(cases);
        var failures = new List<string>();
        foreach (var c in cases)
        {
            var text = c.GetProperty("text").GetString()!;
            var expectedIds = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var expectedText = c.GetProperty("decoded").GetString()!;
            var ids = tokenizer.Encode(text, addSpecialTokens: true);
            if (!ids.SequenceEqual(expectedIds))
                failures.Add($"encode {JsonSerializer.Serialize(text)}: expected [{string.Join(",", expectedIds)}] got [{string.Join(",", ids)}]");
            var decoded = tokenizer.Decode(expectedIds, skipSpecialTokens: true);
            if (decoded != expectedText)
                failures.Add($"decode {JsonSerializer.Serialize(text)}: expected {JsonSerializer.Serialize(expectedText)} got {JsonSerializer.Serialize(decoded)}");
        }
        Assert.True(failures.Count == 0, $"{folder}: {failures.Count} of {cases.Count} cases differ:\n" + string.Join("\n", failures.Take(20)));
    }
}
