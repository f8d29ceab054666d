using OnnxMoe.Checkpoints;
using OnnxMoe.Compiler.Calibration;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Building;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Lowering;
using OnnxMoe.Onnx;
using OnnxMoe.Passes;
using OnnxMoe.Passes.Trimming;
using OnnxMoe.Runtime;
using OnnxMoe.Structure;

namespace OnnxMoe.Tests.Trimming;

/// <summary>A lowered checkpoint (weights lazy over the open checkpoint folder) plus ORT helpers for the trimming tests.</summary>
internal sealed class LoweredCheckpoint : IDisposable
{
    private readonly CheckpointFolder _folder;

    public LoweredCheckpoint(string dir, LoweringOptions? options = null)
    {
        _folder = CheckpointFolder.Open(dir);
        Model = DecoderLowering.Lower(_folder, options).Model;
    }

    public Model Model { get; }
    public DecoderStructure Structure => DecoderStructure.Read(Model);

    public void Dispose() => _folder.Dispose();
}

internal static class TrimmingFixture
{
    public static readonly PassRegistry Registry = PassRegistry.CreateDefault();

    /// <summary>Deterministic pseudo-random calibration tokens (the family checkpoints have no tokenizer).</summary>
    public static List<int[]> Tokens(int vocab, int samples = 2, int seqLen = 8, int seed = 3)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, samples).Select(_ => Enumerable.Range(0, seqLen).Select(_ => rng.Next(vocab)).ToArray()).ToList();
    }

    public static OrtScorer Scorer(DecoderStructure s, int samples = 2, int seqLen = 8, RegionRunnerOptions? options = null) =>
        new(CalibrationCorpus.FromTokens(Tokens(s.VocabSize, samples, seqLen)), samples, seqLen, options ?? new RegionRunnerOptions { BatchSize = 2 });

    public static PipelineRunReport RunPipeline(Model model, string pipeline, ICalibrationScores? scores = null)
    {
        var context = new PassContext();
        if (scores != null) context.Set<ICalibrationScores>(scores);
        var manager = new PassManager { ExternalCheck = (m, _) => LoadsInOrt(m) };
        return manager.Run(model, PassPipeline.Parse(pipeline, Registry), context);
    }

    /// <summary>Writes the model to a temp folder and opens an ORT session on it (throws if ORT rejects it).</summary>
    public static void LoadsInOrt(Model model)
    {
        var dir = Directory.CreateTempSubdirectory("onnxmoe-trim-").FullName;
        try
        {
            OnnxWriter.Write(model, Path.Combine(dir, "model.onnx"));
            using var session = new InferenceSession(Path.Combine(dir, "model.onnx"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>Logits [seq, vocab] for one prompt through ORT, with an empty KV cache.</summary>
    public static float[] Logits(Model model, long[] ids)
    {
        var s = DecoderStructure.Read(model);
        var dir = Directory.CreateTempSubdirectory("onnxmoe-trim-").FullName;
        try
        {
            var path = Path.Combine(dir, "model.onnx");
            OnnxWriter.Write(model, path);
            using var session = new InferenceSession(path);
            var values = new List<OrtValue>();
            var feeds = new List<KeyValuePair<string, OrtValue>>();
            void Feed(string name, OrtValue v) { values.Add(v); feeds.Add(new(name, v)); }
            int n = ids.Length;
            Feed("input_ids", OrtValue.CreateTensor<long>(ids.ToArray().AsMemory(), [1, n]));
            Feed("attention_mask", OrtValue.CreateTensor<long>(Enumerable.Repeat(1L, n).ToArray().AsMemory(), [1, n]));
            Feed("position_ids", OrtValue.CreateTensor<long>(Enumerable.Range(0, n).Select(i => (long)i).ToArray().AsMemory(), [1, n]));
            var cacheType = s.ComputeType == "f16" ? DataType.Float16 : DataType.Float;
            foreach (var b in s.Blocks)
            {
                Feed(b.Attention.PastKey, OrtValue.Allocate(cacheType, [1, s.NumKeyValueHeads, 0, s.HeadDim]));
                Feed(b.Attention.PastValue, OrtValue.Allocate(cacheType, [1, s.NumKeyValueHeads, 0, s.HeadDim]));
            }
            try
            {
                using var r = session.Run(feeds, ["logits"]);
                return r[0].ToFloatArray();
            }
            finally
            {
                foreach (var v in values) v.Dispose();
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    public static double MaxAbsDiff(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        double m = 0;
        for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs((double)a[i] - b[i]));
        return m;
    }

    public static long[] Prompt(int vocab, int length = 7, int seed = 11)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => (long)rng.Next(vocab)).ToArray();
    }

    /// <summary>Replaces the weight (input 1) of every node whose name starts with <paramref name="prefix"/> and ends with
    /// <paramref name="suffix"/> by zeros of the same type and shape. Returns how many were zeroed.</summary>
    public static int ZeroWeights(Model model, string prefix, string suffix, int input = 1)
    {
        int count = 0;
        foreach (var n in model.Graph.Nodes.Where(n => n.Name.StartsWith(prefix, StringComparison.Ordinal) && n.Name.EndsWith(suffix, StringComparison.Ordinal)).ToList())
        {
            var w = n.Inputs[input]!;
            var t = w.ConstValue ?? throw new InvalidOperationException($"{n.Name} input {input} is not an initializer");
            var zeros = new InMemoryTensor(t.DataType, t.Shape, new byte[t.ByteLength]);
            var fresh = new Value(w.Name + "_zeroed_" + count, w.Type, zeros);
            model.Graph.AddInitializer(fresh);
            n.SetInput(input, fresh);
            count++;
        }
        return count;
    }

    /// <summary>Adds a bias after layer <paramref name="layer"/>'s router MatMul: -inf on the given original expert ids, 0 elsewhere.</summary>
    public static void MaskRouterLogits(Model model, int layer, IReadOnlyCollection<int> expertIds)
    {
        var s = DecoderStructure.Read(model);
        var moe = s.Blocks.First(b => b.Index == layer).Ffn!.Moe!;
        var router = model.Graph.Nodes.First(n => n.Name == moe.RouterMatMul);
        var logits = router.Outputs[0];
        var uses = logits.Uses.ToList();
        var bias = moe.ExpertIds.Select(e => expertIds.Contains(e) ? float.NegativeInfinity : 0f).ToArray();
        var b = new GraphBuilder(model.Graph);
        using (b.PushScope($"test/layers.{layer}/router_mask"))
        {
            var biasValue = b.Constant(GraphBuilder.FloatTensor(logits.ElementType ?? DataType.Float, [bias.Length], bias));
            var masked = b.Add(logits, biasValue);
            foreach (var u in uses) u.Node.SetInput(u.Index, masked);
        }
        model.Graph.SortTopologically();
    }
}


/// <summary>Trimming scores on their own ORT runner, wired as a compile wires them (<see cref="CalibrationServices"/>), with the runner at hand.</summary>
public sealed class OrtScorer(CalibrationCorpus corpus, int samples, int seqLen, RegionRunnerOptions? options = null) : ICalibrationScores, IDisposable
{
    private readonly CalibrationServices _services = CalibrationServices.Create(() => corpus, new CalibrationSettings(samples, seqLen), options ?? new RegionRunnerOptions());

    public OrtRegionRunner Core => _services.Runner;
    public OnnxMoe.Passes.Calibration.CalibrationWindows Windows => _services.Scores.Windows;

    public TrimmingScores Measure(Model model, IReadOnlyList<int> consecutiveRuns, CancellationToken cancellationToken = default) =>
        _services.Scores.Measure(model, consecutiveRuns, cancellationToken);

    public IReadOnlyList<double> ReconstructionErrors(Model model, int layer, IReadOnlyList<IReadOnlyList<int>> keptExperts, CancellationToken cancellationToken = default) =>
        _services.Scores.ReconstructionErrors(model, layer, keptExperts, cancellationToken);

    public void Dispose() => _services.Dispose();
}
