using OnnxMoe.Ir;
using OnnxMoe.Runtime;

namespace OnnxMoe.Compiler.Awq;

/// <summary>
/// Settings of the AWQ calibration stage (FACTS section 2). Token counts are per sample; samples are
/// consecutive windows of the tokenized calibration text.
/// </summary>
public sealed record AwqOptions
{
    /// <summary>Calibration text (UTF-8). Default: models/data/kjv-calibration.txt under the working folder.</summary>
    public string CalibrationTextPath { get; init; } = Path.Combine("models", "data", "kjv-calibration.txt");
    /// <summary>tokenizer.json used to tokenize the calibration text (required).</summary>
    public string? TokenizerPath { get; init; }
    /// <summary>Calibration samples over which the activation statistics are averaged (AWQ: 128).</summary>
    public int Samples { get; init; } = 128;
    /// <summary>Tokens per sample (AWQ: 512).</summary>
    public int SequenceLength { get; init; } = 512;
    /// <summary>The first samples whose activations are kept in memory for the scale and clip losses.</summary>
    public int SearchSamples { get; init; } = 16;
    /// <summary>Scale ratios tried: a = 0, 1/n, ..., (n-1)/n (AWQ: 20).</summary>
    public int GridPoints { get; init; } = 20;
    /// <summary>Duo scaling: s = xbar^a / (wbar^(1-a) + 1e-4) instead of xbar^a.</summary>
    public bool DuoScaling { get; init; }
    /// <summary>Run the per-row-per-block clip search after scaling (skipped for q and k projections).</summary>
    public bool ClipSearch { get; init; } = true;
    /// <summary>Tokens sampled (evenly strided) for each weight's clip search (AWQ: 512).</summary>
    public int ClipTokens { get; init; } = 512;
    /// <summary>Clip ratios tried: 1 - i/grid for i below max-shrink*grid (AWQ: 0.5 with grid 20, so 1.0 .. 0.55).</summary>
    public double ClipMaxShrink { get; init; } = 0.5;
    /// <summary>Threads and device of the ORT sessions that collect statistics and compute losses.</summary>
    public SessionConfig? Session { get; init; }

    /// <summary>Throws <see cref="UserErrorException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (Samples < 1) throw new UserErrorException($"AWQ calibration needs at least 1 sample, got {Samples}");
        if (SequenceLength < 2) throw new UserErrorException($"AWQ calibration sequence length must be at least 2 tokens, got {SequenceLength}");
        if (SearchSamples < 1) throw new UserErrorException($"AWQ search samples must be at least 1, got {SearchSamples}");
        if (GridPoints < 1 || GridPoints > 1000) throw new UserErrorException($"AWQ grid points must be in 1..1000, got {GridPoints}");
        if (ClipTokens < 1) throw new UserErrorException($"AWQ clip tokens must be at least 1, got {ClipTokens}");
        if (!(ClipMaxShrink >= 0 && ClipMaxShrink < 1)) throw new UserErrorException($"AWQ clip max-shrink must be in [0, 1), got {ClipMaxShrink}");
        if (string.IsNullOrEmpty(TokenizerPath)) throw new UserErrorException("AWQ calibration needs a tokenizer.json to tokenize the calibration text; none was given");
        if (!File.Exists(TokenizerPath)) throw new UserErrorException($"{TokenizerPath}: tokenizer file not found");
        if (!File.Exists(CalibrationTextPath)) throw new UserErrorException($"{CalibrationTextPath}: calibration text not found");
    }
}

/// <summary>Progress of the AWQ stage: <paramref name="Stage"/> is "statistics", "scales" or "clip"; counts are of samples, groups or weights.</summary>
public readonly record struct AwqProgress(string Stage, int Done, int Total, string Item);
