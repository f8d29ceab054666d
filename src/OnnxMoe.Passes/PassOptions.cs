using System.Diagnostics.CodeAnalysis;

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

    /// <summary>A copy with <paramref name="option"/> set (a default value clears it).</summary>
    public PassOptions With<T>(PassOption<T> option, T value) where T : notnull => With((PassOption)option, value);

    /// <summary>A copy with one option set from a value read out of text (a pipeline, a recipe), whose CLR type is checked here:
    /// throws <see cref="ArgumentException"/> naming the option for a value of the wrong type (int for Int, double for Float,
    /// int[] for IntList ...) or a string outside its choices. A default value clears the option.</summary>
    public PassOptions With(PassOption option, object value)
    {
        RequireDeclared(option);
        string name = option.Name;
        if (value is long l && option.Type is OptionType.Int && l is >= int.MinValue and <= int.MaxValue) value = (int)l;
        if (value is int i && option.Type is OptionType.Float) value = (double)i;
        if (!OptionValues.HasClrType(option.Type, value))
            throw new ArgumentException($"option {Info.Name}.{name} is {option.Type.Name()}, got a {value.GetType().Name}");
        if (option.Choices != null && value is string s && !option.Choices.Contains(s))
            throw new ArgumentException($"option {Info.Name}.{name} must be one of {string.Join(", ", option.Choices)}, got '{s}'");
        var copy = new Dictionary<string, object>(_values, StringComparer.Ordinal);
        if (OptionValues.AreEqual(value, option.Default)) copy.Remove(name); else copy[name] = value;
        return new PassOptions(Info, copy);
    }

    /// <summary>True when the option was given with a value different from its default.</summary>
    public bool IsExplicit(PassOption option)
    {
        RequireDeclared(option);
        return _values.ContainsKey(option.Name);
    }

    /// <summary>The value given, else the default; throws <see cref="PassException"/> when the option has neither.</summary>
    public T Get<T>(PassOption<T> option) where T : notnull =>
        TryGet(option, out var value) ? value : throw new PassException(Info.Name, $"option '{option.Name}' is required");

    /// <summary>The value given, else the default; false when the option has neither (declared without a default and not given).</summary>
    public bool TryGet<T>(PassOption<T> option, [MaybeNullWhen(false)] out T value) where T : notnull
    {
        RequireDeclared(option);
        if (ValueOf(option) is { } v)
        {
            value = (T)v;
            return true;
        }
        value = default;
        return false;
    }

    private object? ValueOf(PassOption option) => _values.TryGetValue(option.Name, out var v) ? v : option.Default;

    private void RequireDeclared(PassOption option)
    {
        if (!Info.Declares(option)) throw new ArgumentException($"option '{option.Name}' is not declared by pass {Info.Name}");
    }

    /// <summary>(name, value) for each explicit option, in declared order.</summary>
    public IEnumerable<(PassOption Option, object Value)> ExplicitValues() =>
        Info.Options.Where(o => _values.ContainsKey(o.Name)).Select(o => (o, _values[o.Name]));

    /// <summary>(name, value) for every option that has a value, defaults included, in declared order.</summary>
    public IEnumerable<(PassOption Option, object Value)> AllValues() =>
        Info.Options.Select(o => (o, ValueOf(o))).Where(t => t.Item2 != null).Select(t => (t.o, t.Item2!));

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
