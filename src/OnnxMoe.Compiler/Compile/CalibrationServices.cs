using OnnxMoe.Compiler.Awq;
using OnnxMoe.Compiler.Calibration;
using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Ir;
using OnnxMoe.Passes;
using OnnxMoe.Passes.Quantization;
using OnnxMoe.Passes.Trimming;

namespace OnnxMoe.Compiler.Compile;

/// <summary>
/// The calibration-backed services a compile pipeline's passes may ask for, all on one
/// <see cref="CalibrationCore"/>: trimming scores (<see cref="ICalibrationScores"/>) and AWQ
/// (<see cref="IAwqCalibration"/>). The calibration text is tokenized, and the core created, only when a
/// pass first asks, so pipelines that score nothing pay nothing. Disposing frees the core's states.
/// </summary>
public sealed class CalibrationServices : IDisposable
{
    private readonly Lazy<CalibrationCore> _core;

    private CalibrationServices(Lazy<CalibrationCore> core) => _core = core;

    /// <summary>The core, when a pass created it.</summary>
    public CalibrationCore? Core => _core.IsValueCreated ? _core.Value : null;

    /// <param name="core">How the core runs (device, threads, memory budget, progress); its corpus comes from <paramref name="settings"/>.</param>
    public static CalibrationServices Register(PassContext context, string checkpointDirectory, CalibrationSettings settings,
        CalibrationCoreOptions core, Action<AwqProgress>? awqProgress = null)
    {
        var lazy = new Lazy<CalibrationCore>(() => new CalibrationCore(CalibrationCorpus.FromSettings(checkpointDirectory, settings), core));
        var services = new CalibrationServices(lazy);
        context.Set<ICalibrationScores>(new LazyCalibrationScores(() => new OrtCalibrationScores(lazy.Value, settings.Samples, settings.SeqLen)));
        context.Set<IAwqCalibration>(new AwqCalibration(AwqCalibration.OptionsFrom(settings) with { Session = core.Session }, () => lazy.Value, awqProgress));
        return services;
    }

    public void Dispose()
    {
        if (_core.IsValueCreated) _core.Value.Dispose();
    }

    /// <summary>Creates the real scorer on first use.</summary>
    private sealed class LazyCalibrationScores(Func<ICalibrationScores> create) : ICalibrationScores
    {
        private readonly Lazy<ICalibrationScores> _inner = new(create);

        public TrimmingScores Measure(Model model, IReadOnlyList<int> consecutiveRuns, CancellationToken cancellationToken = default) =>
            _inner.Value.Measure(model, consecutiveRuns, cancellationToken);

        public IReadOnlyList<double> ReconstructionErrors(Model model, int layer, IReadOnlyList<IReadOnlyList<int>> keptExperts,
            CancellationToken cancellationToken = default) =>
            _inner.Value.ReconstructionErrors(model, layer, keptExperts, cancellationToken);
    }
}
