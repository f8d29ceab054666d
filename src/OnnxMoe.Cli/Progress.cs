using System.Diagnostics;
using OnnxMoe.Compiler.Compile;
using Spectre.Console;

namespace OnnxMoe.Cli;

/// <summary>Progress for long work: a live bar on a terminal, a few plain lines otherwise (CI logs stay short).</summary>
internal static class Progress
{
    /// <summary>True when stderr is a terminal that can redraw a live display.</summary>
    public static bool IsLiveTerminal =>
        !Console.IsErrorRedirected && Environment.GetEnvironmentVariable("TERM") is not (null or "" or "dumb") && Environment.GetEnvironmentVariable("CI") is null;

    private static IAnsiConsole ErrorConsole() => AnsiConsole.Create(new AnsiConsoleSettings
    {
        Out = new AnsiConsoleOutput(Console.Error),
        Interactive = InteractionSupport.Yes,
        Ansi = AnsiSupport.Yes,
    });

    /// <summary>Runs <paramref name="work"/>, which reports (done, total, detail) as it goes.</summary>
    public static T Run<T>(string title, Func<Action<long, long, string>, T> work)
    {
        if (!IsLiveTerminal)
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
        ErrorConsole().Progress()
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

    /// <summary>Runs a compile with its progress shown: one live display of the stages on a terminal, plain lines otherwise
    /// (each stage's start and end, every quarter of a long stage); <paramref name="verbose"/> adds the detail lines.</summary>
    public static T RunCompile<T>(bool verbose, Func<ICompileProgress, T> work)
    {
        if (!IsLiveTerminal) return work(new PlainCompileProgress(verbose));
        T result = default!;
        var console = ErrorConsole();
        console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn { Width = 24 }, new PercentageColumn(),
                new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx => result = work(new LiveCompileProgress(ctx, console, verbose)));
        return result;
    }
}

/// <summary>A few plain lines per stage (CI logs, pipes): start, every 25% of a counted stage, end with its summary and time.</summary>
internal sealed class PlainCompileProgress(bool verbose) : ICompileProgress
{
    private readonly Dictionary<string, (Stopwatch Clock, int Quarter, string Detail)> _stages = new(StringComparer.Ordinal);

    public void StageStarted(string stage, long total, string unit)
    {
        _stages[stage] = (Stopwatch.StartNew(), 0, "");
        Console.Error.WriteLine($"{stage} ...");
    }

    public void StageAdvanced(string stage, long done, long total, string? detail)
    {
        if (!_stages.TryGetValue(stage, out var s) || total <= 0) return;
        int quarter = (int)(4 * done / total);
        // A new sub-stage (e.g. "calibration" then "awq scales") starts its own quarters.
        string kind = detail is null ? "" : string.Join(' ', detail.Split(' ').Take(2));
        if (kind != s.Detail) s = (s.Clock, -1, kind);
        if (quarter <= s.Quarter) return;
        _stages[stage] = (s.Clock, quarter, kind);
        Console.Error.WriteLine($"  {stage}: {(detail is null ? "" : kind + " ")}{done:N0}/{total:N0} ({25 * quarter}%)");
    }

    public void StageFinished(string stage, string? summary)
    {
        double seconds = _stages.TryGetValue(stage, out var s) ? s.Clock.Elapsed.TotalSeconds : 0;
        Console.Error.WriteLine($"{stage}: done in {seconds:F1} s" + (summary is null ? "" : $" ({summary})"));
    }

    public void Detail(string message)
    {
        if (verbose) Console.Error.WriteLine($"  {message}");
    }
}

/// <summary>One Spectre.Console live display: a row per stage with its bar, percentage, elapsed time and ETA.</summary>
internal sealed class LiveCompileProgress(ProgressContext context, IAnsiConsole console, bool verbose) : ICompileProgress
{
    private readonly Dictionary<string, ProgressTask> _tasks = new(StringComparer.Ordinal);
    // Bar (24), percentage, elapsed and remaining time take about 50 columns; the description gets the rest.
    private readonly int _descriptionWidth = Math.Max(20, console.Profile.Width - 52);

    private string Fit(string text) => Markup.Escape(text.Length <= _descriptionWidth ? text : text[..(_descriptionWidth - 1)] + "…");

    public void StageStarted(string stage, long total, string unit)
    {
        var task = context.AddTask(Fit(stage), maxValue: Math.Max(1, total));
        task.IsIndeterminate = total <= 0;
        _tasks[stage] = task;
    }

    public void StageAdvanced(string stage, long done, long total, string? detail)
    {
        if (!_tasks.TryGetValue(stage, out var task) || total <= 0) return;
        task.IsIndeterminate = false;
        task.MaxValue = total;
        task.Value = Math.Min(done, total);
        task.Description = Fit(detail is null ? stage : $"{stage}: {detail} {done:N0}/{total:N0}");
    }

    public void StageFinished(string stage, string? summary)
    {
        if (!_tasks.TryGetValue(stage, out var task)) return;
        task.IsIndeterminate = false;
        task.Value = task.MaxValue;
        task.Description = Fit(summary is null ? stage : $"{stage}: {summary}");
        task.StopTask();
    }

    public void Detail(string message)
    {
        if (verbose) console.MarkupLine(Markup.Escape(message));
    }
}
