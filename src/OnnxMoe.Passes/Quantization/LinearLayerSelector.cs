using OnnxMoe.Structure;

namespace OnnxMoe.Passes.Quantization;

/// <summary>
/// Decides from a node's role (<see cref="NodeRoles"/>) and name whether a linear layer is a
/// quantization target: its kind must be in the targets and no exclude pattern may match.
/// </summary>
public sealed class LinearLayerSelector
{
    private readonly QuantizeTargets _targets;
    private readonly IReadOnlyList<string> _exclude;

    public LinearLayerSelector(QuantizeTargets targets, IReadOnlyList<string> exclude)
    {
        _targets = targets;
        _exclude = exclude;
    }

    /// <summary>The kind of linear layer a node name denotes (its role: <see cref="NodeRoles"/>). A shared expert counts as an expert;
    /// routers and the shared-expert gate are Other.</summary>
    public static QuantizeTargets Classify(string nodeName) => NodeRoles.Of(nodeName) switch
    {
        NodeRole.RoutedExpert or NodeRole.SharedExpert => QuantizeTargets.Experts,
        NodeRole.DenseMlp => QuantizeTargets.DenseMlp,
        NodeRole.Attention => QuantizeTargets.Attention,
        _ => QuantizeTargets.Other,
    };

    /// <summary>The exclude pattern matching <paramref name="nodeName"/>, or null.</summary>
    public string? ExcludedBy(string nodeName) => _exclude.FirstOrDefault(p => NameGlob.Matches(p, nodeName));

    public bool IsTarget(string nodeName) => (Classify(nodeName) & _targets) != 0 && ExcludedBy(nodeName) == null;
}

/// <summary>Node-name patterns: without wildcards a substring; with '*' (any run) or '?' (one character) a whole-name match.</summary>
public static class NameGlob
{
    public static bool Matches(string pattern, string name)
    {
        if (pattern.IndexOfAny(['*', '?']) < 0) return name.Contains(pattern, StringComparison.Ordinal);
        // Iterative wildcard match with backtracking to the last '*'.
        int p = 0, s = 0, star = -1, mark = 0;
        while (s < name.Length)
        {
            if (p < pattern.Length && (pattern[p] == '?' || pattern[p] == name[s])) { p++; s++; }
            else if (p < pattern.Length && pattern[p] == '*') { star = p++; mark = s; }
            else if (star >= 0) { p = star + 1; s = ++mark; }
            else return false;
        }
        while (p < pattern.Length && pattern[p] == '*') p++;
        return p == pattern.Length;
    }
}
