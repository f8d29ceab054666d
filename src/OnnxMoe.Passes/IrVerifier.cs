using OnnxMoe.Ir;

namespace OnnxMoe.Passes;

/// <summary>
/// Structural invariants of the IR, checked between passes:
/// every node input is a graph input, an initializer, an output of an earlier node (list order must
/// be topological unless <see cref="RequireTopologicalOrder"/> is off) or a value of an enclosing
/// graph; use lists match node inputs and point only at nodes still in the model; value names and
/// node names are unique within a graph; initializers carry data; outputs name their producer;
/// graph outputs are defined; values that are read have names.
/// </summary>
public sealed class IrVerifier
{
    public bool RequireTopologicalOrder { get; init; } = true;

    /// <summary>Problems reported before giving up.</summary>
    public int MaxProblems { get; init; } = 20;

    /// <summary>Throws, listing the problems, if any: <see cref="IrVerificationException"/> (a pass bug) when
    /// <paramref name="afterPass"/> names the pass that just ran, <see cref="InvalidModelException"/> (a user error) when it is null.</summary>
    public void Verify(Model model, string? afterPass = null)
    {
        var problems = Check(model);
        if (problems.Count == 0) return;
        if (afterPass == null) throw new InvalidModelException(problems);
        throw new IrVerificationException(afterPass, problems);
    }

    /// <summary>All problems found (at most <see cref="MaxProblems"/>), in graph order; empty when valid.</summary>
    public IReadOnlyList<string> Check(Model model)
    {
        var run = new Run(this, model);
        try
        {
            run.Graph(model.Graph, "main graph", new HashSet<Value>(ReferenceEqualityComparer.Instance));
            foreach (var f in model.Functions)
                run.Graph(f.Body, $"function {f.Domain}::{f.Name}", new HashSet<Value>(ReferenceEqualityComparer.Instance));
        }
        catch (TooManyProblems)
        {
        }
        return run.Problems;
    }

    private sealed class TooManyProblems : Exception;

    private sealed class Run
    {
        private readonly IrVerifier _options;
        private readonly HashSet<Node> _modelNodes = new(ReferenceEqualityComparer.Instance);
        public readonly List<string> Problems = new();

        public Run(IrVerifier options, Model model)
        {
            _options = options;
            foreach (var n in model.Graph.AllNodes()) _modelNodes.Add(n);
            foreach (var f in model.Functions)
                foreach (var n in f.Body.AllNodes()) _modelNodes.Add(n);
        }

        private void Problem(string where, string what)
        {
            Problems.Add($"{where}: {what}");
            if (Problems.Count >= _options.MaxProblems) throw new TooManyProblems();
        }

        private static string Describe(Node n) => string.IsNullOrEmpty(n.Name) ? $"unnamed {n.OpType} node" : $"node {n.Name} ({n.OpType})";

