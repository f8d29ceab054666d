using OnnxMoe.Ir;

namespace OnnxMoe.Passes.Quantization;

/// <summary>
/// <c>quantize-int4</c>: the <see cref="QuantizeInt4Rewrite"/> as a pass. With <c>method=awq</c> it first
/// asks the <see cref="IAwqCalibration"/> service of the context (provided by a compile with
/// calibration settings) to fold activation-aware scales into the model and choose clip values.
/// </summary>
public sealed class QuantizeInt4Pass : Pass
{
    public static readonly PassOption<string> Method = PassOption.String("method", "rtn",
        "rtn (round to nearest) or awq (activation-aware scales and clipping; needs calibration)", "rtn", "awq");
    public static readonly PassOption<int> BlockSize = PassOption.Int("block-size", 128, "input channels per quantization block: a power of two in 16..256");
    public static readonly PassOption<int> Bits = PassOption.Int("bits", 4, "bits per weight: 4 or 8");
    public static readonly PassOption<bool> Symmetric = PassOption.Bool("symmetric", false, "no zero points (codes centred on 2^(bits-1))");
    public static readonly PassOption<int> AccuracyLevel = PassOption.Int("accuracy-level", QuantizeInt4Options.DefaultAccuracyLevel,
        QuantizeInt4Options.AccuracyLevelDescription);
    public static readonly PassOption<string> Targets = PassOption.String("targets", "all", "which linear layers: comma list of experts, mlp, dense-mlp, attention, all");
    public static readonly PassOption<string> Exclude = PassOption.String("exclude", null,
        "node-name patterns kept in full precision, separated by ';' (default: routers, shared-expert gate, lm_head)");
    public static readonly PassOption<int> Grid = PassOption.Int("grid", 20, "awq: scale ratios tried");
    public static readonly PassOption<bool> DuoScaling = PassOption.Bool("duo-scaling", false, "awq: s = xbar^a / (wbar^(1-a) + 1e-4)");
    public static readonly PassOption<bool> Clip = PassOption.Bool("clip", true, "awq: per-row-per-block clip search");
    public static readonly PassOption<string> Sequential = PassOption.String("sequential", "float",
        "awq: what each block's successor calibrates on: the block's float output, or its quantized output", "float", "quantized");
    public static readonly PassOption<int> LmHeadBits = PassOption.Int("lm-head-bits", 0,
        "lm_head as MatMulNBits too, round to nearest at 8 or 4 bits (it is read whole for every token); 0 keeps it in full precision");

    public static readonly PassInfo Info = new("quantize-int4",
        "Replaces linear layers with 4-bit (or 8-bit) com.microsoft MatMulNBits, round-to-nearest or AWQ.",
        Method, BlockSize, Bits, Symmetric, AccuracyLevel, Targets, Exclude, Grid, DuoScaling, Clip, Sequential, LmHeadBits);

    private const string LmHeadPattern = "/lm_head/";

    public QuantizeInt4Pass(PassOptions options) : base(Info, options)
    {
        _ = RewriteOptions();   // bad values fail when the pipeline is built, not after the passes before this one
    }

