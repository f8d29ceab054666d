using OnnxMoe.Ir;

namespace OnnxMoe.Passes.Quantization;

/// <summary>
/// The AWQ calibration stage as a <see cref="PassContext"/> service: the compile job (which knows the
/// calibration text, tokenizer and ORT settings) provides it, and <c>quantize-int4{method=awq}</c>
/// calls it. It folds the chosen scales into <paramref name="model"/> in place (the float function is
/// unchanged) and returns, for every weight it will quantize, what the rewrite needs (clip values;
/// scales already folded, so no input scales).
/// </summary>
public interface IAwqCalibration
{
    IReadOnlyDictionary<string, AwqWeightScaling> Calibrate(Model model, QuantizeInt4Options options, AwqSearchSettings search, PassContext context);
}

/// <summary>AWQ search settings that are pass options (calibration data comes from the service).</summary>
/// <param name="GridPoints">Scale ratios tried (AWQ: 20).</param>
/// <param name="DuoScaling">s = xbar^a / (wbar^(1-a) + 1e-4) instead of xbar^a.</param>
/// <param name="ClipSearch">Run the per-row-per-block clip search.</param>
public sealed record AwqSearchSettings(int GridPoints = 20, bool DuoScaling = false, bool ClipSearch = true);
