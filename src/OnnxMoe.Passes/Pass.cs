using System.Diagnostics.CodeAnalysis;
using OnnxMoe.Ir;

namespace OnnxMoe.Passes;

/// <summary>
/// Static description of a pass: stable kebab-case name, one-line summary and typed options in
/// declared order (the order the pipeline printer uses).
/// </summary>
public sealed class PassInfo
{
    public PassInfo(string name, string summary, params PassOption[] options)
    {
        if (!IsKebabCase(name)) throw new ArgumentException($"pass name '{name}' is not kebab-case");
        // A handle declared below the Info field that lists it is still null when Info is built.
        if (options.Any(o => o is null)) throw new ArgumentException($"pass {name} lists an option that is not yet declared (declare option fields before Info)");
        var dup = options.GroupBy(o => o.Name).FirstOrDefault(g => g.Count() > 1);
        if (dup != null) throw new ArgumentException($"pass {name} declares option '{dup.Key}' twice");
        Name = name;
        Summary = summary;
        Options = options;
    }

    public string Name { get; }
    public string Summary { get; }
    public IReadOnlyList<PassOption> Options { get; }

    /// <summary>The declaration named <paramref name="name"/>, for readers of option names from text (pipelines, recipes).</summary>
    public PassOption? FindOption(string name) => Options.FirstOrDefault(o => o.Name == name);

    /// <summary>True when <paramref name="option"/> is one of this pass's declarations (the same object, not just the same name).</summary>
    public bool Declares(PassOption option) => Options.Contains(option);

    /// <summary>Multi-line help: name, summary, one line per option.</summary>
    public string Describe()
    {
        var lines = new List<string> { $"{Name}: {Summary}" };
        if (Options.Count == 0) lines.Add("  (no options)");
        lines.AddRange(Options.Select(o => "  " + o.Describe()));
        return string.Join("\n", lines);
    }

    public static bool IsKebabCase(string s) =>
        s.Length > 0 && char.IsAsciiLetterLower(s[0]) && !s.EndsWith('-') && !s.Contains("--") &&
        s.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '-');

    public override string ToString() => Name;
}

/// <summary>
/// A graph pass. Contract: the pass reads only the model, its options and the context (no global
/// state, no environment, no clock); it reports whether it changed anything and counters; it leaves
/// the IR valid for <see cref="IrVerifier"/> (nodes in topological list order: insert at the right
/// place or call <see cref="Graph.SortTopologically"/>). Errors the user can cause (an option out
/// of range for this model) are thrown as <see cref="PassException"/>.
/// </summary>
/// <remarks>
/// To add a pass: derive, declare each option as a <c>public static readonly PassOption&lt;T&gt;</c> and then
/// <c>public static readonly PassInfo Info</c> listing them, give a public constructor taking <see cref="PassOptions"/>
/// and pass both to the base; read options with <c>Options.Get(handle)</c>. Passes in the
/// OnnxMoe.Passes assembly are found by <see cref="PassRegistry.CreateDefault"/>; others call
/// <see cref="PassRegistry.Register{TPass}"/>.
/// </remarks>
public abstract class Pass
{
    protected Pass(PassInfo info, PassOptions options)
    {
        if (!ReferenceEquals(options.Info, info)) throw new ArgumentException($"options belong to pass {options.Info.Name}, not {info.Name}");
        Options = options;
    }

    /// <summary>The option values; <c>Options.Info</c> is the pass's <see cref="PassInfo"/>.</summary>
    public PassOptions Options { get; }
    public string Name => Options.Info.Name;

    /// <summary>Runs the pass over <paramref name="model"/> in place.</summary>
    public abstract PassResult Run(Model model, PassContext context);

    public override string ToString() => Options.ExplicitValues().Any() ? $"{Name}{{{Options.Format()}}}" : Name;
}

/// <summary>What a pass did: whether the IR changed, and named counters (e.g. <c>nodes-removed</c>,
/// <c>bytes-quantized</c>) in ordinal key order.</summary>
public sealed record PassResult(bool Changed, IReadOnlyDictionary<string, long> Counters)
{
    private static readonly IReadOnlyDictionary<string, long> NoCounters = new SortedDictionary<string, long>(StringComparer.Ordinal);

    public static PassResult Unchanged { get; } = new(false, NoCounters);

    public static PassResult From(bool changed, CounterSet counters) => new(changed, counters.ToSorted());
}

/// <summary>Accumulates named counters for a <see cref="PassResult"/>.</summary>
public sealed class CounterSet
{
    private readonly SortedDictionary<string, long> _counts = new(StringComparer.Ordinal);

    /// <summary>Adds to a counter; adding zero leaves an absent counter absent, so reports list only what happened.</summary>
    public void Add(string name, long amount = 1)
    {
        if (amount != 0 || _counts.ContainsKey(name)) _counts[name] = _counts.GetValueOrDefault(name) + amount;
    }

    public long this[string name] => _counts.GetValueOrDefault(name);

    public bool Any => _counts.Values.Any(v => v != 0);

    internal IReadOnlyDictionary<string, long> ToSorted() => new SortedDictionary<string, long>(_counts, StringComparer.Ordinal);
}

/// <summary>
/// What a pass may use besides the model: cancellation, a log sink, and typed services the caller
/// provides (e.g. calibration scores computed through ORT). One context serves a whole pipeline.
/// </summary>
public sealed class PassContext
{
    private readonly Dictionary<Type, object> _services = new();

    public CancellationToken CancellationToken { get; init; }

    /// <summary>Human-readable progress lines; null discards them.</summary>
    public Action<string>? Log { get; init; }

    public PassContext Set<T>(T service) where T : class
    {
        _services[typeof(T)] = service;
        return this;
    }

    public bool TryGet<T>([NotNullWhen(true)] out T? service) where T : class
    {
        service = _services.TryGetValue(typeof(T), out var s) ? (T)s : null;
        return service != null;
    }

    /// <summary>The service of type T; throws <see cref="PassException"/> naming the pass that needed it when absent.</summary>
    public T Get<T>(string passName) where T : class =>
        TryGet<T>(out var s) ? s : throw new PassException(passName, $"needs {typeof(T).Name}, which this run does not provide");

    public void Info(string message) => Log?.Invoke(message);
}

/// <summary>A pass cannot apply to this model with these options (e.g. a layer index out of range). A user error.</summary>
public sealed class PassException : UserErrorException
{
    public PassException(string passName, string message) : base($"pass {passName}: {message}")
    {
        PassName = passName;
    }

    public string PassName { get; }
}