    /// <summary>The rewrite options these pass options stand for; throws <see cref="PassException"/> on bad values.</summary>
    public QuantizeInt4Options RewriteOptions()
    {
        try
        {
            var o = new QuantizeInt4Options
            {
                Method = QuantizeInt4Options.ParseMethod(Options.Get(Method)),
                BlockSize = Options.Get(BlockSize),
                Bits = Options.Get(Bits),
                Symmetric = Options.Get(Symmetric),
                AccuracyLevel = Options.Get(AccuracyLevel),
                Targets = QuantizeInt4Options.ParseTargets(Options.Get(Targets)),
                Exclude = Options.TryGet(Exclude, out var e)
                    ? e.Split(';', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                    : QuantizeInt4Options.DefaultExclude,
            };
            _ = o.Format;
            if (o.AccuracyLevel is < 0 or > 4) throw new UserErrorException($"accuracy level {o.AccuracyLevel} is out of range 0..4");
            if (Options.Get(Grid) is < 1 or > 1000) throw new UserErrorException($"grid {Options.Get(Grid)} is out of range 1..1000");
            if (Options.Get(LmHeadBits) is not (0 or 4 or 8)) throw new UserErrorException($"lm-head-bits {Options.Get(LmHeadBits)} must be 0, 4 or 8");
            return o;
        }
        catch (UserErrorException e) when (e is not PassException)
        {
            throw new PassException(Name, e.Message);
        }
    }

    public override PassResult Run(Model model, PassContext context)
    {
        Fusion.FusePass.RequireStandardForm(Structure.DecoderStructure.TryRead(model), Name);
        var options = RewriteOptions();
        if (options.Method == QuantizationMethod.Awq)
        {
            var awq = context.TryGet<IAwqCalibration>(out var service) ? service
                : throw new PassException(Name, "method=awq needs calibration data (compile with calibration settings: a calibration text and the model's tokenizer)");
            int existing = model.Graph.Nodes.Count(n => n.Domain == QuantizeInt4Rewrite.MicrosoftDomain && n.OpType == QuantizeInt4Rewrite.OpType);
            var selector = new LinearLayerSelector(options.Targets, options.Exclude);
            var initializers = new HashSet<Value>(model.Graph.Initializers, ReferenceEqualityComparer.Instance);
            if (existing > 0 && !model.Graph.Nodes.Any(n => n.OpType == "MatMul" && selector.IsTarget(n.Name) && n.Inputs.Count == 2 && n.Inputs[1] is { } w && initializers.Contains(w)))
                throw new PassException(Name, $"model is already quantized: it has {existing} MatMulNBits nodes and no target MatMul left");
            var search = new AwqSearchSettings(Options.Get(Grid), Options.Get(DuoScaling), Options.Get(Clip),
                Options.Get(Sequential) == "quantized" ? AwqSequential.Quantized : AwqSequential.Float);
            IReadOnlyDictionary<string, AwqWeightScaling> scaling;
            try
            {
                // Calibration runs block regions cut at block inputs, which fused skip norms would straddle.
                scaling = Fusion.SkipNormFusion.WithResidualAdds(model, Name, () => awq.Calibrate(model, options, search, context));
            }
            catch (UserErrorException e) when (e is not PassException)
            {
                throw new PassException(Name, e.Message);
            }
            options = options with { AwqScaling = scaling };
        }
        QuantizeInt4Result result;
        try
        {
            result = new QuantizeInt4Rewrite(options).Apply(model);
        }
        catch (InvalidDataException e)
        {
            throw new PassException(Name, e.Message);
        }
        catch (UserErrorException e) when (e is not PassException)
        {
            throw new PassException(Name, e.Message);
        }
        foreach (var s in result.Skipped) context.Info($"quantize-int4: kept {s.NodeName} in full precision: {s.Reason}");
        var counters = new CounterSet();
        if (Options.Get(LmHeadBits) is var headBits and > 0)
        {
            // lm_head alone: the "other" linear layers with the default exclusions except lm_head's (routers, shared-expert gate).
            var headOptions = options with
            {
                Method = QuantizationMethod.Rtn,
                AwqScaling = null,
                Bits = headBits,
                Targets = QuantizeTargets.Other,
                Exclude = [.. options.Exclude.Where(p => p != LmHeadPattern), .. QuantizeInt4Options.DefaultExclude.Where(p => p != LmHeadPattern)],
            };
            QuantizeInt4Result head;
            try
            {
                head = new QuantizeInt4Rewrite(headOptions).Apply(model);
            }
            catch (InvalidDataException e)
            {
                throw new PassException(Name, e.Message);
            }
            counters.Add("lm-head-quantized", head.MatMulsQuantized);
            counters.Add("bytes-before", head.BytesBefore);
            counters.Add("bytes-after", head.BytesAfter);
        }
        counters.Add("matmuls-quantized", result.MatMulsQuantized);
        counters.Add("weights-quantized", result.WeightsQuantized);
        counters.Add("bytes-before", result.BytesBefore);
        counters.Add("bytes-after", result.BytesAfter);
        counters.Add("skipped", result.Skipped.Count);
        return PassResult.From(result.Changed, counters);
    }
}
