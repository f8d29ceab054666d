using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace OnnxMoe.Inference.Evaluation.Tasks;

/// <summary>A template that cannot be parsed or rendered (undefined name, unsupported construct, type error).</summary>
public sealed class TemplateException(string message) : Exception(message);

/// <summary>
/// The subset of Jinja2 that lm-eval task YAMLs use, rendered as lm-eval 0.4.9.1 configures Jinja (lm_eval/utils.py
/// apply_template: StrictUndefined, keep_trailing_newline=True, plus a regex_replace filter): text, {{ expr }},
/// {% if/elif/else/endif %}, {% for x in xs %}...{% endfor %}, {# comments #}, '-' whitespace control. Expressions:
/// names, attribute and item access (a.b, a[0], a['k']), list literals, strings, numbers, True/False/None, + - * / // %
/// ~, comparisons, in / not in, and/or/not, inline x if c else y, Python string/list methods (strip, lstrip, rstrip,
/// lower, upper, replace, split, startswith, endswith, index, count, join, keys, values, items, get) and filters
/// (trim, lower, upper, capitalize, title, replace, int, float, string, length, count, first, last, join, list,
/// default, regex_replace). Anything else is a <see cref="TemplateException"/>.
/// </summary>
public sealed class JinjaTemplate
{
    private readonly List<Node> _nodes;

    private JinjaTemplate(string source, List<Node> nodes)
    {
        Source = source;
        _nodes = nodes;
        SingleExpression = nodes is [Output o] ? o.Expression : null;
    }

    public string Source { get; }

    /// <summary>The expression when the template is exactly one {{ expr }} and nothing else.</summary>
    internal Expr? SingleExpression { get; }

    /// <summary>True when the source has Jinja markup at all.</summary>
    public static bool HasMarkup(string s) => s.Contains("{{") || s.Contains("{%") || s.Contains("{#");

    public static JinjaTemplate Parse(string source)
    {
        var parser = new TemplateParser(source);
        return new JinjaTemplate(source, parser.ParseAll());
    }

    public string Render(IReadOnlyDictionary<string, object?> doc)
    {
        var sb = new StringBuilder();
        var scope = new Scope(doc);
        foreach (var n in _nodes) n.Render(sb, scope);
        return sb.ToString();
    }

    /// <summary>The value of a single-expression template (what Python would repr and literal_eval back), else null.</summary>
    public bool TryEvaluateSingle(IReadOnlyDictionary<string, object?> doc, out object? value)
    {
        value = null;
        if (SingleExpression is null) return false;
        value = SingleExpression.Eval(new Scope(doc));
        return true;
    }

    internal sealed class Scope(IReadOnlyDictionary<string, object?> doc)
    {
        private readonly Dictionary<string, object?> _locals = new(StringComparer.Ordinal);

        public object? Lookup(string name)
        {
            if (_locals.TryGetValue(name, out var v)) return v;
            if (doc.TryGetValue(name, out v)) return v;
            throw new TemplateException($"'{name}' is undefined");
        }

        public void Set(string name, object? value) => _locals[name] = value;

        public bool TryGetLocal(string name, out object? value) => _locals.TryGetValue(name, out value);

        public void Remove(string name) => _locals.Remove(name);
    }

    // ---- nodes ----
    internal abstract class Node
    {
        public abstract void Render(StringBuilder sb, Scope scope);
    }

    private sealed class Text(string text) : Node
    {
        public string Value { get; set; } = text;
        public override void Render(StringBuilder sb, Scope scope) => sb.Append(Value);
    }

    private sealed class Output(Expr e) : Node
    {
        public Expr Expression { get; } = e;
        public override void Render(StringBuilder sb, Scope scope) => sb.Append(DocValues.Str(Expression.Eval(scope)));
    }

    private sealed class If(List<(Expr? Cond, List<Node> Body)> branches) : Node
    {
        public override void Render(StringBuilder sb, Scope scope)
        {
            foreach (var (cond, body) in branches)
                if (cond is null || DocValues.Truthy(cond.Eval(scope)))
                {
                    foreach (var n in body) n.Render(sb, scope);
                    return;
                }
        }
    }

