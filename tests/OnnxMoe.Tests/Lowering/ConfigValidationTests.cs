using System.Text.Json.Nodes;
using OnnxMoe.Checkpoints;
using OnnxMoe.Lowering;
using OnnxMoe.Tests.Cli;

namespace OnnxMoe.Tests.Lowering;

/// <summary>
/// Each family's config.json schema and the config/weights consistency checks: a bad field is one
/// <see cref="CheckpointException"/> line naming the file, the field and the value, before anything is built.
/// </summary>
public sealed class ConfigValidationTests
{
    /// <summary>A checkpoint folder with the family's weights (linked) and <paramref name="edit"/> applied to its config.</summary>
    private static TempFolder WithConfig(string family, Action<JsonObject> edit, Func<string, string>? raw = null)
    {
        var folder = new TempFolder();
        string source = FamilyData.Dir(family);
        foreach (var file in Directory.GetFiles(source))
            if (Path.GetFileName(file) != "config.json") File.CreateSymbolicLink(folder[Path.GetFileName(file)], file);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!.AsObject();
        edit(config);
        string text = config.ToJsonString();
        File.WriteAllText(folder["config.json"], raw?.Invoke(text) ?? text);
        return folder;
    }

    private static string Refused(string family, Action<JsonObject> edit, Func<string, string>? raw = null)
    {
        using var folder = WithConfig(family, edit, raw);
        var e = Assert.Throws<CheckpointException>(() =>
        {
            using var ckpt = CheckpointFolder.Open(folder.Path);
            DecoderLowering.Lower(ckpt);
        });
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith(folder.Path, e.Message);
        return e.Message;
    }

    public static TheoryData<string, string, string, string> BadFields => new()
    {
        // family, field, JSON value, expected text
        { "mixtral", "num_hidden_layers", "-3", "field 'num_hidden_layers' is -3; it must be at least 1" },
        { "mixtral", "num_hidden_layers", "0", "field 'num_hidden_layers' is 0" },
        { "mixtral", "num_hidden_layers", "1000000000", "field 'num_hidden_layers' is 1000000000; it must be at most" },
        { "mixtral", "num_local_experts", "1000000000", "field 'num_local_experts' is 1000000000; it must be at most" },
        { "mixtral", "num_experts_per_tok", "99", "field 'num_experts_per_tok' is 99; it must be at most num_local_experts" },
        { "mixtral", "rope_theta", "0", "field 'rope_theta' is 0; it must be greater than 0" },
        { "mixtral", "rope_theta", "-10000", "field 'rope_theta' is -10000" },
        { "mixtral", "rope_theta", "1e999", "field 'rope_theta' is 1e999; it should be a finite number" },
        { "mixtral", "rms_norm_eps", "-1e-05", "field 'rms_norm_eps' is -1e-05" },
        { "mixtral", "max_position_embeddings", "0", "field 'max_position_embeddings' is 0" },
        { "mixtral", "hidden_size", "\"128\"", "field 'hidden_size' is \"128\"; it should be an integer" },
        { "mixtral", "rope_scaling", "{\"type\":\"linear\",\"factor\":2}", "field 'rope_scaling' is {\"type\":\"linear\",\"factor\":2}: not supported" },
        { "qwen3_moe", "head_dim", "-4", "field 'head_dim' is -4; it must be at least 2" },
        { "qwen3_moe", "mlp_only_layers", "[99]", "field 'mlp_only_layers' holds 99; it must be below num_hidden_layers" },
        { "qwen2_moe", "decoder_sparse_step", "0", "field 'decoder_sparse_step' is 0" },
        { "qwen2_moe", "use_sliding_window", "true", "field 'use_sliding_window' is true: not supported" },
        { "deepseek", "first_k_dense_replace", "99", "field 'first_k_dense_replace' is 99; it must be below num_hidden_layers" },
        { "deepseek", "scoring_func", "\"sigmoid\"", "field 'scoring_func' is \"sigmoid\"; supported: softmax" },
        { "olmoe", "num_key_value_heads", "3", "field 'num_key_value_heads' is 3; it must divide num_attention_heads" },
    };

    [Theory]
    [MemberData(nameof(BadFields))]
    public void BadFieldIsOneLineNamingFieldAndValue(string family, string field, string value, string expected)
    {
        var message = Refused(family, c => c[field] = "@@VALUE@@", text => text.Replace("\"@@VALUE@@\"", value));
        Assert.Contains("config.json: " + expected, message);
    }

    [Fact]
    public void EosIdOutsideTheVocabularyIsRefused()
    {
        var message = Refused("mixtral", c => c["eos_token_id"] = c["vocab_size"]!.GetValue<int>());
        Assert.Contains("field 'eos_token_id' is", message);
        Assert.Contains("below vocab_size", message);
    }

    [Fact]
    public void FewerLayersInTheConfigThanInTheWeightsIsRefused()
    {
        var message = Refused("mixtral", c => c["num_hidden_layers"] = c["num_hidden_layers"]!.GetValue<int>() - 1);
        Assert.Contains("field 'num_hidden_layers' is", message);
        Assert.Contains("but the weights hold layers 0..", message);
    }

    [Fact]
    public void MoreLayersInTheConfigThanInTheWeightsIsRefused()
    {
        var message = Refused("olmoe", c => c["num_hidden_layers"] = c["num_hidden_layers"]!.GetValue<int>() + 2);
        Assert.Contains("but the weights hold layers 0..", message);
    }

