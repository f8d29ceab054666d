using System.Globalization;
using System.Text;

namespace OnnxMoe.Passes;

/// <summary>Value type of a pass option; the kebab-case <see cref="OptionTypes.Name"/> appears in help text.</summary>
public enum OptionType
{
    /// <summary>32-bit integer: <c>128</c>, <c>-1</c>.</summary>
    Int,
    /// <summary>Double: <c>0.5</c>, <c>1e-3</c>.</summary>
    Float,
    /// <summary><c>true</c> or <c>false</c>.</summary>
    Bool,
    /// <summary>Bare word (<c>[A-Za-z0-9_.\-/]</c>) or double-quoted with <c>\"</c> and <c>\\</c> escapes.</summary>
    String,
    /// <summary>Comma-separated integers: <c>3,7</c>; <c>[]</c> is the empty list.</summary>
    IntList,
    /// <summary>Comma-separated colon pairs: <c>1:0,2:3</c> (e.g. layer:expert).</summary>
    PairList,
    /// <summary>An absolute count <c>4</c> or a share <c>25%</c> of something the pass knows (e.g. the model's depth).</summary>
    Count,
}

public static class OptionTypes
{
    public static string Name(this OptionType t) => t switch
    {
        OptionType.Int => "int",
        OptionType.Float => "float",
        OptionType.Bool => "bool",
        OptionType.String => "string",
        OptionType.IntList => "int-list",
        OptionType.PairList => "pair-list",
        OptionType.Count => "count",
        _ => t.ToString(),
    };
}

/// <summary>One element of a pair-list option, e.g. layer 2, expert 3 in <c>2:3</c>.</summary>
public readonly record struct IntPair(int First, int Second)
{
    public override string ToString() => $"{First.ToString(CultureInfo.InvariantCulture)}:{Second.ToString(CultureInfo.InvariantCulture)}";
}

/// <summary>
/// A count option value: absolute (<c>4</c>) or a percentage (<c>25%</c>) of a total only the pass knows.
/// </summary>
public readonly record struct PassCount
{
    private PassCount(double amount, bool isPercent)
    {
        Amount = amount;
        IsPercent = isPercent;
    }

    /// <summary>The absolute count, or the percentage (0..100) when <see cref="IsPercent"/>.</summary>
    public double Amount { get; }
    public bool IsPercent { get; }

    public static PassCount Absolute(int count) =>
        count < 0 ? throw new ArgumentOutOfRangeException(nameof(count), "a count cannot be negative") : new(count, false);

    public static PassCount Percent(double percent) =>
        percent is < 0 or > 100 || double.IsNaN(percent)
            ? throw new ArgumentOutOfRangeException(nameof(percent), "a percentage must lie in [0, 100]")
            : new(percent, true);

    /// <summary>The count for a given total: absolute counts as they are (clamped to total),
    /// percentages rounded half away from zero, so 12.5% of 32 is 4 and 12.5% of 4 is 1.</summary>
    public int Resolve(int total)
    {
        if (!IsPercent) return (int)Math.Min(Amount, total);
        return (int)Math.Min(total, Math.Round(total * Amount / 100.0, MidpointRounding.AwayFromZero));
    }

    public override string ToString() => IsPercent
        ? Amount.ToString("R", CultureInfo.InvariantCulture) + "%"
        : ((int)Amount).ToString(CultureInfo.InvariantCulture);
}

/// <summary>
/// Declaration of one pass option, as the parser, the printer and help text see it; a pass reads its value through the
/// typed handle <see cref="PassOption{T}"/> the factories return. <see cref="Default"/> null means "unset unless given"
/// (the pass decides what absence means, e.g. <c>blocks</c> vs <c>n</c>). Values are typed as:
/// Int int, Float double, Bool bool, String string, IntList int[], PairList IntPair[], Count PassCount.
/// </summary>
public abstract class PassOption
{
    private protected PassOption(string name, OptionType type, object? defaultValue, string help, IReadOnlyList<string>? choices)
    {
        if (!PassInfo.IsKebabCase(name)) throw new ArgumentException($"option name '{name}' is not kebab-case");
        Name = name;
        Type = type;
        Default = defaultValue;
        Help = help;
        Choices = choices;
        if (choices != null && defaultValue is string d && !choices.Contains(d))
            throw new ArgumentException($"default '{d}' of option {name} is not one of its choices");
    }

    public string Name { get; }
    public OptionType Type { get; }
    public object? Default { get; }
    public string Help { get; }
    /// <summary>For string options: the only accepted values, or null for any string.</summary>
    public IReadOnlyList<string>? Choices { get; }

    public static PassOption<int> Int(string name, int? defaultValue, string help) => new(name, OptionType.Int, defaultValue, help, null);
    public static PassOption<double> Float(string name, double? defaultValue, string help) => new(name, OptionType.Float, defaultValue, help, null);
    public static PassOption<bool> Bool(string name, bool defaultValue, string help) => new(name, OptionType.Bool, defaultValue, help, null);
    public static PassOption<string> String(string name, string? defaultValue, string help, params string[] choices) =>
        new(name, OptionType.String, defaultValue, help, choices.Length == 0 ? null : choices);
    public static PassOption<int[]> IntList(string name, string help) => new(name, OptionType.IntList, null, help, null);
    public static PassOption<IntPair[]> PairList(string name, string help) => new(name, OptionType.PairList, null, help, null);
    public static PassOption<PassCount> Count(string name, PassCount? defaultValue, string help) => new(name, OptionType.Count, defaultValue, help, null);