    private sealed class For(string name, Expr source, List<Node> body) : Node
    {
        public override void Render(StringBuilder sb, Scope scope)
        {
            var items = Iterate(source.Eval(scope));
            bool had = scope.TryGetLocal(name, out var previous);
            foreach (var item in items)
            {
                scope.Set(name, item);
                foreach (var n in body) n.Render(sb, scope);
            }
            if (had) scope.Set(name, previous); else scope.Remove(name);
        }
    }

    internal static IEnumerable<object?> Iterate(object? v) => v switch
    {
        List<object?> l => l,
        Dictionary<string, object?> d => d.Keys,
        string s => s.EnumerateRunes().Select(r => (object?)r.ToString()),
        _ => throw new TemplateException($"{DocValues.Repr(v)} is not iterable"),
    };

    // ---- parser of the template structure ----
    private sealed class TemplateParser(string source)
    {
        private int _pos;

        public List<Node> ParseAll()
        {
            var nodes = ParseBlock(out var end);
            if (end is not null) throw new TemplateException($"unexpected {{% {end} %}}");
            return nodes;
        }

        // Parses nodes until an {% elif/else/endif/endfor %} (returned in `end`, with its expression text) or the end.
        private List<Node> ParseBlock(out string? end) => ParseBlock(out end, out _);

        private List<Node> ParseBlock(out string? end, out string endArgs)
        {
            var nodes = new List<Node>();
            end = null;
            endArgs = "";
            while (_pos < source.Length)
            {
                int open = FindOpen(_pos);
                if (open < 0)
                {
                    nodes.Add(new Text(source[_pos..]));
                    _pos = source.Length;
                    break;
                }
                if (open > _pos) nodes.Add(new Text(source[_pos..open]));
                string kind = source.Substring(open, 2);
                string close = kind switch { "{{" => "}}", "{%" => "%}", _ => "#}" };
                int bodyStart = open + 2;
                bool trimLeft = bodyStart < source.Length && source[bodyStart] == '-';
                if (trimLeft) { bodyStart++; TrimLastText(nodes); }
                int closeAt = source.IndexOf(close, bodyStart, StringComparison.Ordinal);
                if (closeAt < 0) throw new TemplateException($"'{kind}' at offset {open} is never closed by '{close}'");
                int bodyEnd = closeAt;
                bool trimRight = bodyEnd > bodyStart && source[bodyEnd - 1] == '-';
                if (trimRight) bodyEnd--;
                string body = source[bodyStart..bodyEnd];
                _pos = closeAt + 2;
                if (trimRight) while (_pos < source.Length && char.IsWhiteSpace(source[_pos])) _pos++;
                if (kind == "{#") continue;
                if (kind == "{{")
                {
                    nodes.Add(new Output(ExpressionParser.Parse(body)));
                    continue;
                }
                var words = body.Trim();
                string keyword = words.Split((char[]?)null, 2, StringSplitOptions.RemoveEmptyEntries) is { Length: > 0 } parts ? parts[0] : "";
                string rest = words.Length > keyword.Length ? words[keyword.Length..].Trim() : "";
                switch (keyword)
                {
                    case "if":
                        {
                            var branches = new List<(Expr?, List<Node>)>();
                            Expr? cond = ExpressionParser.Parse(rest);
                            while (true)
                            {
                                var branch = ParseBlock(out var stop, out var stopArgs);
                                branches.Add((cond, branch));
                                if (stop == "endif") break;
                                if (stop == "elif") { cond = ExpressionParser.Parse(stopArgs); continue; }
                                if (stop == "else") { cond = null; continue; }
                                throw new TemplateException("{% if %} without {% endif %}");
                            }
                            nodes.Add(new If(branches));
                            break;
                        }
                    case "for":
                        {
                            var m = Regex.Match(rest, @"^([A-Za-z_]\w*)\s+in\s+(.+)$", RegexOptions.Singleline);
                            if (!m.Success) throw new TemplateException($"unsupported {{% for {rest} %}} (only 'for name in expression')");
                            var loopBody = ParseBlock(out var stop);
                            if (stop != "endfor") throw new TemplateException("{% for %} without {% endfor %}");
                            nodes.Add(new For(m.Groups[1].Value, ExpressionParser.Parse(m.Groups[2].Value), loopBody));
                            break;
                        }
                    case "elif" or "else" or "endif" or "endfor":
                        end = keyword;
                        endArgs = rest;
                        return nodes;
                    default:
                        throw new TemplateException($"unsupported statement {{% {words} %}}");
                }
            }
            return nodes;
        }

