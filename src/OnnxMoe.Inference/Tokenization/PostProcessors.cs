using System.Text.Json;

namespace OnnxMoe.Inference.Tokenization;

/// <summary>Adds special tokens around an encoded sequence when special tokens are requested (HF "post_processor").</summary>
internal interface IPostProcessor
{
    List<int> Process(List<int> ids);
}

internal static class PostProcessors
{
    public static IPostProcessor? Parse(JsonConfig config)
    {
        if (config.IsNull) return null;
        return config.Type switch
        {
            "Sequence" => new SequencePostProcessor(config.Items("processors").Select(c => Parse(c)!).Where(p => p is not null).ToArray()),
            "ByteLevel" => new IdentityPostProcessor(), // only trims offsets, which this tokenizer does not report
            "TemplateProcessing" => TemplatePostProcessor.Parse(config),
            var other => throw config.Error($"post-processor \"{other}\" is not supported (supported: Sequence, ByteLevel, TemplateProcessing)"),
        };
    }
}

internal sealed class IdentityPostProcessor : IPostProcessor
{
    public List<int> Process(List<int> ids) => ids;
}

internal sealed class SequencePostProcessor(IPostProcessor[] steps) : IPostProcessor
{
    public List<int> Process(List<int> ids)
    {
        foreach (var step in steps) ids = step.Process(ids);
        return ids;
    }
}

/// <summary>TemplateProcessing for a single sequence: <c>$A</c> is the encoded text, other pieces are special tokens' ids.</summary>
internal sealed class TemplatePostProcessor(IReadOnlyList<int[]?> pieces) : IPostProcessor
{
    public List<int> Process(List<int> ids)
    {
        var result = new List<int>(ids.Count + pieces.Count);
        foreach (var piece in pieces)
        {
            if (piece is null) result.AddRange(ids);
            else result.AddRange(piece);
        }
        return result;
    }

    public static TemplatePostProcessor Parse(JsonConfig config)
    {
        var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
        var specialsConfig = config.Child("special_tokens");
        if (!specialsConfig.IsNull)
        {
            if (specialsConfig.Element.ValueKind != JsonValueKind.Object) throw specialsConfig.Error("must be an object");
            foreach (var entry in specialsConfig.Element.EnumerateObject())
            {
                var special = specialsConfig.Child(entry.Name);
                var ids = special.Items("ids").Select(i => i.Element.ValueKind == JsonValueKind.Number && i.Element.TryGetInt32(out var v) ? v : throw i.Error("must be an integer id")).ToArray();
                specials[special.GetString("id") ?? entry.Name] = ids;
            }
        }

        int[] Special(string name, JsonConfig where) =>
            specials.TryGetValue(name, out var ids) ? ids : throw where.Error($"special token \"{name}\" is not defined in special_tokens");

        var pieces = new List<int[]?>();
        var single = config.Child("single");
        if (single.Element.ValueKind == JsonValueKind.String)
        {
            foreach (var word in single.Element.GetString()!.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                var name = word.Contains(':') ? word[..word.LastIndexOf(':')] : word;
                pieces.Add(name is "$A" or "$" or "$0" ? null : name.StartsWith('$') ? throw single.Error($"\"{word}\" refers to a pair sequence") : Special(name, single));
            }
        }
        else
        {
            foreach (var item in config.Items("single"))
            {
                if (item.Has("SpecialToken")) pieces.Add(Special(item.Child("SpecialToken").RequireString("id"), item));
                else if (item.Has("Sequence"))
                {
                    var id = item.Child("Sequence").RequireString("id");
                    if (id != "A") throw item.Error($"sequence \"{id}\" in a single-sequence template");
                    pieces.Add(null);
                }
                else throw item.Error("template piece must be SpecialToken or Sequence");
            }
        }
        return new TemplatePostProcessor(pieces);
    }
}
