using System.CommandLine;
using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Passes;

namespace OnnxMoe.Cli.Commands;

internal static class RecipesCommand
{
    public static Command Create()
    {
        var name = new Argument<string?>("name") { Description = "Print this recipe's YAML (a starting point for your own recipe file).", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("recipes", "List the built-in compression recipes (the paper's settings) with their pipelines, or print one as YAML.\n" +
            "Use one with: onnxmoe compile <checkpoint> -o <out> --recipe <name>") { name };
        command.SetAction(parse =>
        {
            string? which = parse.GetValue(name);
            if (which != null)
            {
                Console.Write(BuiltinRecipes.GetYaml(which));
                return 0;
            }
            var registry = PassRegistry.CreateDefault();
            foreach (var recipeName in BuiltinRecipes.Names)
            {
                string yaml = BuiltinRecipes.GetYaml(recipeName);
                try
                {
                    var recipe = RecipeLoader.Parse(yaml, $"built-in recipe {recipeName}", registry);
                    Console.WriteLine($"{recipeName,-16} {recipe.Pipeline}");
                    if (recipe.Description.Length > 0) Console.WriteLine($"{"",-16} {recipe.Description}");
                }
                catch (Ir.UserErrorException e)
                {
                    Console.WriteLine($"{recipeName,-16} (unavailable: {e.Message.Split('\n')[0]})");
                }
            }
            return 0;
        });
        return command;
    }
}
