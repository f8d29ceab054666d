using System.Globalization;
using OnnxMoe.Ir;

namespace OnnxMoe.Passes.Trimming;

/// <summary>What the trimming passes share: the selection option, score access, count resolution.</summary>
public abstract class TrimmingPass : Pass
{
    public const string OneShot = "one-shot";
    public const string Iterative = "iterative";

    protected TrimmingPass(PassInfo info, PassOptions options) : base(info, options)
    {
    }

    /// <summary>The <c>selection</c> option every trimming pass declares (one declaration, listed by each pass's Info).</summary>
    public static readonly PassOption<string> Selection = PassOption.String("selection", OneShot,
        "one-shot: score the unmodified model once (the paper); iterative: drop one, re-score, repeat", OneShot, Iterative);

    protected bool IsIterative => Options.Get(Selection) == Iterative;

    protected ICalibrationScores Scorer(PassContext context) =>
        context.TryGet<ICalibrationScores>(out var s) ? s
            : throw new PassException(Name, "choosing what to remove needs calibration scores, which this run does not provide " +
                                            "(compile with calibration, or list what to remove explicitly)");

    protected PassException Error(string message) => new(Name, message);

    /// <summary>Exactly one of an explicit list option and the count option.</summary>
    protected (T? List, PassCount? Count) ListOrCount<T>(PassOption<T> listOption, PassOption<PassCount> countOption) where T : class
    {
        T? list = Options.TryGet(listOption, out var l) ? l : null;
        PassCount? count = Options.TryGet(countOption, out var c) ? c : null;
        if (list != null && count != null) throw Error($"give {listOption.Name}=... or {countOption.Name}=..., not both");
        if (list == null && count == null) throw Error($"give {listOption.Name}=... (explicit) or {countOption.Name}=... (chosen by calibration scores)");
        return (list, count);
    }

    /// <summary>An absolute count larger than what the model has is a mistake, not a request to take everything (or nothing).</summary>
    /// <param name="what">what is counted, plural (e.g. "MoE layers").</param>
    protected void CheckCountWithin(string option, PassCount count, int available, string what)
    {
        if (!count.IsPercent && count.Amount > available)
            throw Error($"{option}={count} but the model has only {available} {what}");
    }

    protected static string Join(IEnumerable<int> xs) => string.Join(",", xs.Select(x => x.ToString(CultureInfo.InvariantCulture)));

    protected static string Format(double d) => d.ToString("F6", CultureInfo.InvariantCulture);

    /// <summary>Result after edits: changed when any counter moved.</summary>
    protected static PassResult Done(CounterSet counters) => PassResult.From(counters.Any, counters);

    /// <summary>Runs <see cref="Trim"/> on the standard residual Adds: scores cut the graph at block inputs and the edits rewire
    /// residual Adds, and a fused SkipSimplifiedLayerNormalization holds one block's last residual Add and the next block's norm.</summary>
    public sealed override PassResult Run(Model model, PassContext context) =>
        Fusion.SkipNormFusion.WithResidualAdds(model, Name, () => Trim(model, context));

    /// <summary>The pass proper, on a model whose residual Adds are plain Adds.</summary>
    protected abstract PassResult Trim(Model model, PassContext context);
}
