using OnnxMoe.Ir;

namespace OnnxMoe.Passes;

/// <summary>One pipeline element: a registered pass (or alias) with its options.</summary>
public sealed class PipelineStep : IEquatable<PipelineStep>
{
    public PipelineStep(PassEntry entry, PassOptions options)
    {
        if (!ReferenceEquals(entry.Info, options.Info)) throw new ArgumentException($"options are for {options.Info.Name}, not {entry.Name}");
        Entry = entry;
        Options = options;
    }

    public PassEntry Entry { get; }
    public PassOptions Options { get; }
    public string Name => Entry.Name;

    /// <summary>The passes this step runs, in order (an alias expands to its passes).</summary>
    public IEnumerable<Pass> CreatePasses() => Entry.Expansion is { } expansion
        ? expansion.Steps.SelectMany(s => s.CreatePasses())
        : [Entry.Factory!(Options)];

    public string Format(bool includeDefaults)
    {
        var opts = Options.Format(includeDefaults);
        return opts.Length == 0 ? Name : $"{Name}{{{opts}}}";
    }

    public bool Equals(PipelineStep? other) => other is not null && Name == other.Name && Options.Equals(other.Options);
    public override bool Equals(object? obj) => Equals(obj as PipelineStep);
    public override int GetHashCode() => Options.GetHashCode();
    public override string ToString() => Format(includeDefaults: false);
}

/// <summary>
/// A textual pass pipeline such as <c>drop-blocks{blocks=3,7},quantize-int4{block-size=128}</c>.
/// <para>Grammar: steps separated by commas; a step is a pass name optionally followed by
/// <c>{option=value,...}</c>; whitespace between tokens is ignored. Values: ints, floats, <c>true</c>/<c>false</c>,
/// bare or double-quoted strings, counts (<c>4</c> or <c>25%</c>), int lists <c>3,7</c> and pair lists
/// <c>1:0,2:3</c> (a comma followed by a number continues the list; <c>[...]</c> brackets are accepted and
/// <c>[]</c> is the empty list).</para>
/// <para>Printing is canonical: options in declared order, options at their default value omitted
/// (<see cref="Format"/> with includeDefaults spells every value out, for records that must not depend
/// on today's defaults). <c>Parse(p.ToString()) == p</c> for every pipeline.</para>
/// </summary>
public sealed class PassPipeline : IEquatable<PassPipeline>
{
    public PassPipeline(IEnumerable<PipelineStep> steps) => Steps = steps.ToArray();

    public static PassPipeline Empty { get; } = new([]);

    public IReadOnlyList<PipelineStep> Steps { get; }

    /// <summary>Parses <paramref name="text"/> against <paramref name="registry"/>; throws <see cref="PipelineException"/>.</summary>
    public static PassPipeline Parse(string text, PassRegistry registry) => new PipelineParser(text, registry).ParsePipeline();

    /// <summary>Both pipelines, one after the other.</summary>
    public PassPipeline Concat(PassPipeline other) => new(Steps.Concat(other.Steps));

    /// <summary>The passes to run, aliases expanded.</summary>
    public IEnumerable<Pass> CreatePasses() => Steps.SelectMany(s => s.CreatePasses());

    public string Format(bool includeDefaults) => string.Join(",", Steps.Select(s => s.Format(includeDefaults)));

    public override string ToString() => Format(includeDefaults: false);

    public bool Equals(PassPipeline? other) => other is not null && Steps.SequenceEqual(other.Steps);
    public override bool Equals(object? obj) => Equals(obj as PassPipeline);
    public override int GetHashCode() => Steps.Aggregate(17, (h, s) => h * 31 + s.GetHashCode());
}

/// <summary>A malformed pipeline: <see cref="Position"/> is the 0-based character index of the problem. A user error.</summary>
public sealed class PipelineException : UserErrorException
{
    public PipelineException(string problem, string pipeline, int position)
        : base(Compose(problem, pipeline, position))
    {
        Problem = problem;
        Pipeline = pipeline;
        Position = position;
    }

