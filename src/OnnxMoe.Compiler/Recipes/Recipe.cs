using System.Globalization;
using System.Text;
using OnnxMoe.Ir;
using OnnxMoe.Passes;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace OnnxMoe.Compiler.Recipes;

/// <summary>Calibration data for passes that score the model: how many samples of how many tokens, from which text.</summary>
/// <param name="Text"><c>default</c> (the held-out text shipped with the bundled models) or a path; a relative path in a recipe
/// file is resolved against the recipe's folder when loaded.</param>
public sealed record CalibrationSettings(int Samples = 128, int SeqLen = 2048, string Text = CalibrationSettings.DefaultText)
{
    public const string DefaultText = "default";

    /// <summary>Checks the settings before any work starts (one line per problem, as CLI options name them); returns them.</summary>
    public CalibrationSettings Validate()
    {
        if (Samples < 1) throw new UserErrorException($"--samples must be at least 1, got {Samples}");
        if (SeqLen < 2) throw new UserErrorException($"--seq-len must be at least 2, got {SeqLen}");
        if (Text != DefaultText)
        {
            if (Directory.Exists(Text)) throw new UserErrorException($"{Text}: is a folder, expected a calibration text file");
            if (!File.Exists(Text)) throw new UserErrorException($"{Text}: no such calibration text file");
        }
        return this;
    }
}

/// <summary>
/// A named compression recipe: a pass pipeline plus calibration settings. YAML schema (keys are fixed; any
/// other key is an error):
/// <code>
/// name: block-drop-8                 # kebab-case; required
/// description: Drop 25% of blocks.   # optional
/// calibration:                       # optional; these are the defaults
///   samples: 128
///   seq-len: 2048
///   text: default                    # or a path, relative to the recipe file
/// pipeline:                          # required; one entry per pipeline step, in order
///   - drop-blocks: { n: 25%, mode: discrete }
///   - quantize-int4: { block-size: 128 }
///   - cleanup                        # a step without options
/// </code>
/// Option values are the pipeline text forms: a list option takes a YAML sequence (<c>[3, 7]</c>,
/// <c>["1:0", "2:3"]</c> or <c>[[1, 0], [2, 3]]</c>) or the same comma text as in a pipeline (<c>"3,7"</c>).
/// The recipe's <see cref="Pipeline"/> printed is exactly the textual pipeline it stands for.
/// </summary>
public sealed class Recipe
{
    public Recipe(string name, string description, CalibrationSettings calibration, PassPipeline pipeline)
    {
        Name = name;
        Description = description;
        Calibration = calibration;
        Pipeline = pipeline;
    }

    public string Name { get; }
    public string Description { get; }
    public CalibrationSettings Calibration { get; }
    public PassPipeline Pipeline { get; }

    /// <summary>YAML that <see cref="RecipeLoader.Parse"/> reads back to an equal recipe.</summary>
    public string ToYaml()
    {
        var sb = new StringBuilder();
        sb.Append("name: ").Append(Scalar(Name)).Append('\n');
        if (Description.Length > 0) sb.Append("description: ").Append(Scalar(Description)).Append('\n');
        var inv = CultureInfo.InvariantCulture;
        sb.Append("calibration: { samples: ").Append(Calibration.Samples.ToString(inv))
          .Append(", seq-len: ").Append(Calibration.SeqLen.ToString(inv))
          .Append(", text: ").Append(Scalar(Calibration.Text)).Append(" }\n");
        sb.Append("pipeline:");
        if (Pipeline.Steps.Count == 0) sb.Append(" []");
        sb.Append('\n');
        foreach (var step in Pipeline.Steps)
        {
            var opts = step.Options.ExplicitValues().ToList();
            sb.Append("  - ").Append(step.Name);
            if (opts.Count > 0)
                sb.Append(": { ").Append(string.Join(", ", opts.Select(o => $"{o.Option.Name}: {YamlValue(o.Option.Type, o.Value)}"))).Append(" }");
            sb.Append('\n');
        }
        return sb.ToString();
    }

