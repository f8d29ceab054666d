using OnnxMoe.Ir;
using OnnxMoe.Structure;
using Tensor = OnnxMoe.Ir.Tensors.Tensor;

namespace OnnxMoe.Passes.Calibration;

/// <summary>
/// The one runtime service calibration logic in this project runs on (trimming scores, AWQ, the analyzer): regions of the IR run
/// on calibration data, batch by batch, their named values handed back per batch. Implemented once over ONNX Runtime by the
/// compiler (<c>OnnxMoe.Compiler.Calibration.OrtRegionRunner</c>, CPU or CUDA), so this project has no runtime dependency.
/// Decoder inputs a region declares (input_ids, attention_mask, position_ids, the empty KV cache) are built by the runner from the
/// calibration windows; everything else a region reads is fed by the caller or is one of its initializers.
/// </summary>
public interface IRegionRunner
{
    /// <summary><paramref name="samples"/> consecutive windows of <paramref name="seqLen"/> tokens of the calibration corpus (fewer, with a
    /// note, when the corpus holds fewer). Windows never run past the model's context (<paramref name="s"/>'s max_position_embeddings):
    /// a longer seq-len is cut to it, with a note, so calibration sees only positions the model was trained for.</summary>
    CalibrationWindows Windows(int samples, int seqLen, DecoderStructure s);

    /// <summary>The block-sequential executor's first step: the embedding region (decoder inputs -> the residual stream entering the
    /// first block) on every window; the caller owns the states.</summary>
    IHiddenStates Embed(Model model, DecoderStructure s, CalibrationWindows windows, CancellationToken cancellation = default);

    /// <summary>
    /// Runs block <paramref name="position"/> (in current block order, only its weights resident) on <paramref name="input"/>, batch by
    /// batch: hands the values <paramref name="outputs"/> (any values the block computes) to <paramref name="use"/> with the batch's first
    /// sample and size, and returns the block's output states when <paramref name="keepOutput"/> (the caller owns them).
    /// <paramref name="replacements"/> swaps weight tensors for this run only.
    /// </summary>
    IHiddenStates? RunBlock(Model model, DecoderStructure s, int position, IHiddenStates input, CalibrationWindows windows,
        IReadOnlyList<Value> outputs, Action<int, int, IRegionValues>? use, bool keepOutput, int? batchSize = null,
        IReadOnlyDictionary<Value, Tensor>? replacements = null, CancellationToken cancellation = default);

    /// <summary>A session over <paramref name="region"/> (a standalone model, e.g. from <see cref="Ir.Building.RegionExtractor"/>) for repeated runs.
    /// <paramref name="busyBetweenRuns"/>: the caller does heavy work of its own between runs (AWQ's trial weights of a large module),
    /// so the runtime's threads should yield the cores while idle rather than wait for the next run hot.</summary>
    IRegion Open(Model region, string name, bool busyBetweenRuns = false);

    /// <summary>Hands memory a large run left behind back to the system (between an AWQ module's large parts).</summary>
    void ReleaseMemory();

    /// <summary>Weight bytes above which a block or module part counts as large (see <see cref="ReleaseMemory"/>).</summary>
    long LargeBlockBytes { get; }
}

/// <summary>Residual-stream states [<see cref="Count"/>, <see cref="Length"/>, <see cref="Hidden"/>] held by the runner (in memory or spilled).</summary>
public interface IHiddenStates : IDisposable
{
    int Count { get; }
    int Length { get; }
    int Hidden { get; }
    /// <summary>Samples <paramref name="first"/>..+<paramref name="count"/> as f32.</summary>
    float[] ReadFloats(int first, int count);
}

/// <summary>An opened region: runs it on float inputs (converted to each input's declared element type) and returns the named outputs.</summary>
public interface IRegion : IDisposable
{
    /// <param name="decoder">Where the decoder inputs the region declares come from; null when it reads none.</param>
    IRegionResult Run(IReadOnlyList<RegionInput> inputs, IReadOnlyList<string> outputs, DecoderBatch? decoder = null, CancellationToken cancellation = default);
}

/// <summary>One input of a region run: f32 data (not copied where the input is f32) and its shape.</summary>
public readonly record struct RegionInput(string Name, Memory<float> Data, long[] Shape);

/// <summary>Decoder inputs for samples <see cref="First"/>..+<see cref="Count"/> of <see cref="Windows"/>, shaped by <see cref="Structure"/>.</summary>
public sealed record DecoderBatch(DecoderStructure Structure, CalibrationWindows Windows, int First, int Count);

/// <summary>The requested values of one run, in request order; valid until disposed (or, handed to a callback, during it).</summary>
public interface IRegionValues
{
    int Count { get; }
    long[] Shape(int index);
    /// <summary>The value as a new f32 array (converted from another float type).</summary>
    float[] ToFloatArray(int index);
    /// <summary>The value as f32: in place when it is f32, else converted.</summary>
    ReadOnlySpan<float> Floats(int index);
    /// <summary>An int64 value in place.</summary>
    ReadOnlySpan<long> Int64s(int index);
}

/// <summary><see cref="IRegionValues"/> owned by the caller.</summary>
public interface IRegionResult : IRegionValues, IDisposable;