    public string Problem { get; }
    public string Pipeline { get; }
    public int Position { get; }

    private static string Compose(string problem, string pipeline, int position) =>
        $"pipeline error at column {position + 1}: {problem}\n  {OneLine(pipeline)}\n  {new string(' ', position)}^";

    // Control characters (a newline in a pasted pipeline) would break the caret line; one space each keeps the columns.
    private static string OneLine(string text) => string.Create(text.Length, text, (span, t) =>
    {
        for (int i = 0; i < t.Length; i++) span[i] = char.IsControl(t[i]) ? ' ' : t[i];
    });
}

internal sealed class PipelineParser
{
    private readonly string _text;
    private readonly PassRegistry _registry;
    private int _pos;

    public PipelineParser(string text, PassRegistry registry)
    {
        _text = text;
        _registry = registry;
    }

    private PipelineException Error(string problem, int? at = null) => new(problem, _text, at ?? _pos);

    private char Peek => _pos < _text.Length ? _text[_pos] : '\0';
    private bool AtEnd => _pos >= _text.Length;

    private void SkipSpace()
    {
        while (!AtEnd && char.IsWhiteSpace(_text[_pos])) _pos++;
    }

    private static bool IsNameChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '-' or '_';

    private string ReadName(string what)
    {
        int start = _pos;
        while (!AtEnd && IsNameChar(_text[_pos])) _pos++;
        if (_pos == start)
            throw Error(AtEnd ? $"expected a {what} at the end of the pipeline" : $"expected a {what}, found '{Peek}'");
        return _text[start.._pos];
    }

    public PassPipeline ParsePipeline()
    {
        var steps = new List<PipelineStep>();
        SkipSpace();
        if (AtEnd) return PassPipeline.Empty;
        while (true)
        {
            steps.Add(ParseStep());
            SkipSpace();
            if (AtEnd) break;
            if (Peek != ',') throw Error($"expected ',' between passes or '{{' to start options, found '{Peek}'");
            _pos++;
            SkipSpace();
        }
        return new PassPipeline(steps);
    }

    private PipelineStep ParseStep()
    {
        int nameAt = _pos;
        var name = ReadName("pass name");
        var entry = _registry.Find(name);
        if (entry == null)
        {
            var hint = _registry.Suggest(name) is { } s ? $" (did you mean '{s}'?)" : $" (known passes: {string.Join(", ", _registry.Names)})";
            throw Error($"unknown pass '{name}'{hint}", nameAt);
        }
        var options = PassOptions.Defaults(entry.Info);
        SkipSpace();
        if (Peek != '{') return new PipelineStep(entry, options);

        int openAt = _pos++;
        if (entry.IsAlias)
            throw Error($"'{name}' is an alias of {entry.Expansion} and takes no options", openAt);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        SkipSpace();
        if (Peek == '}')
        {
            _pos++;
            return new PipelineStep(entry, options);
        }
        while (true)
        {
            SkipSpace();
            if (AtEnd) throw Error($"missing '}}' to close the options of {name} opened at column {openAt + 1}");
            int optAt = _pos;
            var optName = ReadName($"option name of {name}");
            var decl = entry.Info.FindOption(optName);
            if (decl == null)
            {
                var known = entry.Info.Options.Select(o => o.Name).ToArray();
                var hint = NameSuggestion.Closest(optName, known) is { } s ? $" (did you mean '{s}'?)"
                    : known.Length == 0 ? $" ({name} takes no options)" : $" (options: {string.Join(", ", known)})";
                throw Error($"unknown option '{optName}' for pass {name}{hint}", optAt);
            }
            if (!seen.Add(optName)) throw Error($"option '{optName}' of {name} is given twice", optAt);
            SkipSpace();
            if (Peek != '=') throw Error(AtEnd ? $"missing '=' after option '{optName}'" : $"expected '=' after option '{optName}', found '{Peek}'");
            _pos++;
            SkipSpace();
            var value = ParseValue(decl, name);
            try
            {
                options = options.With(decl, value);
            }
            catch (ArgumentException e)
            {
                throw Error(e.Message, optAt);
            }
            SkipSpace();
            if (AtEnd) throw Error($"missing '}}' to close the options of {name} opened at column {openAt + 1}");
            if (Peek == '}')
            {
                _pos++;
                return new PipelineStep(entry, options);
            }
            if (Peek != ',') throw Error($"expected ',' or '}}' after the value of '{optName}', found '{Peek}'");
            _pos++;
        }
    }

