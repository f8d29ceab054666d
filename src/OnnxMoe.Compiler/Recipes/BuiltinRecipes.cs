using OnnxMoe.Passes;

namespace OnnxMoe.Compiler.Recipes;

/// <summary>
/// The recipes shipped with onnxmoe: <c>src/OnnxMoe.Compiler/Recipes/*.yaml</c>, embedded in the assembly as
/// <c>OnnxMoe.Compiler.Recipes.&lt;name&gt;.yaml</c>. A recipe's name is its file name.
/// </summary>
public static class BuiltinRecipes
{
    private const string Prefix = "OnnxMoe.Compiler.Recipes.";
    private const string Suffix = ".yaml";

    /// <summary>Built-in recipe names in ordinal order.</summary>
    public static IReadOnlyList<string> Names { get; } = typeof(BuiltinRecipes).Assembly.GetManifestResourceNames()
        .Where(n => n.StartsWith(Prefix, StringComparison.Ordinal) && n.EndsWith(Suffix, StringComparison.Ordinal))
        .Select(n => n[Prefix.Length..^Suffix.Length])
        .Order(StringComparer.Ordinal)
        .ToArray();

    /// <summary>The YAML text of a built-in recipe.</summary>
    public static string GetYaml(string name)
    {
        using var stream = typeof(BuiltinRecipes).Assembly.GetManifestResourceStream(Prefix + name + Suffix)
            ?? throw new RecipeException(name, null, $"no built-in recipe named '{name}' (built-in: {string.Join(", ", Names)})");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>Parses a built-in recipe against <paramref name="registry"/>; fails like a recipe file would if a pass is missing.</summary>
    public static Recipe Load(string name, PassRegistry registry)
    {
        var recipe = RecipeLoader.Parse(GetYaml(name), $"built-in recipe {name}", registry);
        if (recipe.Name != name) throw new InvalidOperationException($"built-in recipe file {name}.yaml declares name '{recipe.Name}'");
        return recipe;
    }
}
