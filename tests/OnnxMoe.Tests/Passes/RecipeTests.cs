using OnnxMoe.Compiler.Recipes;
using OnnxMoe.Ir;
using OnnxMoe.Passes;

namespace OnnxMoe.Tests.Passes;

public class RecipeTests
{
    private sealed class StubPass(PassOptions options) : Pass(options.Info, options)
    {
        public override PassResult Run(Model model, PassContext context) => PassResult.Unchanged;
    }

    private static readonly PassOption<PassCount> DropBlocksN = PassOption.Count("n", null, "");

    /// <summary>The default registry plus stand-ins with the options the built-in recipes use (the real passes live in other branches).</summary>
    private static PassRegistry Registry()
    {
        var r = TestGraphs.CoreRegistry();
        void Add(PassInfo info) => r.Register(info, o => new StubPass(o));
        Add(new PassInfo("prune-experts", "stub", PassOption.Count("keep", null, ""), PassOption.String("mode", "layerwise", "", "layerwise", "global"),
            PassOption.PairList("experts", "")));
        Add(new PassInfo("drop-moe-layers", "stub", PassOption.IntList("layers", ""), PassOption.Count("n", null, ""), PassOption.Bool("norm", true, "")));
        Add(new PassInfo("drop-blocks", "stub", PassOption.IntList("blocks", ""), DropBlocksN,
            PassOption.String("mode", "discrete", "", "discrete", "consecutive")));
        Add(new PassInfo("quantize-int4", "stub", PassOption.String("method", "rtn", "", "rtn", "awq"), PassOption.Int("block-size", 128, ""),
            PassOption.Int("accuracy-level", OnnxMoe.Passes.Quantization.QuantizeInt4Options.DefaultAccuracyLevel, ""), PassOption.Float("ratio", null, ""), PassOption.Int("lm-head-bits", 0, "")));
        return r;
    }

    private static Recipe Parse(string yaml) => RecipeLoader.Parse(yaml, "test.yaml", Registry());

    private static RecipeException Fails(string yaml) => Assert.Throws<RecipeException>(() => Parse(yaml));

    [Fact]
    public void Built_in_recipes_are_listed_and_map_to_pipelines()
    {
        Assert.Equal(["block-drop-4", "block-drop-8", "block-drop-awq", "block-drop-awq-fast", "expert-drop", "int4-awq", "int4-rtn", "layer-drop-4", "layer-drop-8"], BuiltinRecipes.Names);
        var expected = new Dictionary<string, string>
        {
            ["block-drop-4"] = "drop-blocks{n=12.5%},cleanup",
            ["block-drop-8"] = "drop-blocks{n=25%},cleanup",
            ["block-drop-awq"] = "drop-blocks{n=25%},quantize-int4{method=awq,lm-head-bits=8},cleanup",
            ["block-drop-awq-fast"] = "drop-blocks{n=25%},quantize-int4{method=awq,lm-head-bits=8},cleanup",
            ["expert-drop"] = "prune-experts{keep=75%,mode=global},cleanup",
            ["int4-awq"] = "quantize-int4{method=awq,lm-head-bits=8},cleanup",
            ["int4-rtn"] = "quantize-int4{lm-head-bits=8},cleanup",
            ["layer-drop-4"] = "drop-moe-layers{n=12.5%},cleanup",
            ["layer-drop-8"] = "drop-moe-layers{n=25%},cleanup",
        };
        var registry = Registry();
        foreach (var name in BuiltinRecipes.Names)
        {
            var r = BuiltinRecipes.Load(name, registry);
            Assert.Equal(name, r.Name);
            Assert.Equal(expected[name], r.Pipeline.ToString());
            Assert.Equal(new CalibrationSettings(128, 2048, "default"), r.Calibration);
            Assert.NotEmpty(r.Description);
            var again = RecipeLoader.Parse(r.ToYaml(), "round-trip", registry);
            Assert.Equal(r.Pipeline, again.Pipeline);
            Assert.Equal(r.Description, again.Description);
        }
        Assert.Equal(8, BuiltinRecipes.Load("block-drop-8", registry).Pipeline.Steps[0].Options.Get(DropBlocksN).Resolve(32));
    }

    [Fact]
    public void A_built_in_recipe_whose_pass_is_missing_fails_clearly()
    {
        var e = Assert.Throws<RecipeException>(() => BuiltinRecipes.Load("block-drop-awq", TestGraphs.CoreRegistry()));
        Assert.Equal("built-in recipe block-drop-awq:9:5: unknown pass 'drop-blocks' (known passes: cleanup, dedupe-constants, remove-unused, topo-sort)", e.Message);
        Assert.IsAssignableFrom<UserErrorException>(e);
    }

    [Fact]
    public void List_values_in_every_form_mean_the_same_pipeline()
    {
        var text = PassPipeline.Parse("drop-blocks{blocks=3,7,mode=consecutive},prune-experts{experts=1:0,2:3},cleanup", Registry());
        foreach (var yaml in new[]
        {
            "name: r\npipeline:\n  - drop-blocks: { blocks: [3, 7], mode: consecutive }\n  - prune-experts: { experts: [\"1:0\", \"2:3\"] }\n  - cleanup\n",
            "name: r\npipeline:\n  - drop-blocks: { blocks: \"3,7\", mode: consecutive }\n  - prune-experts: { experts: [[1, 0], [2, 3]] }\n  - cleanup:\n",
            "name: r\npipeline:\n  - drop-blocks:\n      blocks:\n        - 3\n        - 7\n      mode: consecutive\n  - prune-experts: { experts: \"1:0, 2:3\" }\n  - cleanup: {}\n",
        })
            Assert.Equal(text, Parse(yaml).Pipeline);
    }

