using OnnxMoe.Checkpoints;
using OnnxMoe.Passes.Quantization.Awq;
using OnnxMoe.Inference.Evaluation;
using OnnxMoe.Inference.Generation;
using OnnxMoe.Inference.Tokenization;
using OnnxMoe.Lowering;
using OnnxMoe.Onnx;
using OnnxMoe.Passes;
using OnnxMoe.Passes.Quantization;
using OnnxMoe.Runtime;
using Xunit.Abstractions;

namespace OnnxMoe.Tests.Awq;

/// <summary>
/// Held-out perplexity of the tiny trained models: fp32, int4 RTN and int4 AWQ through the
/// quantize-int4 pass, at the same block size. Calibration is small (8 samples x 128 tokens) to keep
/// the test fast; perplexity is on the first 2048 held-out tokens in windows of 256.
/// Measured (fp32 / RTN / AWQ): block 32: tiny-mixtral 89.246 / 89.354 / 89.216, tiny-deepseek
/// 80.277 / 80.439 / 80.373; block 64: 89.246 / 89.243 / 89.291 and 80.277 / 80.258 / 80.272;
/// block 128: 89.246 / 89.346 / 89.173 and 80.277 / 80.238 / 80.195. At block 64 both methods sit
/// within +-0.05% of fp32 (noise of this 2048-token slice), so the test asserts AWQ &lt;= RTN with no
/// slack at block 32 only, where RTN's loss (0.12-0.2%) is clearly above that noise.
/// </summary>
public sealed class AwqQualityTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-awq-q-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>models/{name} of the repository; ONNXMOE_TINY_MODELS (a folder holding tiny-*) overrides it.</summary>
    public static string TinyModel(string name)
    {
        var root = Environment.GetEnvironmentVariable("ONNXMOE_TINY_MODELS") is { Length: > 0 } env ? env : Path.Combine(AwqTestModels.Repo, "models");
        var dir = Path.Combine(root, name);
        if (!File.Exists(Path.Combine(dir, "model.safetensors")))
            throw new InvalidOperationException($"{dir}/model.safetensors is missing: the tiny trained models come from tools/train_tiny.py (branch training)");
        return dir;
    }

    internal static double Perplexity(string model, string tokenizerPath, int tokens)
    {
        var ids = Tokenizer.Load(tokenizerPath).Encode(File.ReadAllText(AwqTestModels.HeldOut), addSpecialTokens: false).Take(tokens).ToArray();
        using var decoder = new OrtDecoder(new InferenceSession(model, new SessionConfig { IntraOpThreads = 1 }), null, ownsSession: true);
        return new PerplexityEvaluator(decoder).Evaluate(ids, new PerplexityOptions { SequenceLength = 256, Stride = 256 }).Perplexity;
    }

    /// <summary>Lowers the checkpoint, runs <paramref name="pipeline"/> (with AWQ calibration in the context) and writes it; returns the .onnx path.</summary>
    internal static string Compile(string checkpoint, string pipeline, string outDir, AwqOptions? awq, string? tokenizer = null)
    {
        var lowered = DecoderLowering.Lower(CheckpointFolder.Open(checkpoint));
        if (pipeline.Length > 0)
        {
            var context = new PassContext();
            if (awq != null) context.Set<IAwqCalibration>(AwqTestModels.Service(awq, tokenizer ?? Path.Combine(checkpoint, "tokenizer.json")));
            new PassManager().Run(lowered.Model, PassPipeline.Parse(pipeline, PassRegistry.CreateDefault()), context);
        }
        Directory.CreateDirectory(outDir);
        var path = Path.Combine(outDir, "model.onnx");
        OnnxWriter.Write(lowered.Model, path);
        return path;
    }

    internal static AwqOptions CalibrationFor(int samples = 8, int seqLen = 128) => new() { Samples = samples, SequenceLength = seqLen, SearchSamples = samples };

    [Theory]
    [InlineData("tiny-mixtral", 32)]
    [InlineData("tiny-deepseek", 32)]
    public void AwqPerplexityIsNotWorseThanRtn(string name, int blockSize)
    {
        var dir = TinyModel(name);
        var tok = Path.Combine(dir, "tokenizer.json");
        double fp = Perplexity(Compile(dir, "", Path.Combine(_dir, "fp"), null), tok, 2048);
        double rtn = Perplexity(Compile(dir, $"quantize-int4{{block-size={blockSize}}}", Path.Combine(_dir, "rtn"), null), tok, 2048);
        double awq = Perplexity(Compile(dir, $"quantize-int4{{method=awq,block-size={blockSize}}}", Path.Combine(_dir, "awq"), CalibrationFor()), tok, 2048);
        output.WriteLine($"{name} block {blockSize}: fp32 {fp:F3}  rtn {rtn:F3}  awq {awq:F3}");
        Assert.True(awq <= rtn * 1.0 + 1e-9, $"AWQ perplexity {awq} is above RTN's {rtn}");
        Assert.True(rtn >= fp * 0.99, "4-bit RTN should not beat fp32 by more than noise");
    }
}
