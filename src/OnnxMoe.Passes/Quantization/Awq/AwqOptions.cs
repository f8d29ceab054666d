using OnnxMoe.Ir;

namespace OnnxMoe.Passes.Quantization.Awq;

/// <summary>
/// Settings of the AWQ calibration stage (FACTS section 2). Token counts are per sample; samples are
/// consecutive windows of the calibration corpus.
/// </summary>
public sealed record AwqOptions
{
    /// <summary>Calibration samples over which the activation statistics are averaged (AWQ: 128).</summary>
    public int Samples { get; init; } = 128;
    /// <summary>Tokens per sample (AWQ: 512).</summary>
    public int SequenceLength { get; init; } = MaxSequenceLength;
    /// <summary>AWQ's own calibration block length (its paper cuts documents into 512-token blocks). A recipe's longer samples, chosen
    /// for trimming's similarity scores, are cut to this so the loss searches keep memory bounded.</summary>
    public const int MaxSequenceLength = 512;
    /// <summary>The first samples whose activations are kept in memory for the scale and clip losses.</summary>
    public int SearchSamples { get; init; } = 16;
    /// <summary>The searches' settings, which quantize-int4's options give (grid, duo-scaling, clip, sequential): AWQ's defaults here.</summary>
    public AwqSearchSettings Search { get; init; } = new(GridPoints: 20, DuoScaling: false, ClipSearch: true, Sequential: AwqSequential.Float);
    /// <summary>Tokens sampled (evenly strided) for each weight's clip search (AWQ: 512).</summary>
    public int ClipTokens { get; init; } = 512;
    /// <summary>Clip ratios tried: 1 - i/grid for i below max-shrink*grid (AWQ: 0.5 with grid 20, so 1.0 .. 0.55).</summary>
    public double ClipMaxShrink { get; init; } = 0.5;

    /// <summary>Throws <see cref="UserErrorException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (Samples < 1) throw new UserErrorException($"AWQ calibration needs at least 1 sample, got {Samples}");
        if (SequenceLength < 2) throw new UserErrorException($"AWQ calibration sequence length must be at least 2 tokens, got {SequenceLength}");
        if (SearchSamples < 1) throw new UserErrorException($"AWQ search samples must be at least 1, got {SearchSamples}");
        if (Search.GridPoints < 1 || Search.GridPoints > 1000) throw new UserErrorException($"AWQ grid points must be in 1..1000, got {Search.GridPoints}");
        if (ClipTokens < 1) throw new UserErrorException($"AWQ clip tokens must be at least 1, got {ClipTokens}");
        if (!(ClipMaxShrink >= 0 && ClipMaxShrink < 1)) throw new UserErrorException($"AWQ clip max-shrink must be in [0, 1), got {ClipMaxShrink}");
    }
}

/// <summary>Progress of the AWQ stage: <paramref name="Stage"/> is "statistics", "scales" or "clip"; counts are of decoder blocks, groups or weights.</summary>
public readonly record struct AwqProgress(string Stage, int Done, int Total, string Item);
