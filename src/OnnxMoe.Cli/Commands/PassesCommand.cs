using System.CommandLine;
using OnnxMoe.Passes;

namespace OnnxMoe.Cli.Commands;

internal static class PassesCommand
{
    public static Command Create()
    {
        var name = new Argument<string?>("name") { Description = "Show only this pass.", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("passes", "List the compiler passes usable in --pipeline and recipes, with their options and defaults.\n" +
            "Pipeline syntax: pass{option=value,list-option=1,2,3},next-pass  (counts may be relative: n=25%)") { name };
        command.SetAction(parse =>
        {
            var registry = PassRegistry.CreateDefault();
            string? which = parse.GetValue(name);
            if (which == null)
            {
                Console.WriteLine(registry.DescribeAll());
                return 0;
            }
            var entry = registry.Find(which) ?? throw new Ir.UserErrorException(
                $"no pass named '{which}'" + (registry.Suggest(which) is { } s ? $" (did you mean '{s}'?)" : "") + $"; passes: {string.Join(", ", registry.Names)}");
            Console.WriteLine(entry.Describe());
            return 0;
        });
        return command;
    }
}