    private object ParseValue(PassOption decl, string passName)
    {
        if (decl.Type is OptionType.IntList or OptionType.PairList) return ParseList(decl, passName);
        int at = _pos;
        bool quoted = decl.Type == OptionType.String && Peek == '"';
        string token = quoted ? ReadQuoted() : ReadToken();
        if (token.Length == 0 && !quoted)
            throw Error(AtEnd ? $"missing value for option '{decl.Name}' of {passName}" : $"expected a value for {decl.Type.Name()} option '{decl.Name}', found '{Peek}'", at);
        var v = OptionValues.ParseScalar(decl.Type, token, out var error);
        if (v == null) throw Error($"bad value for option '{decl.Name}' of {passName}: {error}", at);
        if (decl.Choices != null && !decl.Choices.Contains((string)v))
        {
            var hint = NameSuggestion.Closest((string)v, decl.Choices) is { } s ? $" (did you mean '{s}'?)" : "";
            throw Error($"bad value for option '{decl.Name}' of {passName}: '{v}' is not one of {string.Join(", ", decl.Choices)}{hint}", at);
        }
        return v;
    }

    private object ParseList(PassOption decl, string passName)
    {
        bool bracketed = Peek == '[';
        int openAt = _pos;
        if (bracketed)
        {
            _pos++;
            SkipSpace();
        }
        var ints = new List<int>();
        var pairs = new List<IntPair>();
        if (!(bracketed && Peek == ']'))
        {
            while (true)
            {
                int at = _pos;
                var token = ReadToken();
                if (token.Length == 0)
                    throw Error(AtEnd ? $"missing value for option '{decl.Name}' of {passName}" : $"expected an element of {decl.Type.Name()} option '{decl.Name}', found '{Peek}'", at);
                var v = OptionValues.ParseScalar(decl.Type, token, out var error);
                if (v == null) throw Error($"bad value for option '{decl.Name}' of {passName}: {error}", at);
                if (v is int i) ints.Add(i); else pairs.Add((IntPair)v);
                int save = _pos;
                SkipSpace();
                // A comma continues the list when a number follows; otherwise it separates options.
                if (Peek == ',')
                {
                    _pos++;
                    SkipSpace();
                    if (char.IsAsciiDigit(Peek) || Peek is '-' or '+') continue;
                    if (bracketed) continue;
                }
                _pos = save;
                break;
            }
            SkipSpace();
        }
        if (bracketed)
        {
            if (Peek != ']') throw Error($"missing ']' to close the list opened at column {openAt + 1}");
            _pos++;
        }
        return decl.Type == OptionType.IntList ? ints.ToArray() : pairs.ToArray();
    }

    /// <summary>A scalar token: everything up to a separator.</summary>
    private string ReadToken()
    {
        int start = _pos;
        while (!AtEnd && _text[_pos] is not (',' or '{' or '}' or '[' or ']' or '=' or '"') && !char.IsWhiteSpace(_text[_pos])) _pos++;
        return _text[start.._pos];
    }

    private string ReadQuoted()
    {
        int openAt = _pos++;
        var sb = new System.Text.StringBuilder();
        while (true)
        {
            if (AtEnd) throw Error($"unterminated string opened at column {openAt + 1}", openAt);
            char c = _text[_pos++];
            if (c == '"') return sb.ToString();
            if (c == '\\')
            {
                if (AtEnd) throw Error($"unterminated string opened at column {openAt + 1}", openAt);
                c = _text[_pos++];
                if (c is not ('"' or '\\')) throw Error($"unknown escape '\\{c}' (only \\\" and \\\\)", _pos - 2);
            }
            sb.Append(c);
        }
    }
}
