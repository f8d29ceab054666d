using Spectre.Console;

namespace OnnxMoe.Cli;

/// <summary>Progress for long work: a live bar on a terminal, a few plain lines otherwise (CI logs stay short).</summary>
internal static class Progress
{
    /// <summary>Runs <paramref name="work"/>, which reports (done, total, detail) as it goes.</summary>
    public static T Run<T>(string title, Func<Action<long, long, string>, T> work)
    {
        if (Console.IsErrorRedirected || !AnsiConsole.Profile.Capabilities.Interactive)
        {
            int lastDecile = -1;
            return work((done, total, detail) =>
            {
                int decile = total > 0 ? (int)(10 * done / total) : 0;
                if (decile == lastDecile) return;
                lastDecile = decile;
                Console.Error.WriteLine($"{title}: {10 * decile}% {detail}");
            });
        }
        T result = default!;
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(title));
                result = work((done, total, detail) =>
                {
                    task.MaxValue = Math.Max(1, total);
                    task.Value = done;
                    task.Description = Markup.Escape($"{title} {detail}");
                });
                task.Value = task.MaxValue;
            });
        return result;
    }
}

/// <summary>Prints staged progress from deep inside passes as a few lines: each stage's start, every 25%, and its end.</summary>
internal sealed class StageReporter(string prefix)
{
    private string _stage = "";
    private int _quarter = -1;

    public void Report(string stage, int done, int total)
    {
        int quarter = total > 0 ? 4 * done / total : 4;
        if (stage == _stage && quarter == _quarter) return;
        _stage = stage;
        _quarter = quarter;
        Console.Error.WriteLine($"  {prefix} {stage}: {done}/{total}");
    }
}
