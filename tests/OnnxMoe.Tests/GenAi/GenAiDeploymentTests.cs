using System.Text.Json;
using Microsoft.ML.OnnxRuntimeGenAI;
using OnnxMoe.Checkpoints;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Inference.Generation;
using OnnxMoe.Inference.Models;
using DataType = OnnxMoe.Ir.DataType;
using OnnxMoe.Lowering;
using OnnxMoe.Runtime;
using OnnxMoe.Tests.Lowering;
using OrtGenerator = OnnxMoe.Inference.Generation.Generator;
using OurTokenizer = OnnxMoe.Inference.Tokenization.Tokenizer;
using GenAiTokenizer = Microsoft.ML.OnnxRuntimeGenAI.Tokenizer;
using GenAiGenerator = Microsoft.ML.OnnxRuntimeGenAI.Generator;

namespace OnnxMoe.Tests.GenAi;

/// <summary>Compiled folders as they ship: ONNX Runtime GenAI 0.18 loads them with the genai_config.json compile wrote.</summary>
internal static class GenAiRun
{
    /// <summary>GenAI's greedy ids after <paramref name="prompt"/>: at most <paramref name="maxNew"/>, a final EOS included.</summary>
    public static int[] Greedy(string folder, int[] prompt, int maxNew)
    {
        OrtRuntime.EnsureInitialized(); // GenAI then uses the libonnxruntime this process already has
        using var model = new Model(folder);
        using var parameters = new GeneratorParams(model);
        parameters.SetSearchOption("max_length", prompt.Length + maxNew);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new GenAiGenerator(model, parameters);
        generator.AppendTokens(prompt);
        var ids = new List<int>();
        while (!generator.IsDone())
        {
            generator.GenerateNextToken();
            ids.Add(generator.GetNextTokens()[0]); // GetSequence would leave out a final EOS
        }
        return [.. ids];
    }

    /// <summary>onnxmoe's own greedy generation (OrtDecoder + Generator) on the same folder.</summary>
    public static int[] OnnxMoeGreedy(string folder, int[] prompt, int maxNew)
    {
        var modelFolder = ModelFolder.Open(folder);
        using var decoder = OrtDecoder.Open(modelFolder);
        var tokenizer = modelFolder.HasTokenizer ? modelFolder.LoadTokenizer()
            : OurTokenizer.FromJson("""{"model":{"type":"BPE","vocab":{},"merges":[]}}"""); // ids only: the text is not compared
        var generator = new OrtGenerator(decoder, tokenizer, modelFolder.EosTokenIds, modelFolder.PadTokenId, modelFolder.GenAi?.ContextLength);
        return [.. generator.Generate(prompt, new GenerationOptions { MaxNewTokens = maxNew }).GeneratedIds];
    }
}

[Collection(nameof(GenAiRun))]
public sealed class GenAiDeploymentTests : IDisposable
{
    private const int NewTokens = 40;
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-genai-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static TheoryData<string, string> Cases()
    {
        var d = new TheoryData<string, string>();
        foreach (var family in FamilyData.Names)
            foreach (var variant in new[] { "fp32", "fp16", "int4", "block-dropped", "layer-dropped", "expert-pruned" })
                d.Add(family, variant);
        return d;
    }

    /// <summary>The pipeline of a variant; the trimming ones name layers that are MoE in that family.</summary>
    private static string Pipeline(string family, string variant)
    {
        using var checkpoint = CheckpointFolder.Open(FamilyData.Dir(family));
        var moeLayers = DecoderLowering.Lower(checkpoint).Spec.Layers.Where(l => l.IsMoe).Select(l => l.Index).ToList();
        return variant switch
        {
            "int4" => "quantize-int4{method=rtn,block-size=32}",
            "block-dropped" => "drop-blocks{blocks=1}",
            "layer-dropped" => $"drop-moe-layers{{layers={moeLayers[^1]}}}",
            "expert-pruned" => $"prune-experts{{experts={moeLayers[0]}:0,{moeLayers[0]}:3}}",
            _ => "",
        };
    }

    private string Compile(string family, string variant)
    {
        string output = Path.Combine(_dir, family + "-" + variant);
        CompileJob.Run(new CompileRequest
        {
            Checkpoint = FamilyData.Dir(family),
            Output = output,
            WeightType = variant == "fp16" ? DataType.Float16 : DataType.Float,
            Pipeline = Pipeline(family, variant),
        });
        return output;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void GenAi_greedy_tokens_equal_onnxmoe_generation(string family, string variant)
    {
        string folder = Compile(family, variant);
        Assert.Equal("decoder", GenAiConfig.Load(Path.Combine(folder, "genai_config.json")).ModelType);
        // Random-weight models often emit EOS early; these prompts keep every variant of the family going for 32+ tokens.
        int[] prompt = family == "deepseek" ? [4, 44, 14, 24, 34] : [4, 44, 14, 24];
        var ours = OnnxMoeGreedy(folder, prompt);
        var theirs = GenAiRun.Greedy(folder, prompt, NewTokens);
        Assert.Equal(ours, theirs);
        Assert.True(ours.Length >= 32, $"{family} {variant}: only {ours.Length} new tokens before EOS");
    }

    private static int[] OnnxMoeGreedy(string folder, int[] prompt) => GenAiRun.OnnxMoeGreedy(folder, prompt, NewTokens);
}

/// <summary>GenAI's tokenizer (onnxruntime-extensions) on the trained models' tokenizer.json, against tokenizer_golden.json (our ids).</summary>
[Collection(nameof(GenAiRun))]
public sealed class GenAiTokenizerTests
{
    private static List<(string Text, int[] Ids, string Decoded)> Golden(string model)
    {
        using var golden = JsonDocument.Parse(File.ReadAllText(Path.Combine(FamilyData.Dir(model), "tokenizer_golden.json")));
        return [.. golden.RootElement.GetProperty("cases").EnumerateArray().Select(c => (c.GetProperty("text").GetString()!,
            c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(), c.GetProperty("decoded").GetString()!))];
    }