        private int FindOpen(int from)
        {
            int best = -1;
            foreach (var k in new[] { "{{", "{%", "{#" })
            {
                int i = source.IndexOf(k, from, StringComparison.Ordinal);
                if (i >= 0 && (best < 0 || i < best)) best = i;
            }
            return best;
        }

        private static void TrimLastText(List<Node> nodes)
        {
            if (nodes is [.., Text t]) t.Value = t.Value.TrimEnd();
        }
    }

    // ---- expressions ----
    internal abstract class Expr
    {
        public abstract object? Eval(Scope scope);
    }

    private sealed class Literal(object? value) : Expr
    {
        public override object? Eval(Scope scope) => value;
    }

    private sealed class Name(string name) : Expr
    {
        public override object? Eval(Scope scope) => scope.Lookup(name);
    }

    private sealed class ListExpr(List<Expr> items) : Expr
    {
        public override object? Eval(Scope scope) => items.Select(i => i.Eval(scope)).ToList();
    }

    private sealed class Attribute(Expr target, string name) : Expr
    {
        public override object? Eval(Scope scope)
        {
            var v = target.Eval(scope);
            if (v is Dictionary<string, object?> d && d.TryGetValue(name, out var r)) return r;
            throw new TemplateException($"{Describe(v)} has no attribute '{name}'");
        }
    }

    private sealed class Index(Expr target, Expr index) : Expr
    {
        public override object? Eval(Scope scope) => GetItem(target.Eval(scope), index.Eval(scope));
    }

    private sealed class Slice(Expr target, Expr? start, Expr? stop) : Expr
    {
        public override object? Eval(Scope scope)
        {
            var v = target.Eval(scope);
            int? a = start?.Eval(scope) is { } s ? (int)AsLong(s) : null, b = stop?.Eval(scope) is { } e ? (int)AsLong(e) : null;
            (int, int) Range(int n)
            {
                int lo = a ?? 0, hi = b ?? n;
                if (lo < 0) lo = Math.Max(0, n + lo);
                if (hi < 0) hi = Math.Max(0, n + hi);
                lo = Math.Min(lo, n); hi = Math.Min(hi, n);
                return (lo, Math.Max(lo, hi));
            }
            switch (v)
            {
                case string str: { var (lo, hi) = Range(str.Length); return str[lo..hi]; }
                case List<object?> l: { var (lo, hi) = Range(l.Count); return l.GetRange(lo, hi - lo); }
                default: throw new TemplateException($"{Describe(v)} cannot be sliced");
            }
        }
    }

    private sealed class Call(Expr target, string method, List<Expr> args) : Expr
    {
        public override object? Eval(Scope scope) => Methods.Invoke(target.Eval(scope), method, args.Select(a => a.Eval(scope)).ToList());
    }

    private sealed class Filter(Expr target, string name, List<Expr> args) : Expr
    {
        public override object? Eval(Scope scope) => Methods.ApplyFilter(target.Eval(scope), name, args.Select(a => a.Eval(scope)).ToList());
    }

    private sealed class Unary(string op, Expr operand) : Expr
    {
        public override object? Eval(Scope scope)
        {
            var v = operand.Eval(scope);
            return op switch
            {
                "not" => !DocValues.Truthy(v),
                "-" => v is double d ? -d : -AsLong(v),
                _ => v,
            };
        }
    }

    private sealed class Binary(string op, Expr left, Expr right) : Expr
    {
        public override object? Eval(Scope scope)
        {
            if (op == "and") { var l = left.Eval(scope); return DocValues.Truthy(l) ? right.Eval(scope) : l; }
            if (op == "or") { var l = left.Eval(scope); return DocValues.Truthy(l) ? l : right.Eval(scope); }
            var a = left.Eval(scope);
            var b = right.Eval(scope);
            switch (op)
            {
                case "~": return DocValues.Str(a) + DocValues.Str(b);
                case "==": return DocValues.PyEquals(a, b);
                case "!=": return !DocValues.PyEquals(a, b);
                case "in": return Contains(b, a);
                case "not in": return !Contains(b, a);
                case "+":
                    if (a is string sa && b is string sb) return sa + sb;
                    if (a is List<object?> la && b is List<object?> lb) return la.Concat(lb).ToList();
                    return Arithmetic(op, a, b);
                case "*" when a is string s && b is long n: return string.Concat(Enumerable.Repeat(s, (int)Math.Max(0, n)));
                case "<" or ">" or "<=" or ">=":
                    int c = a is string x && b is string y ? string.CompareOrdinal(x, y) : DocValues.ToDouble(a).CompareTo(DocValues.ToDouble(b));
                    return op switch { "<" => c < 0, ">" => c > 0, "<=" => c <= 0, _ => c >= 0 };
                default: return Arithmetic(op, a, b);
            }
        }

