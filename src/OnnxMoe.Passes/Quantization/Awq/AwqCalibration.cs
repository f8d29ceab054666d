using OnnxMoe.Ir;
using OnnxMoe.Passes.Calibration;

namespace OnnxMoe.Passes.Quantization.Awq;

/// <summary>
/// The <see cref="IAwqCalibration"/> service a compile puts into its <see cref="PassContext"/> so that
/// <c>quantize-int4{method=awq,...}</c> runs the <see cref="AwqCalibrator"/> on the compile's <see cref="BlockStateCache"/>
/// (and with it its <see cref="IRegionRunner"/>). The pass's own options (grid, duo scaling, clip, sequential) override
/// <see cref="BaseOptions"/>. The last run's result is kept in <see cref="LastResult"/> for reports.
/// </summary>
public sealed class AwqCalibration(AwqOptions baseOptions, BlockStateCache states, Action<AwqProgress>? progress = null) : IAwqCalibration
{
    public AwqOptions BaseOptions { get; } = baseOptions;
    public Action<AwqProgress>? Progress { get; } = progress;
    public AwqResult? LastResult { get; private set; }

    public IReadOnlyDictionary<string, AwqWeightScaling> Calibrate(Model model, QuantizeInt4Options options, AwqSearchSettings search, PassContext context)
    {
        var o = BaseOptions with { GridPoints = search.GridPoints, DuoScaling = search.DuoScaling, ClipSearch = search.ClipSearch, Sequential = search.Sequential };
        var result = new AwqCalibrator(o, Progress, context.Info).Run(model, options, states, context.CancellationToken);
        foreach (var g in result.Groups)
            context.Info($"awq: {g.Name}: ratio {g.Ratio:0.00}, loss {g.RtnLoss:G4} -> {g.BestLoss:G4}");
        LastResult = result;
        return result.Scaling;
    }
}