    /// <summary>
    /// (text, our ids, GenAI's ids, golden decoding, GenAI's decoding of its ids) per golden case. GenAI opens a tokenizer
    /// through a folder's genai_config.json, so the checkpoint's tokenizer.json and tokenizer_config.json go into a
    /// folder with the genai_config.json compile would write (no model needed).
    /// </summary>
    private static List<(string Text, int[] Ours, int[] Theirs, string Decoded, string TheirDecoded)> Encode(string model)
    {
        OrtRuntime.EnsureInitialized();
        string dir = Directory.CreateTempSubdirectory("onnxmoe-genai-tok-").FullName;
        try
        {
            using (var checkpoint = CheckpointFolder.Open(FamilyData.Dir(model)))
            {
                var spec = DecoderLowering.Lower(checkpoint).Spec;
                File.WriteAllText(Path.Combine(dir, "genai_config.json"), GenAiConfigFactory.From(spec, "model.onnx", spec.NumLayers).ToJson());
            }
            foreach (var file in new[] { "tokenizer.json", "tokenizer_config.json" })
                File.Copy(Path.Combine(FamilyData.Dir(model), file), Path.Combine(dir, file));
            return Encode(model, dir);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    private static List<(string Text, int[] Ours, int[] Theirs, string Decoded, string TheirDecoded)> Encode(string model, string dir)
    {
        using var tokenizer = new GenAiTokenizer(dir);
        tokenizer.UpdateOptions(new Dictionary<string, string> { ["add_special_tokens"] = "true" });
        return [.. Golden(model).Select(c =>
        {
            using var sequences = tokenizer.Encode(c.Text);
            int[] ids = sequences[0].ToArray();
            return (c.Text, c.Ids, ids, c.Decoded, tokenizer.Decode(ids));
        })];
    }

    [Fact]
    public void GenAi_tokenizer_gives_our_ids_on_tiny_deepseek()
    {
        var cases = Encode("tiny-deepseek");
        Assert.True(cases.Count >= 20);
        foreach (var c in cases)
        {
            Assert.True(c.Ours.SequenceEqual(c.Theirs), $"{JsonSerializer.Serialize(c.Text)}: ours [{string.Join(",", c.Ours)}] GenAI [{string.Join(",", c.Theirs)}]");
            Assert.Equal(c.Decoded, c.TheirDecoded);
        }
    }

    [Fact]
    public void GenAi_tokenizer_on_tiny_mixtral_differs_only_where_punctuation_is_split_off()
    {
        var cases = Encode("tiny-mixtral");
        Assert.True(cases.Count >= 20);
        // GenAI (onnxruntime-extensions) splits punctuation off the word before it before applying the BPE merges, where
        // Hugging Face's tokenizer (and ours) merge across it: "▁earth." is one token for us (1571) and "▁earth" (785)
        // + "." (282) for GenAI; likewise "▁God," and "light:" / "light.". The text is the same either way, and so is
        // every id sequence of a string without punctuation attached to a word. The cases that differ, as measured:
        string[] knownDifferent =
        [
            "In the beginning God created the heaven and the earth.",
            "And God said, Let there be light: and there was light.",
            "Punctuation!? (parens) [brackets] {braces} \"quotes\" 'single' -- dash; colon: semi;",
            "mixed: Ελληνικά, русский, العربية",
            "the LORD thy God, which brought thee out of the land of Egypt",
        ];
        foreach (var c in cases)
        {
            // GenAI decodes the lone BOS of the empty string to U+FFFD, where we (skipping special tokens) give "".
            Assert.Equal(c.Text == "" ? "\uFFFD" : c.Decoded, c.TheirDecoded);
            if (!AttachedPunctuation.IsMatch(c.Text))
                Assert.True(c.Ours.SequenceEqual(c.Theirs), $"{JsonSerializer.Serialize(c.Text)}: ours [{string.Join(",", c.Ours)}] GenAI [{string.Join(",", c.Theirs)}]");
        }
        Assert.Equal(knownDifferent, cases.Where(c => !c.Ours.SequenceEqual(c.Theirs)).Select(c => c.Text));
    }

    private static readonly System.Text.RegularExpressions.Regex AttachedPunctuation = new(@"[\p{L}\p{N}][\p{P}]");
}