        private static object Arithmetic(string op, object? a, object? b)
        {
            if (!DocValues.IsNumber(a) || !DocValues.IsNumber(b))
                throw new TemplateException($"unsupported operand types for {op}: {Describe(a)} and {Describe(b)}");
            if (op == "/") return DocValues.ToDouble(a) / DocValues.ToDouble(b);
            if (a is double || b is double)
            {
                double x = DocValues.ToDouble(a), y = DocValues.ToDouble(b);
                return op switch { "+" => x + y, "-" => x - y, "*" => x * y, "//" => Math.Floor(x / y), _ => x - y * Math.Floor(x / y) };
            }
            long p = AsLong(a), q = AsLong(b);
            if ((op is "//" or "%") && q == 0) throw new TemplateException("division by zero");
            return op switch
            {
                "+" => p + q, "-" => p - q, "*" => p * q,
                "//" => (long)Math.Floor((double)p / q),
                _ => ((p % q) + q) % q,
            };
        }

        private static bool Contains(object? container, object? item) => container switch
        {
            string s when item is string i => s.Contains(i, StringComparison.Ordinal),
            List<object?> l => l.Any(x => DocValues.PyEquals(x, item)),
            Dictionary<string, object?> d => item is string k && d.ContainsKey(k),
            _ => throw new TemplateException($"'in' needs a string, list or dict, got {Describe(container)}"),
        };
    }

    private sealed class Conditional(Expr then, Expr cond, Expr? otherwise) : Expr
    {
        public override object? Eval(Scope scope) =>
            DocValues.Truthy(cond.Eval(scope)) ? then.Eval(scope) : otherwise?.Eval(scope) ?? "";
    }

    internal static string Describe(object? v) => v switch
    {
        null => "None",
        string => "a string",
        long or int => "an int",
        double => "a float",
        bool => "a bool",
        List<object?> => "a list",
        Dictionary<string, object?> => "a dict",
        _ => v.GetType().Name,
    };

    internal static long AsLong(object? v) => v switch
    {
        long l => l, int i => i, bool b => b ? 1 : 0,
        double d when d == Math.Floor(d) => (long)d,
        _ => throw new TemplateException($"expected an integer, got {Describe(v)} {DocValues.Repr(v)}"),
    };

    internal static object? GetItem(object? v, object? index)
    {
        switch (v)
        {
            case List<object?> l:
                {
                    long i = AsLong(index);
                    if (i < 0) i += l.Count;
                    if (i < 0 || i >= l.Count) throw new TemplateException($"list index {DocValues.Repr(index)} out of range (length {l.Count})");
                    return l[(int)i];
                }
            case string s:
                {
                    long i = AsLong(index);
                    if (i < 0) i += s.Length;
                    if (i < 0 || i >= s.Length) throw new TemplateException($"string index {DocValues.Repr(index)} out of range");
                    return s[(int)i].ToString();
                }
            case Dictionary<string, object?> d:
                if (index is string k && d.TryGetValue(k, out var r)) return r;
                throw new TemplateException($"dict has no key {DocValues.Repr(index)}");
            default:
                throw new TemplateException($"{Describe(v)} cannot be indexed");
        }
    }

    // ---- expression parser (precedence as in Jinja) ----
    private sealed class ExpressionParser
    {
        private readonly List<string> _tokens;
        private readonly string _source;
        private int _i;

        private ExpressionParser(string source)
        {
            _source = source;
            _tokens = Tokenize(source);
        }

