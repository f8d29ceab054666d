using OnnxMoe.Compiler.Awq;
using OnnxMoe.Compiler.Calibration;
using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Ir;
using OnnxMoe.Passes;
using OnnxMoe.Passes.Quantization;
using OnnxMoe.Passes.Trimming;

namespace OnnxMoe.Compiler.Compile;

/// <summary>
/// Registers the calibration-backed services a compile pipeline's passes may ask for. Calibration text
/// is tokenized only when a pass first asks, so pipelines that score nothing pay nothing.
/// </summary>
public static class CalibrationServices
{
    /// <param name="session">Device and threads of the calibration and AWQ sessions; null: CPU with ORT's defaults.</param>
    public static void Register(PassContext context, string checkpointDirectory, CalibrationSettings settings,
        Action<CalibrationProgress>? progress = null, Action<AwqProgress>? awqProgress = null, Runtime.SessionConfig? session = null)
    {
        var data = new Lazy<CalibrationData>(() => CalibrationData.FromSettings(checkpointDirectory, settings));
        context.Set<ICalibrationScores>(new LazyCalibrationScores(() => new OrtCalibrationScores(data.Value, new CalibrationOptions { Progress = progress, Session = session })));
        var awq = AwqCalibration.FromSettings(settings, Path.Combine(checkpointDirectory, "tokenizer.json"), awqProgress);
        context.Set<IAwqCalibration>(session is null ? awq : new AwqCalibration(awq.BaseOptions with { Session = session }, awqProgress));
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
