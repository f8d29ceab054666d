using System.Globalization;
using OnnxMoe.Ir;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace OnnxMoe.Inference.Evaluation.Tasks;

/// <summary>A YAML value tagged !function (a Python callable in lm-eval); onnxmoe cannot run it.</summary>
public sealed record YamlFunction(string Reference)
{
    public override string ToString() => $"!function {Reference}";
}

/// <summary>
/// Reads lm-eval task and group YAML files into plain values (strings, long, double, bool, null, lists, ordered
/// dicts; !function scalars as <see cref="YamlFunction"/>), resolving `include:` relative to the including file
/// the way lm-eval's load_yaml_config does (the included keys first, the file's own keys override).
/// </summary>
public static class TaskYaml
{
    public static Dictionary<string, object?> Load(string path) => Load(path, new HashSet<string>(StringComparer.Ordinal));

    private static Dictionary<string, object?> Load(string path, HashSet<string> seen)
    {
        var full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw new UserErrorException($"{path}: task file not found");
        if (!seen.Add(full)) throw new UserErrorException($"{path}: include cycle");
        YamlStream stream = new();
        try
        {
            using var reader = new StreamReader(full);
            stream.Load(reader);
        }
        catch (YamlException e)
        {
            throw new UserErrorException($"{path}: malformed YAML at line {e.Start.Line}: {e.Message.Split('\n')[0]}");
        }
        catch (InvalidOperationException e)   // YamlDotNet's scanner on some cut-off flow collections
        {
            throw new UserErrorException($"{path}: malformed YAML ({e.Message.Split('\n')[0]})");
        }
        if (stream.Documents.Count == 0 || stream.Documents[0].RootNode is not YamlMappingNode root)
            throw new UserErrorException($"{path}: a task file must be a YAML mapping (task: ..., doc_to_text: ...)");
        var own = (Dictionary<string, object?>)Convert(root, path)!;
        if (!own.TryGetValue("include", out var include)) return own;
        if (include is not string includePath) throw new UserErrorException($"{path}: include must be a file name");
        var resolved = Path.IsPathRooted(includePath) ? includePath : Path.Combine(Path.GetDirectoryName(full)!, includePath);
        if (!File.Exists(resolved)) throw new UserErrorException($"{path}: included file {includePath} not found");
        var merged = Load(resolved, seen);
        foreach (var (k, v) in own)
            if (k != "include") merged[k] = v;
        return merged;
    }

    private static object? Convert(YamlNode node, string path)
    {
        switch (node)
        {
            case YamlMappingNode map:
                {
                    var d = new Dictionary<string, object?>(StringComparer.Ordinal);
                    foreach (var (k, v) in map.Children)
                    {
                        if (k is not YamlScalarNode key)
                            throw new UserErrorException($"{path}: line {k.Start.Line}: a mapping key must be plain text, not a {(k is YamlMappingNode ? "mapping" : "list")}");
                        d[key.Value ?? ""] = Convert(v, path);
                    }
                    return d;
                }
            case YamlSequenceNode seq:
                return seq.Children.Select(c => Convert(c, path)).ToList();
            case YamlScalarNode scalar:
                {
                    if (!scalar.Tag.IsEmpty && !scalar.Tag.IsNonSpecific && scalar.Tag.Value == "!function") return new YamlFunction(scalar.Value ?? "");
                    var text = scalar.Value ?? "";
                    if (scalar.Style != ScalarStyle.Plain) return text;
                    switch (text)
                    {
                        case "" or "~" or "null" or "Null" or "NULL": return null;
                        case "true" or "True" or "TRUE": return true;
                        case "false" or "False" or "FALSE": return false;
                    }
                    if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l)) return l;
                    if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var d2) && text.Any(char.IsDigit)) return d2;
                    return text;
                }
            default:
                return null;
        }
    }
}