        public static Expr Parse(string source)
        {
            var p = new ExpressionParser(source);
            if (p._tokens.Count == 0) throw new TemplateException("empty expression");
            var e = p.ParseConditional();
            if (p._i != p._tokens.Count) throw new TemplateException($"unexpected '{p._tokens[p._i]}' in expression '{source.Trim()}'");
            return e;
        }

        private static readonly Regex TokenPattern = new(
            @"\s*(?:(?<s>'(?:[^'\\]|\\.)*'|""(?:[^""\\]|\\.)*"")|(?<n>\d+(?:\.\d+)?)|(?<w>[A-Za-z_]\w*)|(?<o>//|==|!=|<=|>=|[-+*/%~<>()\[\]{}.,:|]))",
            RegexOptions.Singleline);

        private static List<string> Tokenize(string s)
        {
            var tokens = new List<string>();
            int i = 0;
            while (i < s.Length)
            {
                if (char.IsWhiteSpace(s[i])) { i++; continue; }
                var m = TokenPattern.Match(s, i);
                if (!m.Success || m.Index != i || m.Length == 0)
                {
                    // TokenPattern allows leading spaces; skipped above, so the match must start here.
                    throw new TemplateException($"unexpected character '{s[i]}' in expression '{s.Trim()}'");
                }
                tokens.Add(m.Value.Trim());
                i += m.Length;
            }
            return tokens;
        }

        private string? Peek(int ahead = 0) => _i + ahead < _tokens.Count ? _tokens[_i + ahead] : null;

        private bool Accept(string t)
        {
            if (Peek() == t) { _i++; return true; }
            return false;
        }

        private void Expect(string t)
        {
            if (!Accept(t)) throw new TemplateException($"expected '{t}' in expression '{_source.Trim()}'" + (Peek() is { } p ? $", found '{p}'" : ""));
        }

        private Expr ParseConditional()
        {
            var e = ParseOr();
            if (Accept("if"))
            {
                var cond = ParseOr();
                Expr? otherwise = Accept("else") ? ParseConditional() : null;
                return new Conditional(e, cond, otherwise);
            }
            return e;
        }

        private Expr ParseOr()
        {
            var e = ParseAnd();
            while (Accept("or")) e = new Binary("or", e, ParseAnd());
            return e;
        }

        private Expr ParseAnd()
        {
            var e = ParseNot();
            while (Accept("and")) e = new Binary("and", e, ParseNot());
            return e;
        }

        private Expr ParseNot() => Accept("not") ? new Unary("not", ParseNot()) : ParseComparison();

        private Expr ParseComparison()
        {
            var e = ParseConcat();
            while (true)
            {
                var t = Peek();
                if (t is "==" or "!=" or "<" or ">" or "<=" or ">=" or "in") { _i++; e = new Binary(t, e, ParseConcat()); }
                else if (t == "not" && Peek(1) == "in") { _i += 2; e = new Binary("not in", e, ParseConcat()); }
                else return e;
            }
        }

        private Expr ParseConcat()
        {
            var e = ParseAdditive();
            while (Accept("~")) e = new Binary("~", e, ParseAdditive());
            return e;
        }

        private Expr ParseAdditive()
        {
            var e = ParseMultiplicative();
            while (Peek() is "+" or "-") { var op = _tokens[_i++]; e = new Binary(op, e, ParseMultiplicative()); }
            return e;
        }

        private Expr ParseMultiplicative()
        {
            var e = ParseUnary();
            while (Peek() is "*" or "/" or "//" or "%") { var op = _tokens[_i++]; e = new Binary(op, e, ParseUnary()); }
            return e;
        }

        private Expr ParseUnary()
        {
            if (Accept("-")) return new Unary("-", ParseUnary());
            if (Accept("+")) return ParseUnary();
            return ParseFiltered();
        }

        private Expr ParseFiltered()
        {
            var e = ParsePostfix();
            while (Accept("|"))
            {
                var name = Peek() ?? throw new TemplateException("a filter name must follow '|'");
                if (!IsName(name)) throw new TemplateException($"'{name}' is not a filter name");
                _i++;
                var args = Peek() == "(" ? ParseArgs() : [];
                e = new Filter(e, name, args);
            }
            return e;
        }

