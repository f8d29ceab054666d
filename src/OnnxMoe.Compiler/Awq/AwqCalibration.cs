using OnnxMoe.Compiler.Calibration;
using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Ir;
using OnnxMoe.Passes;
using OnnxMoe.Passes.Quantization;

namespace OnnxMoe.Compiler.Awq;

/// <summary>
/// The <see cref="IAwqCalibration"/> service a compile puts into its <see cref="PassContext"/> so that
/// <c>quantize-int4{method=awq,...}</c> runs the <see cref="AwqCalibrator"/> on the compile's
/// <see cref="CalibrationCore"/>. The pass's own options (grid, duo scaling, clip, sequential) override
/// <see cref="BaseOptions"/>. The last run's result is kept in <see cref="LastResult"/> for reports.
/// </summary>
public sealed class AwqCalibration : IAwqCalibration
{
    private readonly Func<CalibrationCore> _core;

    public AwqCalibration(AwqOptions baseOptions, Func<CalibrationCore> core, Action<AwqProgress>? progress = null)
    {
        BaseOptions = baseOptions;
        _core = core;
        Progress = progress;
    }

    public AwqOptions BaseOptions { get; }
    public Action<AwqProgress>? Progress { get; }
    public AwqResult? LastResult { get; private set; }

    /// <summary>AWQ's own calibration block length (its paper cuts documents into 512-token blocks). A recipe's longer
    /// samples, chosen for trimming's similarity scores, are cut to this so the loss searches keep memory bounded.</summary>
    public const int MaxSequenceLength = 512;

    /// <summary>AWQ options from a recipe's settings: its sample count, sequence length capped at <see cref="MaxSequenceLength"/>.</summary>
    public static AwqOptions OptionsFrom(CalibrationSettings settings) =>
        new() { Samples = settings.Samples, SequenceLength = Math.Min(settings.SeqLen, MaxSequenceLength) };

    public IReadOnlyDictionary<string, AwqWeightScaling> Calibrate(Model model, QuantizeInt4Options options, AwqSearchSettings search, PassContext context)
    {
        var o = BaseOptions with { GridPoints = search.GridPoints, DuoScaling = search.DuoScaling, ClipSearch = search.ClipSearch, Sequential = search.Sequential };
        var result = new AwqCalibrator(o, Progress, context.Info).Run(model, options, _core(), context.CancellationToken);
        foreach (var g in result.Groups)
            context.Info($"awq: {g.Name}: ratio {g.Ratio:0.00}, loss {g.RtnLoss:G4} -> {g.BestLoss:G4}");
        LastResult = result;
        return result.Scaling;
    }
}
