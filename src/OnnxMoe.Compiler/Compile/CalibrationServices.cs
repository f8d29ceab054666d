using OnnxMoe.Compiler.Calibration;
using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Passes;
using OnnxMoe.Passes.Calibration;
using OnnxMoe.Passes.Quantization;
using OnnxMoe.Passes.Quantization.Awq;
using OnnxMoe.Passes.Trimming;

namespace OnnxMoe.Compiler.Compile;

/// <summary>
/// The calibration a compile's passes may ask for, registered in one place: one <see cref="OrtRegionRunner"/> (the corpus is
/// tokenized when a pass first asks, so pipelines that score nothing pay nothing), one <see cref="BlockStateCache"/> over it, and
/// the pass services on that cache: trimming scores (<see cref="ICalibrationScores"/>) and AWQ (<see cref="IAwqCalibration"/>).
/// Disposing frees the states.
/// </summary>
public sealed class CalibrationServices : IDisposable
{
    private readonly OrtRegionRunner _runner;
    private readonly BlockStateCache _states;

    private CalibrationServices(OrtRegionRunner runner, CalibrationSettings settings, Action<AwqProgress>? awqProgress)
    {
        _runner = runner;
        _states = new BlockStateCache(runner);
        Scores = new TrimmingScorer(_states, settings.Samples, settings.SeqLen);
        Awq = new AwqCalibrator(AwqOptionsFrom(settings), _states, awqProgress);
    }

    /// <summary>The runner (its <see cref="OrtRegionRunner.Used"/> says whether a consumer asked for calibration data).</summary>
    public OrtRegionRunner Runner => _runner;
    /// <summary>Trimming scores on the recipe's samples x seq-len.</summary>
    public TrimmingScorer Scores { get; }
    /// <summary>AWQ on the recipe's samples, at most <see cref="AwqOptions.MaxSequenceLength"/> tokens each.</summary>
    public AwqCalibrator Awq { get; }

    /// <param name="corpus">Called when a consumer first needs calibration data.</param>
    /// <param name="runner">How regions run (device, threads, memory budget, progress).</param>
    public static CalibrationServices Create(Func<CalibrationCorpus> corpus, CalibrationSettings settings, RegionRunnerOptions runner,
        Action<AwqProgress>? awqProgress = null) => new(new OrtRegionRunner(corpus, runner), settings, awqProgress);

    /// <summary>The services for a compile's passes, put into <paramref name="context"/>; the corpus is <paramref name="settings"/>' text tokenized
    /// with the checkpoint's tokenizer.</summary>
    public static CalibrationServices Register(PassContext context, string checkpointDirectory, CalibrationSettings settings,
        RegionRunnerOptions runner, Action<AwqProgress>? awqProgress = null)
    {
        var services = Create(() => CalibrationCorpus.FromSettings(checkpointDirectory, settings), settings, runner, awqProgress);
        context.Set<ICalibrationScores>(services.Scores);
        context.Set<IAwqCalibration>(services.Awq);
        return services;
    }

    /// <summary>AWQ options from a recipe's settings: its sample count, sequence length capped at <see cref="AwqOptions.MaxSequenceLength"/>.</summary>
    public static AwqOptions AwqOptionsFrom(CalibrationSettings settings) =>
        new() { Samples = settings.Samples, SequenceLength = Math.Min(settings.SeqLen, AwqOptions.MaxSequenceLength) };

    public void Dispose()
    {
        _states.Dispose();
        _runner.Dispose();
    }
}