    [Fact]
    public void Calibration_defaults_and_relative_text_paths()
    {
        var r = Parse("name: r\npipeline: []\n");
        Assert.Equal(new CalibrationSettings(), r.Calibration);
        Assert.Empty(r.Pipeline.Steps);

        var dir = Path.Combine(Path.GetTempPath(), "onnxmoe-recipe-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var file = Path.Combine(dir, "mine.yaml");
            File.WriteAllText(file, "name: mine\ncalibration: { samples: 16, seq-len: 256, text: data/held-out.txt }\npipeline: [cleanup]\n");
            var loaded = RecipeLoader.Resolve(file, Registry());
            Assert.Equal(new CalibrationSettings(16, 256, Path.Combine(dir, "data", "held-out.txt")), loaded.Calibration);
            Assert.Equal("cleanup", loaded.Pipeline.ToString());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("name: r\npipline: []\n", "test.yaml:2:1: unknown recipe key 'pipline' (did you mean 'pipeline'?); allowed: name, description, calibration, pipeline")]
    [InlineData("name: r\n", "test.yaml:1:1: missing key 'pipeline'")]
    [InlineData("name: R_1\npipeline: []\n", "test.yaml:1:7: recipe name 'R_1' must be kebab-case")]
    [InlineData("name: r\ncalibration: { samples: many }\npipeline: []\n", "test.yaml:2:25: calibration.samples must be a positive integer, got 'many'")]
    [InlineData("name: r\ncalibration: { seqlen: 4 }\npipeline: []\n", "test.yaml:2:16: unknown calibration key 'seqlen' (did you mean 'seq-len'?)")]
    [InlineData("name: r\npipeline:\n  - drop-blocks: { n: lots }\n", "test.yaml:3:23: bad value for option 'n' of drop-blocks: 'lots' is not a count")]
    [InlineData("name: r\npipeline:\n  - drop-blocks: { blokcs: [1] }\n", "test.yaml:3:20: unknown option 'blokcs' for pass drop-blocks (did you mean 'blocks'?)")]
    [InlineData("name: r\npipeline:\n  - drop-block: { n: 2 }\n", "test.yaml:3:5: unknown pass 'drop-block' (did you mean 'drop-blocks'?)")]
    [InlineData("name: r\npipeline:\n  - drop-blocks: { mode: consecutiv }\n", "not one of discrete, consecutive (did you mean 'consecutive'?)")]
    [InlineData("name: r\npipeline:\n  - drop-blocks: { blocks: [1, x] }\n", "test.yaml:3:32: bad value for option 'blocks' of drop-blocks: 'x' is not an int list element")]
    [InlineData("name: r\npipeline:\n  - cleanup: { inputs: true }\n", "test.yaml:3:14: 'cleanup' is an alias of remove-unused,dedupe-constants,topo-sort and takes no options")]
    [InlineData("name: r\npipeline:\n  - drop-blocks: 3\n", "test.yaml:3:18: options of drop-blocks must be a mapping")]
    [InlineData("name: r\npipeline:\n  - { drop-blocks: {}, cleanup: {} }\n", "test.yaml:3:5: a pipeline step is a pass name, or one")]
    [InlineData("name: r\npipeline: drop-blocks\n", "test.yaml:2:11: 'pipeline' must be a list of steps")]
    [InlineData("name: r\npipeline: [\n", "test.yaml:")]
    [InlineData("- just\n- a list\n", "test.yaml:1:1: a recipe is a mapping")]
    public void Bad_recipes_give_one_clear_message_with_position(string yaml, string expected)
    {
        var e = Fails(yaml);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void Unknown_recipe_name_lists_the_built_ins()
    {
        var e = Assert.Throws<RecipeException>(() => RecipeLoader.Resolve("block-drop-9", Registry()));
        Assert.Contains("did you mean 'block-drop-4'?", e.Message);
        Assert.Contains("built-in: block-drop-4, block-drop-8, block-drop-awq, block-drop-awq-fast, expert-drop, int4-awq, int4-rtn, layer-drop-4, layer-drop-8", e.Message);
    }

    [Fact]
    public void Yaml_round_trip_keeps_strings_and_floats()
    {
        var registry = Registry();
        var r = new Recipe("odd", "quotes \" and: colons\nnew line", new CalibrationSettings(1, 2, "C:\\x y.txt"),
            PassPipeline.Parse("quantize-int4{ratio=0.1,block-size=64},drop-blocks{blocks=[]}", registry));
        var back = RecipeLoader.Parse(r.ToYaml(), "odd.yaml", registry);
        Assert.Equal(r.Pipeline, back.Pipeline);
        Assert.Equal(r.Description, back.Description);
        Assert.Equal(r.Calibration, back.Calibration);
    }
}
