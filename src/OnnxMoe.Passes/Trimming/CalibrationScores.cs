using OnnxMoe.Ir;

namespace OnnxMoe.Passes.Trimming;

/// <summary>
/// Scores of a decoder measured on calibration tokens, keyed by block index (the original layer
/// index used in node names, <c>BlockStructure.Index</c>). All similarities are cosine similarities
/// computed per token and averaged over all calibration tokens.
/// </summary>
public sealed class TrimmingScores
{
    /// <summary>Calibration tokens the scores were measured on.</summary>
    public long Tokens { get; init; }

    /// <summary>Per MoE layer: the full-softmax routing weight each routed expert received, summed over tokens,
    /// aligned with the layer's <c>MoeStructure.ExpertIds</c> (router-column order).</summary>
    public IReadOnlyDictionary<int, double[]> ExpertRouting { get; init; } = new Dictionary<int, double[]>();

    /// <summary>Per MoE layer: cos(h, h + MoE(Norm(h))), h the residual stream entering the post-attention norm.</summary>
    public IReadOnlyDictionary<int, double> MoeSimilarity { get; init; } = new Dictionary<int, double>();

    /// <summary>Per MoE layer: cos(Norm(h), MoE(Norm(h))) (the variant without the residual).</summary>
    public IReadOnlyDictionary<int, double> MoeSimilarityNoNorm { get; init; } = new Dictionary<int, double>();

    /// <summary>Per block: cos(block input, block output).</summary>
    public IReadOnlyDictionary<int, double> BlockSimilarity { get; init; } = new Dictionary<int, double>();

    /// <summary>Per run length n: cos(input of block s, output of block s+n-1) for every start position s
    /// in the current block order (so n = 1 matches <see cref="BlockSimilarity"/>).</summary>
    public IReadOnlyDictionary<int, double[]> ConsecutiveSimilarity { get; init; } = new Dictionary<int, double[]>();
}

/// <summary>
/// Where trimming passes get their scores: <see cref="TrimmingScorer"/> measures them on the compile's
/// <see cref="Calibration.IRegionRunner"/> and is put in the <see cref="PassContext"/>, so passes need not
/// know how they are measured. Each call measures the model as it is at that moment
/// (iterative selection calls again after each removal).
/// </summary>
public interface ICalibrationScores
{
    /// <summary>Routing scores and similarities of <paramref name="model"/>, plus consecutive-run similarities
    /// for each run length in <paramref name="consecutiveRuns"/>.</summary>
    TrimmingScores Measure(Model model, IReadOnlyList<int> consecutiveRuns, CancellationToken cancellationToken = default);

    /// <summary>For MoE layer <paramref name="layer"/>: for each subset of kept experts (original ids), the squared error
    /// sum over calibration tokens of MoE_kept(x) - MoE(x), x the layer's own (unmodified) input.</summary>
    IReadOnlyList<double> ReconstructionErrors(Model model, int layer, IReadOnlyList<IReadOnlyList<int>> keptExperts,
        CancellationToken cancellationToken = default);
}

/// <summary>Scores given up front (tests, the analyzer's what-if): every <see cref="Measure"/> returns them whatever the model,
/// so they only suit one-shot selection.</summary>
public sealed class FixedCalibrationScores(TrimmingScores scores) : ICalibrationScores
{
    public TrimmingScores Scores { get; } = scores;

    public TrimmingScores Measure(Model model, IReadOnlyList<int> consecutiveRuns, CancellationToken cancellationToken = default)
    {
        foreach (var n in consecutiveRuns)
            if (!Scores.ConsecutiveSimilarity.ContainsKey(n))
                throw new InvalidOperationException($"fixed scores have no consecutive-run similarities for runs of {n} blocks");
        return Scores;
    }

    public IReadOnlyList<double> ReconstructionErrors(Model model, int layer, IReadOnlyList<IReadOnlyList<int>> keptExperts,
        CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("fixed scores cannot measure reconstruction errors");
}
