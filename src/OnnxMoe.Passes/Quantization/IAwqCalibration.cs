using OnnxMoe.Ir;

namespace OnnxMoe.Passes.Quantization;

/// <summary>
/// The AWQ calibration stage as a <see cref="PassContext"/> service: the compile job provides it
/// (<see cref="Awq.AwqCalibrator"/> on its calibration data and region runner), and <c>quantize-int4{method=awq}</c>
/// calls it. It folds the chosen scales into <paramref name="model"/> in place (the float function is
/// unchanged) and returns, for every weight it will quantize, what the rewrite needs (clip values;
/// scales already folded, so no input scales).
/// </summary>
public interface IAwqCalibration
{
    IReadOnlyDictionary<string, AwqWeightScaling> Calibrate(Model model, QuantizeInt4Options options, AwqSearchSettings search, PassContext context);
}

/// <summary>AWQ search settings that are pass options (calibration data comes from the service); their defaults are the
/// options' (<see cref="QuantizeInt4Pass.Grid"/>, <see cref="QuantizeInt4Pass.DuoScaling"/>, <see cref="QuantizeInt4Pass.Clip"/>,
/// <see cref="QuantizeInt4Pass.Sequential"/>).</summary>
/// <param name="GridPoints">Scale ratios tried (AWQ: 20).</param>
/// <param name="DuoScaling">s = xbar^a / (wbar^(1-a) + 1e-4) instead of xbar^a.</param>
/// <param name="ClipSearch">Run the per-row-per-block clip search.</param>
/// <param name="Sequential">What each decoder block's successor calibrates on.</param>
public sealed record AwqSearchSettings(int GridPoints, bool DuoScaling, bool ClipSearch, AwqSequential Sequential);

/// <summary>What AWQ hands from one decoder block to the next, whose statistics and searches then run on it.</summary>
public enum AwqSequential
{
    /// <summary>The block's float output (after folding, which leaves it unchanged up to rounding).</summary>
    Float,
    /// <summary>The block's output with its weights quantized as they will ship, so later blocks calibrate on the inputs they will see.</summary>
    Quantized,
}
