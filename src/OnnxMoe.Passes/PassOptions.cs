namespace OnnxMoe.Passes;

/// <summary>
/// The option values of one pass invocation, typed per the pass's <see cref="PassInfo.Options"/>.
/// Immutable. Values equal to the declared default are not stored, so two invocations that mean the
/// same thing compare equal whether or not the default was spelled out.
/// </summary>
public sealed class PassOptions : IEquatable<PassOptions>
{
    private readonly Dictionary<string, object> _values;

    private PassOptions(PassInfo info, Dictionary<string, object> values)
    {
        Info = info;
        _values = values;
    }

    public PassInfo Info { get; }

    /// <summary>Options of <paramref name="info"/> with every value at its default.</summary>
    public static PassOptions Defaults(PassInfo info) => new(info, new(StringComparer.Ordinal));

    /// <summary>Builds options from (name, typed value) pairs; throws <see cref="ArgumentException"/> naming the pass
    /// for an unknown name or a value of the wrong type (int for Int, double for Float, int[] for IntList ...).</summary>
    public static PassOptions Create(PassInfo info, params (string Name, object Value)[] values)
    {
        var o = Defaults(info);
        foreach (var (name, value) in values) o = o.With(name, value);
        return o;
    }

    /// <summary>A copy with one option set (a default value clears it).</summary>
    public PassOptions With(string name, object value)
    {
        var decl = Info.FindOption(name) ?? throw new ArgumentException($"pass {Info.Name} has no option '{name}'");
        if (value is long l && decl.Type is OptionType.Int && l is >= int.MinValue and <= int.MaxValue) value = (int)l;
        if (value is int i && decl.Type is OptionType.Float) value = (double)i;
        if (!OptionValues.HasClrType(decl.Type, value))
            throw new ArgumentException($"option {Info.Name}.{name} is {decl.Type.Name()}, got a {value.GetType().Name}");
        if (decl.Choices != null && value is string s && !decl.Choices.Contains(s))
            throw new ArgumentException($"option {Info.Name}.{name} must be one of {string.Join(", ", decl.Choices)}, got '{s}'");
        var copy = new Dictionary<string, object>(_values, StringComparer.Ordinal);
        if (OptionValues.AreEqual(value, decl.Default)) copy.Remove(name); else copy[name] = value;
        return new PassOptions(Info, copy);
    }

    /// <summary>True when the option has a value (given, or declared with a non-null default).</summary>
    public bool Has(string name) => Get(name) != null;

    /// <summary>True when the option was given with a value different from its default.</summary>
    public bool IsExplicit(string name) => _values.ContainsKey(name);

    /// <summary>The value (typed as documented on <see cref="PassOption"/>), the default, or null when unset.</summary>
    public object? Get(string name)
    {
        var decl = Info.FindOption(name) ?? throw new ArgumentException($"pass {Info.Name} has no option '{name}'");
        return _values.TryGetValue(name, out var v) ? v : decl.Default;
    }

    public int GetInt(string name) => Required<int>(name);
    public double GetFloat(string name) => Required<double>(name);
    public bool GetBool(string name) => Required<bool>(name);
    public string GetString(string name) => Required<string>(name);
    public IReadOnlyList<int> GetIntList(string name) => Required<int[]>(name);
    public IReadOnlyList<IntPair> GetPairList(string name) => Required<IntPair[]>(name);
    public PassCount GetCount(string name) => Required<PassCount>(name);

    private T Required<T>(string name)
    {
        var v = Get(name) ?? throw new PassException(Info.Name, $"option '{name}' is required");
        return v is T t ? t : throw new InvalidOperationException($"option {Info.Name}.{name} is {Info.FindOption(name)!.Type.Name()}, not {typeof(T).Name}");
    }

    /// <summary>(name, value) for each explicit option, in declared order.</summary>
    public IEnumerable<(PassOption Option, object Value)> ExplicitValues() =>
        Info.Options.Where(o => _values.ContainsKey(o.Name)).Select(o => (o, _values[o.Name]));

    /// <summary>(name, value) for every option that has a value, defaults included, in declared order.</summary>
    public IEnumerable<(PassOption Option, object Value)> AllValues() =>
        Info.Options.Select(o => (o, Get(o.Name))).Where(t => t.Item2 != null).Select(t => (t.o, t.Item2!));

    /// <summary>Pipeline text of the options without braces, e.g. <c>blocks=3,7,mode=consecutive</c>.</summary>
    public string Format(bool includeDefaults = false) => string.Join(",",
        (includeDefaults ? AllValues() : ExplicitValues()).Select(t => $"{t.Option.Name}={OptionValues.Format(t.Option.Type, t.Value)}"));

    public bool Equals(PassOptions? other) =>
        other is not null && Info.Name == other.Info.Name && _values.Count == other._values.Count &&
        _values.All(kv => other._values.TryGetValue(kv.Key, out var ov) && OptionValues.AreEqual(kv.Value, ov));

    public override bool Equals(object? obj) => Equals(obj as PassOptions);

    public override int GetHashCode()
    {
        int h = Info.Name.GetHashCode(StringComparison.Ordinal);
        foreach (var (o, v) in ExplicitValues()) h = HashCode.Combine(h, o.Name.GetHashCode(StringComparison.Ordinal), OptionValues.HashOf(v));
        return h;
    }

    public override string ToString() => Format();
}