    /// <summary>Help line: <c>name: type = default  help</c> (choices listed for strings).</summary>
    public string Describe()
    {
        var sb = new StringBuilder();
        sb.Append(Name).Append(": ").Append(Type.Name());
        if (Choices != null) sb.Append(" (").Append(string.Join("|", Choices)).Append(')');
        if (Default != null) sb.Append(" = ").Append(OptionValues.Format(Type, Default));
        sb.Append("  ").Append(Help);
        return sb.ToString();
    }

    public override string ToString() => Describe();
}

/// <summary>
/// A pass option whose values are <typeparamref name="T"/>: declared once as a static field of the pass, listed in its
/// <see cref="PassInfo"/>, and the key the pass reads its value with (<see cref="PassOptions.Get{T}"/>). Options are
/// identified by the declaration object, so a handle reads only the options of a pass that lists it. List values
/// (int[], IntPair[]) are shared, not copied: treat them as read-only.
/// </summary>
public sealed class PassOption<T> : PassOption where T : notnull
{
    internal PassOption(string name, OptionType type, object? defaultValue, string help, IReadOnlyList<string>? choices)
        : base(name, type, defaultValue, help, choices)
    {
    }
}

/// <summary>Parsing, printing and comparing typed option values.</summary>
public static class OptionValues
{
    /// <summary>Canonical text of a value (the form the pipeline printer emits).</summary>
    public static string Format(OptionType type, object value) => type switch
    {
        OptionType.Int => ((int)value).ToString(CultureInfo.InvariantCulture),
        OptionType.Float => FormatFloat((double)value),
        OptionType.Bool => (bool)value ? "true" : "false",
        OptionType.String => FormatString((string)value),
        OptionType.IntList => ((int[])value).Length == 0 ? "[]" : string.Join(",", ((int[])value).Select(i => i.ToString(CultureInfo.InvariantCulture))),
        OptionType.PairList => ((IntPair[])value).Length == 0 ? "[]" : string.Join(",", (IntPair[])value),
        OptionType.Count => ((PassCount)value).ToString(),
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    private static string FormatFloat(double d)
    {
        var s = d.ToString("R", CultureInfo.InvariantCulture);
        // Keep floats recognisable as floats in the text ("1" would read as an int).
        return s.Contains('.') || s.Contains('E') || s.Contains('N') || s.Contains('I') ? s : s + ".0";
    }

    internal static bool IsBareChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '-' or '/';

    private static string FormatString(string s)
    {
        if (s.Length > 0 && s.All(IsBareChar)) return s;
        var sb = new StringBuilder("\"");
        foreach (var c in s)
        {
            if (c is '"' or '\\') sb.Append('\\');
            sb.Append(c);
        }
        return sb.Append('"').ToString();
    }

    /// <summary>Parses one scalar token (not a list) of the given type; null with <paramref name="error"/> on failure.</summary>
    public static object? ParseScalar(OptionType type, string token, out string? error)
    {
        error = null;
        var inv = CultureInfo.InvariantCulture;
        switch (type)
        {
            case OptionType.Int:
                if (int.TryParse(token, NumberStyles.AllowLeadingSign, inv, out int i)) return i;
                error = $"'{token}' is not an int";
                return null;
            case OptionType.Float:
                if (double.TryParse(token, NumberStyles.Float, inv, out double d) && double.IsFinite(d)) return d;
                error = $"'{token}' is not a float";
                return null;
            case OptionType.Bool:
                if (token == "true") return true;
                if (token == "false") return false;
                error = $"'{token}' is not a bool (true or false)";
                return null;
            case OptionType.String:
                return token;
            case OptionType.Count:
                if (token.EndsWith('%'))
                {
                    var p = token[..^1];
                    if (double.TryParse(p, NumberStyles.AllowDecimalPoint, inv, out double pct) && pct is >= 0 and <= 100)
                        return PassCount.Percent(pct);
                    error = $"'{token}' is not a percentage between 0% and 100%";
                    return null;
                }
                if (int.TryParse(token, NumberStyles.None, inv, out int n)) return PassCount.Absolute(n);
                error = $"'{token}' is not a count (a non-negative int like 4 or a percentage like 25%)";
                return null;
            case OptionType.IntList:
                if (int.TryParse(token, NumberStyles.AllowLeadingSign, inv, out int e)) return e;
                error = $"'{token}' is not an int list element";
                return null;
            case OptionType.PairList:
                {
                    int colon = token.IndexOf(':');
                    if (colon > 0 && int.TryParse(token[..colon], NumberStyles.AllowLeadingSign, inv, out int a)
                                  && int.TryParse(token[(colon + 1)..], NumberStyles.AllowLeadingSign, inv, out int b))
                        return new IntPair(a, b);
                    error = $"'{token}' is not a pair like 2:3";
                    return null;
                }
            default:
                throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    /// <summary>Structural equality of two option values of the same type.</summary>
    public static bool AreEqual(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (null, _) or (_, null) => false,
        (int[] x, int[] y) => x.AsSpan().SequenceEqual(y),
        (IntPair[] x, IntPair[] y) => x.AsSpan().SequenceEqual(y),
        _ => a.Equals(b),
    };

    internal static int HashOf(object? v) => v switch
    {
        null => 0,
        int[] x => x.Aggregate(17, (h, i) => h * 31 + i),
        IntPair[] x => x.Aggregate(17, (h, p) => h * 31 + p.GetHashCode()),
        _ => v.GetHashCode(),
    };

    /// <summary>Checks that <paramref name="value"/> has the CLR type the option type demands.</summary>
    internal static bool HasClrType(OptionType type, object value) => type switch
    {
        OptionType.Int => value is int,
        OptionType.Float => value is double,
        OptionType.Bool => value is bool,
        OptionType.String => value is string,
        OptionType.IntList => value is int[],
        OptionType.PairList => value is IntPair[],
        OptionType.Count => value is PassCount,
        _ => false,
    };
}