    [Fact]
    public void NoSharedExpertsWhileTheirWeightsExistIsRefused()
    {
        Assert.Contains("field 'n_shared_experts' is 0 (no shared experts) but the weights hold", Refused("deepseek", c => c["n_shared_experts"] = 0));
        Assert.Contains("field 'shared_expert_intermediate_size' is 0 (no shared experts)", Refused("qwen2_moe", c => c["shared_expert_intermediate_size"] = 0));
    }

    [Fact]
    public void HiddenSizeAndVocabSizeAreCheckedAgainstTheEmbedding()
    {
        Assert.Contains("field 'hidden_size' is 96 but model.embed_tokens.weight is [256,64] (width 64)", Refused("qwen3_moe", c => c["hidden_size"] = 96));
        Assert.Contains("field 'vocab_size' is 100 but model.embed_tokens.weight is", Refused("mixtral", c => c["vocab_size"] = 100));
    }

    [Fact]
    public void FewerExpertsInTheConfigThanInTheWeightsIsRefused()
    {
        Assert.Contains("field 'num_experts' is 2 but", Refused("olmoe", c => { c["num_experts"] = 2; c["num_experts_per_tok"] = 1; }));
    }

    [Fact]
    public void DuplicateKeysAreRefused()
    {
        Assert.Contains("field 'hidden_size' appears more than once", Refused("mixtral", _ => { }, text => text.Replace("{", "{\"hidden_size\":1,")));
    }

    [Fact]
    public void EveryBundledCheckpointPassesItsSchema()
    {
        foreach (var name in FamilyData.Names.Concat(FamilyData.TrainedModels))
        {
            using var ckpt = CheckpointFolder.Open(FamilyData.Dir(name));
            Assert.NotEmpty(DecoderLowering.Lower(ckpt).Spec.Layers);
        }
    }

    [Fact]
    public void BrokenTokenizerConfigIsRefusedBeforeItIsCopied()
    {
        using var folder = WithConfig("mixtral", _ => { });
        File.WriteAllText(folder["tokenizer_config.json"], "{\"bos_token\": \"<s>\", ");
        var e = Assert.Throws<CheckpointException>(() => CheckpointFolder.Open(folder.Path).Dispose());
        Assert.StartsWith(folder["tokenizer_config.json"] + ": not valid JSON", e.Message);
        File.WriteAllText(folder["tokenizer_config.json"], "[1, 2]");
        e = Assert.Throws<CheckpointException>(() => CheckpointFolder.Open(folder.Path).Dispose());
        Assert.Contains("the top level must be a JSON object", e.Message);
    }

    [Fact]
    public void SafetensorsHeaderSizesAreCheckedBeforeUse()
    {
        using var folder = new TempFolder();
        string Header(string json) => HeaderBytes(System.Text.Encoding.UTF8.GetBytes(json));
        string HeaderBytes(byte[] bytes)
        {
            string path = folder["t.safetensors"];
            File.WriteAllBytes(path, [.. BitConverter.GetBytes((ulong)bytes.Length), .. bytes, 0, 0, 0, 0]);
            return Assert.Throws<CheckpointException>(() => SafetensorsFile.Open(path).Dispose()).Message;
        }
        Assert.Contains("bad data_offsets", Header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",\"4\"]}}"));
        Assert.Contains("overflows a 64-bit byte count", Header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}"));
        Assert.Contains("overflows a 64-bit byte count", Header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2305843009213693952],\"data_offsets\":[0,4]}}"));
        Assert.Contains("= 4398046511104 bytes", Header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776],\"data_offsets\":[0,4]}}"));
        Assert.Contains("not valid UTF-8", HeaderBytes([.. "{\""u8, 0xFF, 0xFE, .. "\":1}"u8]));
    }

    [Fact]
    public void TrimmingCountsAboveTheModelsAreUserErrors()
    {
        using var output = new TempFolder();
        var keep = CliRunner.Run("compile", "models/tiny-mixtral", "-o", output["a"], "--pipeline", "prune-experts{keep=12}", "--samples", "2", "--seq-len", "16");
        Assert.Equal(1, keep.ExitCode);
        Assert.Contains("prune-experts: keep=12 but the model's MoE layers have at most 8 routed experts", keep.Stderr);
        var drop = CliRunner.Run("compile", "models/tiny-mixtral", "-o", output["b"], "--pipeline", "drop-moe-layers{n=9}", "--samples", "2", "--seq-len", "16");
        Assert.Equal(1, drop.ExitCode);
        Assert.Contains("drop-moe-layers: n=9 but the model has only 4 MoE layers", drop.Stderr);
        Assert.False(Directory.Exists(output["a"]) || Directory.Exists(output["b"]));
    }

    [Fact]
    public void ParseErrorsAreShortAndPointAtTheCommandsHelp()
    {
        var r = CliRunner.Run("compile", "models/tiny-mixtral", "-o", "x", "--samples", "abc");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("Cannot parse argument 'abc' for option '--samples' as an integer", r.Stderr);
        Assert.DoesNotContain("System.", r.Stderr);
        Assert.EndsWith("see onnxmoe compile --help", r.Stderr.TrimEnd());
        Assert.True(r.Stderr.Length < 300, r.Stderr);
        var missing = CliRunner.Run("compile");
        Assert.Equal(1, missing.ExitCode);
        Assert.DoesNotContain("Usage:", missing.Stderr + missing.Stdout);
    }
}