    private static string YamlValue(OptionType type, object value) => type switch
    {
        OptionType.IntList => "[" + string.Join(", ", ((int[])value).Select(i => i.ToString(CultureInfo.InvariantCulture))) + "]",
        OptionType.PairList => "[" + string.Join(", ", ((IntPair[])value).Select(p => $"\"{p}\"")) + "]",
        OptionType.String => Scalar((string)value),
        _ => OptionValues.Format(type, value),
    };

    /// <summary>A double-quoted YAML scalar unless the text is a safe plain word.</summary>
    // YAML's double-quoted scalars take the same escapes as the IR printer's quoted names.
    private static string Scalar(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '/') && char.IsAsciiLetter(s[0]) && s is not ("true" or "false" or "null" or "yes" or "no")
            ? s
            : Ir.Printing.IrPrinter.Quote(s);

    public override string ToString() => $"{Name}: {Pipeline}";
}

/// <summary>A recipe file is malformed or names passes/options that do not exist. Message: <c>file:line:column: problem</c>.</summary>
public sealed class RecipeException : UserErrorException
{
    public RecipeException(string source, Mark? at, string problem)
        : base(at is { } m ? $"{source}:{m.Line}:{m.Column}: {problem}" : $"{source}: {problem}")
    {
        Source = source;
        Problem = problem;
    }

    public new string Source { get; }
    public string Problem { get; }
}

/// <summary>Reads recipes from YAML text, files, or the built-in set.</summary>
public static class RecipeLoader
{
    private static readonly string[] TopKeys = ["name", "description", "calibration", "pipeline"];
    private static readonly string[] CalibrationKeys = ["samples", "seq-len", "text"];

