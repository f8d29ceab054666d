using System.Reflection;

namespace OnnxMoe.Passes;

/// <summary>A registered pass or alias. An alias has no factory and expands to <see cref="Expansion"/>.</summary>
public sealed class PassEntry
{
    internal PassEntry(PassInfo info, Func<PassOptions, Pass>? factory, PassPipeline? expansion)
    {
        Info = info;
        Factory = factory;
        Expansion = expansion;
    }

    public PassInfo Info { get; }
    public string Name => Info.Name;
    public Func<PassOptions, Pass>? Factory { get; }
    /// <summary>For aliases (e.g. <c>cleanup</c>), the pipeline they stand for; null for passes.</summary>
    public PassPipeline? Expansion { get; }
    public bool IsAlias => Expansion != null;

    /// <summary>Help text: the pass's <see cref="PassInfo.Describe"/>, or for an alias what it expands to.</summary>
    public string Describe() => IsAlias ? $"{Name}: {Info.Summary}\n  alias of: {Expansion}" : Info.Describe();

    public override string ToString() => Name;
}

/// <summary>
/// Passes by name. An instance, not a global: build one with <see cref="CreateDefault"/> and add the
/// passes that live elsewhere with <see cref="Register{TPass}"/> or <see cref="Register(PassInfo, Func{PassOptions, Pass})"/>.
/// </summary>
public sealed class PassRegistry
{
    private readonly SortedDictionary<string, PassEntry> _entries = new(StringComparer.Ordinal);

    /// <summary>Entries in name order.</summary>
    public IEnumerable<PassEntry> Entries => _entries.Values;

    public IEnumerable<string> Names => _entries.Keys;

    /// <summary>Every pass found in the OnnxMoe.Passes assembly, plus the <c>cleanup</c> alias.</summary>
    public static PassRegistry CreateDefault()
    {
        var r = new PassRegistry();
        r.RegisterAssembly(typeof(PassRegistry).Assembly);
        r.RegisterAlias("cleanup", "Removes dead nodes and unused initializers, deduplicates constants, sorts topologically.",
            "remove-unused,dedupe-constants,topo-sort");
        return r;
    }

    public PassEntry Register(PassInfo info, Func<PassOptions, Pass> factory) => Add(new PassEntry(info, factory, null));

    /// <summary>Registers a pass type following the <see cref="Pass"/> convention (static Info, ctor(PassOptions)).</summary>
    public PassEntry Register<TPass>() where TPass : Pass => Register(typeof(TPass));

    /// <summary>Registers every concrete <see cref="Pass"/> in <paramref name="assembly"/> that follows the convention.</summary>
    public void RegisterAssembly(Assembly assembly)
    {
        foreach (var t in assembly.GetTypes().Where(t => t.IsSubclassOf(typeof(Pass)) && !t.IsAbstract && t.IsPublic).OrderBy(t => t.FullName, StringComparer.Ordinal))
            Register(t);
    }

    private PassEntry Register(Type type)
    {
        var infoField = type.GetField("Info", BindingFlags.Public | BindingFlags.Static);
        var ctor = type.GetConstructor([typeof(PassOptions)]);
        if (infoField?.GetValue(null) is not PassInfo info || ctor == null)
            throw new ArgumentException($"pass type {type.Name} needs 'public static readonly PassInfo Info' and a public constructor taking PassOptions");
        return Register(info, o =>
        {
            try
            {
                return (Pass)ctor.Invoke([o]);
            }
            catch (System.Reflection.TargetInvocationException e) when (e.InnerException != null)
            {
                // A constructor that rejects its options throws the pass's own error, not reflection's wrapper.
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerException);
                throw;
            }
        });
    }

    /// <summary>Registers a name that stands for a pipeline of already registered passes. Aliases take no options.</summary>
    public PassEntry RegisterAlias(string name, string summary, string pipeline) =>
        Add(new PassEntry(new PassInfo(name, summary), null, PassPipeline.Parse(pipeline, this)));

    private PassEntry Add(PassEntry e)
    {
        if (!_entries.TryAdd(e.Name, e)) throw new ArgumentException($"a pass named {e.Name} is already registered");
        return e;
    }

    public PassEntry? Find(string name) => _entries.GetValueOrDefault(name);

    /// <summary>The registered name closest to <paramref name="name"/> (edit distance), if any is close enough to be a typo.</summary>
    public string? Suggest(string name) => NameSuggestion.Closest(name, _entries.Keys);

    /// <summary>Help for every entry, in name order, separated by blank lines.</summary>
    public string DescribeAll() => string.Join("\n\n", Entries.Select(e => e.Describe()));
}

/// <summary>Closest-name suggestions for typos.</summary>
public static class NameSuggestion
{
    public static string? Closest(string name, IEnumerable<string> candidates)
    {
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (var c in candidates.OrderBy(c => c, StringComparer.Ordinal))
        {
            int d = Distance(name, c);
            if (d < bestDistance) (best, bestDistance) = (c, d);
        }
        // A suggestion further away than a third of the name (at least 2 edits) is noise, except for prefixes.
        return best != null && (bestDistance <= Math.Max(2, name.Length / 3) || best.StartsWith(name, StringComparison.Ordinal)) ? best : null;
    }

    /// <summary>Optimal string alignment distance (Levenshtein plus adjacent transpositions).</summary>
    public static int Distance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
            for (int j = 1; j <= b.Length; j++)
            {
                int cost = a[i - 1] == b[j - 1] ? 0 : 1;
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + cost);
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i, j] = Math.Min(d[i, j], d[i - 2, j - 2] + 1);
            }
        return d[a.Length, b.Length];
    }
}