        public void Graph(Graph g, string where, HashSet<Value> outer)
        {
            var defined = new HashSet<Value>(ReferenceEqualityComparer.Instance);
            var definedInOrder = new List<Value>();
            var valueNames = new Dictionary<string, Value>(StringComparer.Ordinal);
            var nodeNames = new HashSet<string>(StringComparer.Ordinal);

            void Define(Value v, string role)
            {
                if (!defined.Add(v)) return; // an initializer that is also an input (IR < 4 style) is one value
                definedInOrder.Add(v);
                if (v.Name.Length == 0) return;
                if (valueNames.TryGetValue(v.Name, out var other) && !ReferenceEquals(other, v))
                    Problem(where, $"value name '{v.Name}' is used by two different values ({role})");
                else valueNames[v.Name] = v;
            }

            foreach (var v in g.Inputs)
            {
                if (v.Producer != null) Problem(where, $"graph input {v.Name} has a producer {Describe(v.Producer)}");
                Define(v, "graph input");
            }
            foreach (var v in g.Initializers)
            {
                if (v.ConstValue == null) Problem(where, $"initializer {v.Name} has no data");
                if (v.Producer != null) Problem(where, $"initializer {v.Name} has a producer {Describe(v.Producer)}");
                if (v.Name.Length == 0) Problem(where, "an initializer has no name");
                Define(v, "initializer");
            }
            var nodes = g.Nodes.ToList();
            if (!_options.RequireTopologicalOrder)
                foreach (var n in nodes)
                    foreach (var o in n.Outputs) Define(o, "node output");

            foreach (var n in nodes)
            {
                if (!ReferenceEquals(n.Graph, g)) Problem(where, $"{Describe(n)} is listed in the graph but names another owner");
                if (n.Name.Length > 0 && !nodeNames.Add(n.Name)) Problem(where, $"node name '{n.Name}' is used twice");
                for (int i = 0; i < n.Inputs.Count; i++)
                {
                    var v = n.Inputs[i];
                    if (v == null) continue;
                    int useCount = v.Uses.Count(u => ReferenceEquals(u.Node, n) && u.Index == i);
                    if (useCount != 1) Problem(where, $"{Describe(n)} input {i} ({v.Name}): the value's use list has this use {useCount} times");
                    if (v.Name.Length == 0) Problem(where, $"{Describe(n)} input {i} reads a value with no name");
                    if (defined.Contains(v) || outer.Contains(v)) continue;
                    if (v.Producer is { } p && ReferenceEquals(p.Graph, g))
                        Problem(where, $"{Describe(n)} reads {v.Name} before {Describe(p)} produces it (nodes not in topological order)");
                    else if (v.Producer is { } q && !_modelNodes.Contains(q))
                        Problem(where, $"{Describe(n)} reads {v.Name}, produced by {Describe(q)} which is no longer in the model");
                    else
                        Problem(where, $"{Describe(n)} reads {v.Name}, which is not defined in this graph or an enclosing one");
                }
                foreach (var a in n.Attributes)
                {
                    var subs = a.Subgraphs.ToList();
                    if (subs.Count == 0) continue;
                    var visible = new HashSet<Value>(outer, ReferenceEqualityComparer.Instance);
                    visible.UnionWith(defined);
                    for (int k = 0; k < subs.Count; k++)
                        Graph(subs[k], $"{where} > {Describe(n)} attribute {a.Name}{(subs.Count > 1 ? $"[{k}]" : "")}", visible);
                }
                for (int j = 0; j < n.Outputs.Count; j++)
                {
                    var o = n.Outputs[j];
                    if (!ReferenceEquals(o.Producer, n) || o.OutputIndex != j)
                        Problem(where, $"{Describe(n)} output {j} ({o.Name}) names another producer or index");
                    if (_options.RequireTopologicalOrder) Define(o, "node output");
                }
            }

            foreach (var v in g.Outputs)
            {
                if (v.Name.Length == 0) Problem(where, "a graph output has no name");
                if (!defined.Contains(v) && !outer.Contains(v))
                    Problem(where, v.Producer is { } p && !_modelNodes.Contains(p)
                        ? $"graph output {v.Name} is produced by {Describe(p)} which is no longer in the model"
                        : $"graph output {v.Name} is not defined in this graph");
            }

            foreach (var v in definedInOrder)
                foreach (var u in v.Uses)
                {
                    if (!_modelNodes.Contains(u.Node))
                        Problem(where, $"value {v.Name} lists a use by {Describe(u.Node)} which is no longer in the model");
                    else if (u.Index >= u.Node.Inputs.Count || !ReferenceEquals(u.Node.Inputs[u.Index], v))
                        Problem(where, $"value {v.Name} lists a use by {Describe(u.Node)} input {u.Index}, which reads something else");
                }
        }
    }
}

/// <summary>Pass <see cref="PassName"/> left the IR broken: a bug in that pass.</summary>
public sealed class IrVerificationException : InvalidOperationException
{
    public IrVerificationException(string passName, IReadOnlyList<string> problems)
        : base($"pass {passName} left the IR invalid: {problems.Count} problem(s)\n  " + string.Join("\n  ", problems))
    {
        PassName = passName;
        Problems = problems;
    }

    public string PassName { get; }
    public IReadOnlyList<string> Problems { get; }
}

/// <summary>The model given to the pass manager breaks IR invariants before any pass ran: a user error (malformed input).</summary>
public sealed class InvalidModelException : UserErrorException
{
    public InvalidModelException(IReadOnlyList<string> problems)
        : base($"the input model is invalid: {problems.Count} problem(s)\n  " + string.Join("\n  ", problems))
    {
        Problems = problems;
    }

    public IReadOnlyList<string> Problems { get; }
}