    /// <summary>Loads a recipe file; a relative calibration text path is made absolute against the file's folder.</summary>
    public static Recipe Load(string path, PassRegistry registry)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RecipeException(path, null, $"cannot read the recipe: {e.Message}");
        }
        return Parse(text, path, registry, Path.GetDirectoryName(Path.GetFullPath(path)));
    }

    /// <summary>A built-in recipe by name, else a recipe file by path; the error lists the built-in names.</summary>
    public static Recipe Resolve(string nameOrPath, PassRegistry registry)
    {
        if (BuiltinRecipes.Names.Contains(nameOrPath) && !File.Exists(nameOrPath)) return BuiltinRecipes.Load(nameOrPath, registry);
        if (File.Exists(nameOrPath)) return Load(nameOrPath, registry);
        var hint = NameSuggestion.Closest(nameOrPath, BuiltinRecipes.Names) is { } s ? $"did you mean '{s}'? " : "";
        throw new RecipeException(nameOrPath, null, $"no such recipe file or built-in recipe ({hint}built-in: {string.Join(", ", BuiltinRecipes.Names)})");
    }

    /// <summary>Parses recipe YAML. <paramref name="source"/> names it in errors; <paramref name="baseDirectory"/> resolves a relative calibration text path.</summary>
    public static Recipe Parse(string yaml, string source, PassRegistry registry, string? baseDirectory = null)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(yaml));
        }
        catch (YamlException e)
        {
            throw new RecipeException(source, e.Start, $"not valid YAML: {(e.InnerException?.Message ?? e.Message).ReplaceLineEndings(" ")}");
        }
        catch (InvalidOperationException)
        {
            // YamlDotNet's scanner gives up this way on some malformed flow mappings (e.g. a plain scalar cut off inside "{ ... ").
            throw new RecipeException(source, null, "not valid YAML: the text ends or breaks inside a scalar or flow mapping");
        }
        if (stream.Documents.Count != 1) throw new RecipeException(source, null, $"expected one YAML document, found {stream.Documents.Count}");
        if (stream.Documents[0].RootNode is not YamlMappingNode root)
            throw new RecipeException(source, stream.Documents[0].RootNode.Start, "a recipe is a mapping with keys name, description, calibration, pipeline");

        var keys = Keys(root, TopKeys, source, "recipe");
        var name = keys.TryGetValue("name", out var n) ? ScalarText(n, source, "name") : throw new RecipeException(source, root.Start, "missing key 'name'");
        if (!PassInfo.IsKebabCase(name)) throw new RecipeException(source, n.Start, $"recipe name '{name}' must be kebab-case (lower-case letters, digits, '-')");
        var description = keys.TryGetValue("description", out var d) ? ScalarText(d, source, "description") : "";
        var calibration = keys.TryGetValue("calibration", out var c) ? ParseCalibration(c, source, baseDirectory) : new CalibrationSettings();
        if (!keys.TryGetValue("pipeline", out var p)) throw new RecipeException(source, root.Start, "missing key 'pipeline'");
        return new Recipe(name, description, calibration, ParsePipeline(p, source, registry));
    }

    private static Dictionary<string, YamlNode> Keys(YamlMappingNode map, string[] allowed, string source, string what)
    {
        var result = new Dictionary<string, YamlNode>(StringComparer.Ordinal);
        foreach (var (k, v) in map.Children)
        {
            var key = (k as YamlScalarNode)?.Value ?? throw new RecipeException(source, k.Start, $"{what} keys must be plain words");
            if (!allowed.Contains(key))
            {
                var hint = NameSuggestion.Closest(key, allowed) is { } s ? $" (did you mean '{s}'?)" : "";
                throw new RecipeException(source, k.Start, $"unknown {what} key '{key}'{hint}; allowed: {string.Join(", ", allowed)}");
            }
            if (!result.TryAdd(key, v)) throw new RecipeException(source, k.Start, $"{what} key '{key}' is given twice");
        }
        return result;
    }

    private static string ScalarText(YamlNode node, string source, string what) =>
        node is YamlScalarNode { Value: { } s } ? s : throw new RecipeException(source, node.Start, $"'{what}' must be a single value");

    private static CalibrationSettings ParseCalibration(YamlNode node, string source, string? baseDirectory)
    {
        if (node is not YamlMappingNode map) throw new RecipeException(source, node.Start, "'calibration' must be a mapping with keys samples, seq-len, text");
        var keys = Keys(map, CalibrationKeys, source, "calibration");
        var settings = new CalibrationSettings();
        if (keys.TryGetValue("samples", out var s)) settings = settings with { Samples = PositiveInt(s, source, "calibration.samples") };
        if (keys.TryGetValue("seq-len", out var l)) settings = settings with { SeqLen = PositiveInt(l, source, "calibration.seq-len") };
        if (keys.TryGetValue("text", out var t))
        {
            var text = ScalarText(t, source, "calibration.text");
            if (text.Length == 0) throw new RecipeException(source, t.Start, "calibration.text is empty: use 'default' or a path");
            if (text != CalibrationSettings.DefaultText && baseDirectory != null && !Path.IsPathRooted(text)) text = Path.GetFullPath(Path.Combine(baseDirectory, text));
            settings = settings with { Text = text };
        }
        return settings;
    }

    private static int PositiveInt(YamlNode node, string source, string what)
    {
        var text = ScalarText(node, source, what);
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0) return v;
        throw new RecipeException(source, node.Start, $"{what} must be a positive integer, got '{text}'");
    }

    private static PassPipeline ParsePipeline(YamlNode node, string source, PassRegistry registry)
    {
        if (node is not YamlSequenceNode seq)
            throw new RecipeException(source, node.Start, "'pipeline' must be a list of steps, e.g. '- drop-blocks: { n: 4 }' or '- cleanup'");
        var steps = new List<PipelineStep>();
        foreach (var item in seq.Children)
        {
            YamlScalarNode nameNode;
            YamlNode? optionsNode = null;
            if (item is YamlScalarNode sn) nameNode = sn;
            else if (item is YamlMappingNode { Children.Count: 1 } mn && mn.Children.First().Key is YamlScalarNode k)
            {
                nameNode = k;
                optionsNode = mn.Children.First().Value;
            }
            else throw new RecipeException(source, item.Start, "a pipeline step is a pass name, or one 'pass-name: { option: value, ... }' pair");

            var passName = nameNode.Value ?? "";
            var entry = registry.Find(passName);
            if (entry == null)
            {
                var hint = registry.Suggest(passName) is { } s ? $" (did you mean '{s}'?)" : $" (known passes: {string.Join(", ", registry.Names)})";
                throw new RecipeException(source, nameNode.Start, $"unknown pass '{passName}'{hint}");
            }
            var options = PassOptions.Defaults(entry.Info);
            if (optionsNode is YamlMappingNode optionMap)
            {
                if (entry.IsAlias && optionMap.Children.Count > 0)
                    throw new RecipeException(source, optionMap.Start, $"'{passName}' is an alias of {entry.Expansion} and takes no options");
                foreach (var (ok, ov) in optionMap.Children)
                {
                    var optName = (ok as YamlScalarNode)?.Value ?? throw new RecipeException(source, ok.Start, "option names must be plain words");
                    var decl = entry.Info.FindOption(optName);
                    if (decl == null)
                    {
                        var known = entry.Info.Options.Select(o => o.Name).ToArray();
                        var hint = NameSuggestion.Closest(optName, known) is { } s ? $" (did you mean '{s}'?)"
                            : known.Length == 0 ? $" ({passName} takes no options)" : $" (options: {string.Join(", ", known)})";
                        throw new RecipeException(source, ok.Start, $"unknown option '{optName}' for pass {passName}{hint}");
                    }
                    if (options.IsExplicit(decl)) throw new RecipeException(source, ok.Start, $"option '{optName}' of {passName} is given twice");
                    var value = OptionValue(decl, ov, source, passName);
                    try
                    {
                        options = options.With(decl, value);
                    }
                    catch (ArgumentException e)
                    {
                        throw new RecipeException(source, ov.Start, e.Message);
                    }
                }
            }
            else if (optionsNode is YamlScalarNode { Value: null or "" } or null) { }
            else throw new RecipeException(source, optionsNode.Start, $"options of {passName} must be a mapping like {{ option: value }}");
            steps.Add(new PipelineStep(entry, options));
        }
        return new PassPipeline(steps);
    }

    private static object OptionValue(PassOption decl, YamlNode node, string source, string passName)
    {
        string where = $"option '{decl.Name}' of {passName}";
        object Scalar(string text, YamlNode at, OptionType type)
        {
            var v = OptionValues.ParseScalar(type, text.Trim(), out var error);
            return v ?? throw new RecipeException(source, at.Start, $"bad value for {where}: {error}");
        }

        if (decl.Type is OptionType.IntList or OptionType.PairList)
        {
            var elements = new List<object>();
            if (node is YamlSequenceNode seq)
            {
                foreach (var e in seq.Children)
                {
                    if (e is YamlScalarNode { Value: { } t }) elements.Add(Scalar(t, e, decl.Type));
                    else if (decl.Type == OptionType.PairList && e is YamlSequenceNode { Children.Count: 2 } pair && pair.Children.All(x => x is YamlScalarNode))
                        elements.Add(Scalar($"{((YamlScalarNode)pair.Children[0]).Value}:{((YamlScalarNode)pair.Children[1]).Value}", e, decl.Type));
                    else throw new RecipeException(source, e.Start, $"bad element for {where}: expected {(decl.Type == OptionType.IntList ? "an int" : "a pair like \"2:3\" or [2, 3]")}");
                }
            }
            else if (node is YamlScalarNode { Value: { } text })
            {
                foreach (var part in text.Split(',', StringSplitOptions.TrimEntries))
                    if (part.Length > 0 || text.Trim().Length > 0) elements.Add(Scalar(part, node, decl.Type));
            }
            else throw new RecipeException(source, node.Start, $"{where} takes a list, e.g. [3, 7]");
            return decl.Type == OptionType.IntList ? elements.Cast<int>().ToArray() : elements.Cast<IntPair>().ToArray();
        }

        if (node is not YamlScalarNode { Value: { } scalar }) throw new RecipeException(source, node.Start, $"{where} takes a single {decl.Type.Name()} value");
        var value = decl.Type == OptionType.String ? scalar : Scalar(scalar, node, decl.Type);
        if (decl.Choices != null && !decl.Choices.Contains((string)value))
        {
            var hint = NameSuggestion.Closest((string)value, decl.Choices) is { } s ? $" (did you mean '{s}'?)" : "";
            throw new RecipeException(source, node.Start, $"bad value for {where}: '{value}' is not one of {string.Join(", ", decl.Choices)}{hint}");
        }
        return value;
    }
}