        private List<Expr> ParseArgs()
        {
            Expect("(");
            var args = new List<Expr>();
            if (Accept(")")) return args;
            do
            {
                if (Peek() is { } n && IsName(n) && Peek(1) == "=" ) throw new TemplateException($"keyword arguments ({n}=...) are not supported");
                args.Add(ParseConditional());
            } while (Accept(","));
            Expect(")");
            return args;
        }

        private Expr ParsePostfix()
        {
            var e = ParsePrimary();
            while (true)
            {
                if (Accept("."))
                {
                    var name = Peek() ?? throw new TemplateException("a name must follow '.'");
                    if (!IsName(name)) throw new TemplateException($"'{name}' is not an attribute name");
                    _i++;
                    e = Peek() == "(" ? new Call(e, name, ParseArgs()) : new Attribute(e, name);
                }
                else if (Accept("["))
                {
                    Expr? start = Peek() == ":" ? null : ParseConditional();
                    if (Accept(":"))
                    {
                        Expr? stop = Peek() == "]" ? null : ParseConditional();
                        Expect("]");
                        e = new Slice(e, start, stop);
                    }
                    else
                    {
                        Expect("]");
                        e = new Index(e, start!);
                    }
                }
                else if (Peek() == "(") throw new TemplateException($"calling functions is not supported in '{_source.Trim()}'");
                else return e;
            }
        }

        private Expr ParsePrimary()
        {
            var t = Peek() ?? throw new TemplateException($"expression '{_source.Trim()}' ends early");
            _i++;
            if (t[0] is '\'' or '"')
            {
                int k = 0;
                return new Literal(DocValues.ParseString(t, ref k));
            }
            if (char.IsDigit(t[0]))
                return new Literal(t.Contains('.') ? (object)double.Parse(t, CultureInfo.InvariantCulture) : long.Parse(t, CultureInfo.InvariantCulture));
            if (t == "(")
            {
                var e = ParseConditional();
                if (Accept(","))
                {
                    var items = new List<Expr> { e };
                    while (Peek() != ")") { items.Add(ParseConditional()); if (!Accept(",")) break; }
                    Expect(")");
                    return new ListExpr(items);
                }
                Expect(")");
                return e;
            }
            if (t == "[")
            {
                var items = new List<Expr>();
                while (Peek() != "]")
                {
                    items.Add(ParseConditional());
                    if (!Accept(",")) break;
                }
                Expect("]");
                return new ListExpr(items);
            }
            if (IsName(t))
                return t switch
                {
                    "True" or "true" => new Literal(true),
                    "False" or "false" => new Literal(false),
                    "None" or "none" => new Literal(null),
                    _ => new Name(t),
                };
            throw new TemplateException($"unexpected '{t}' in expression '{_source.Trim()}'");
        }

        private static bool IsName(string t) => t.Length > 0 && (char.IsLetter(t[0]) || t[0] == '_');
    }

    // ---- methods and filters ----
    private static class Methods
    {
        public static object? Invoke(object? target, string method, List<object?> args)
        {
            switch (target)
            {
                case string s:
                    switch (method)
                    {
                        case "strip": return args.Count == 0 ? s.Trim() : s.Trim(Str(args[0]).ToCharArray());
                        case "lstrip": return args.Count == 0 ? s.TrimStart() : s.TrimStart(Str(args[0]).ToCharArray());
                        case "rstrip": return args.Count == 0 ? s.TrimEnd() : s.TrimEnd(Str(args[0]).ToCharArray());
                        case "lower": return s.ToLowerInvariant();
                        case "upper": return s.ToUpperInvariant();
                        case "capitalize": return Capitalize(s);
                        case "title": return CultureInfo.InvariantCulture.TextInfo.ToTitleCase(s.ToLowerInvariant());
                        case "replace": Arity(method, args, 2); return s.Replace(Str(args[0]), Str(args[1]), StringComparison.Ordinal);
                        case "startswith": Arity(method, args, 1); return s.StartsWith(Str(args[0]), StringComparison.Ordinal);
                        case "endswith": Arity(method, args, 1); return s.EndsWith(Str(args[0]), StringComparison.Ordinal);
                        case "split":
                            return (args.Count == 0 ? s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries) : s.Split(Str(args[0])))
                                .Select(x => (object?)x).ToList();
                        case "join": Arity(method, args, 1); return string.Join(s, Iterate(args[0]).Select(DocValues.Str));
                        case "index" or "find":
                            {
                                Arity(method, args, 1);
                                int i = s.IndexOf(Str(args[0]), StringComparison.Ordinal);
                                if (i < 0 && method == "index") throw new TemplateException($"substring {DocValues.Repr(args[0])} not found");
                                return (long)i;
                            }
                        case "count": Arity(method, args, 1); return (long)Regex.Matches(s, Regex.Escape(Str(args[0]))).Count;
                    }
                    break;
                case List<object?> l:
                    switch (method)
                    {
                        case "index":
                            {
                                Arity(method, args, 1);
                                int i = l.FindIndex(x => DocValues.PyEquals(x, args[0]));
                                if (i < 0) throw new TemplateException($"{DocValues.Repr(args[0])} is not in list {DocValues.Repr(l)}");
                                return (long)i;
                            }
                        case "count": Arity(method, args, 1); return (long)l.Count(x => DocValues.PyEquals(x, args[0]));
                    }
                    break;
                case Dictionary<string, object?> d:
                    switch (method)
                    {
                        case "keys": return d.Keys.Select(k => (object?)k).ToList();
                        case "values": return d.Values.ToList();
                        case "items": return d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList();
                        case "get":
                            return args.Count is 1 or 2 ? (args[0] is string k && d.TryGetValue(k, out var v) ? v : args.Count == 2 ? args[1] : null)
                                : throw new TemplateException("get takes 1 or 2 arguments");
                    }
                    break;
            }
            throw new TemplateException($"unsupported method {Describe(target)}.{method}()");
        }

        public static object? ApplyFilter(object? v, string name, List<object?> args)
        {
            switch (name)
            {
                case "trim": return Str(v).Trim();
                case "lower": return Str(v).ToLowerInvariant();
                case "upper": return Str(v).ToUpperInvariant();
                case "capitalize": return Capitalize(Str(v));
                case "title": return CultureInfo.InvariantCulture.TextInfo.ToTitleCase(Str(v).ToLowerInvariant());
                case "replace": Arity("replace", args, 2); return Str(v).Replace(Str(args[0]), Str(args[1]), StringComparison.Ordinal);
                case "string": return DocValues.Str(v);
                case "int":
                    return v switch
                    {
                        string s => long.TryParse(s.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l) ? l
                            : double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? (long)Math.Truncate(d) : 0L,
                        double d => (long)Math.Truncate(d),
                        _ when DocValues.IsNumber(v) => AsLong(v),
                        _ => 0L,
                    };
                case "float":
                    return v switch
                    {
                        string s => double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d : 0.0,
                        _ when DocValues.IsNumber(v) => DocValues.ToDouble(v),
                        _ => 0.0,
                    };
                case "length" or "count":
                    return v switch
                    {
                        string s => (long)DocValues.PyLength(s),
                        List<object?> l => (long)l.Count,
                        Dictionary<string, object?> d => (long)d.Count,
                        _ => throw new TemplateException($"{Describe(v)} has no length"),
                    };
                case "first": return Iterate(v).FirstOrDefault();
                case "last": return Iterate(v).LastOrDefault();
                case "list": return Iterate(v).ToList();
                case "join": return string.Join(args.Count > 0 ? Str(args[0]) : "", Iterate(v).Select(DocValues.Str));
                case "default" or "d": return v ?? (args.Count > 0 ? args[0] : "");
                case "regex_replace":
                    if (args.Count is < 2 or > 3) throw new TemplateException("regex_replace takes (pattern, replacement[, count])");
                    {
                        // Python's re.sub writes group references as \1; .NET as $1.
                        var repl = Regex.Replace(Str(args[1]).Replace("$", "$$"), @"\\(\d+)", "$${$1}");
                        var re = new Regex(Str(args[0]));
                        int count = args.Count == 3 ? (int)AsLong(args[2]) : 0;
                        return count > 0 ? re.Replace(Str(v), repl, count) : re.Replace(Str(v), repl);
                    }
            }
            throw new TemplateException($"unsupported filter '{name}'");
        }

        private static string Str(object? v) => v is string s ? s : DocValues.Str(v);

        private static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

        private static void Arity(string name, List<object?> args, int n)
        {
            if (args.Count != n) throw new TemplateException($"{name} takes {n} argument(s), got {args.Count}");
        }
    }
}
