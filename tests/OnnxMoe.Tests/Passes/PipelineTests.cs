using OnnxMoe.Passes;

namespace OnnxMoe.Tests.Passes;

public class PipelineTests
{
    private readonly PassRegistry _registry = TestGraphs.Registry();

    private PassPipeline Parse(string text) => PassPipeline.Parse(text, _registry);

    [Theory]
    [InlineData("drop-blocks{blocks=3,7},quantize-int4{block-size=128}", "drop-blocks{blocks=3,7},quantize-int4{block-size=128}")]
    [InlineData("  drop-blocks { mode = consecutive , blocks = [ 7 , 3 ] } , cleanup ", "drop-blocks{blocks=7,3,mode=consecutive},cleanup")]
    [InlineData("quantize-int4{experts=1:0,2:3,ratio=0.25}", "quantize-int4{ratio=0.25,experts=1:0,2:3}")]
    [InlineData("quantize-int4{block-size=32,ratio=0.5}", "quantize-int4")] // defaults are omitted
    [InlineData("quantize-int4{}", "quantize-int4")]
    [InlineData("drop-blocks{n=25%}", "drop-blocks{n=25%}")]
    [InlineData("drop-blocks{n=4,norm=false}", "drop-blocks{n=4,norm=false}")]
    [InlineData("drop-blocks{blocks=[]}", "drop-blocks{blocks=[]}")]
    [InlineData("quantize-int4{label=\"a, b\\\"c\"}", "quantize-int4{label=\"a, b\\\"c\"}")]
    [InlineData("quantize-int4{label=plain-word.v2}", "quantize-int4{label=plain-word.v2}")]
    [InlineData("quantize-int4{ratio=1}", "quantize-int4{ratio=1.0}")]
    [InlineData("quantize-int4{ratio=1e-3}", "quantize-int4{ratio=0.001}")]
    [InlineData("", "")]
    public void Prints_canonically_and_round_trips(string text, string canonical)
    {
        var p = Parse(text);
        Assert.Equal(canonical, p.ToString());
        Assert.Equal(p, Parse(p.ToString()));
        Assert.Equal(p, Parse(p.Format(includeDefaults: true)));
    }

    [Fact]
    public void Typed_values_reach_the_pass()
    {
        var p = Parse("drop-blocks{blocks=3,7,n=12.5%},quantize-int4{experts=1:0,2:3,block-size=128}");
        var drop = p.Steps[0].Options;
        Assert.Equal([3, 7], drop.Get(FakeDropBlocks.Blocks));
        Assert.Equal(4, drop.Get(FakeDropBlocks.N).Resolve(32));
        Assert.Equal(1, drop.Get(FakeDropBlocks.N).Resolve(4)); // 0.5 rounds away from zero
        Assert.Equal("discrete", drop.Get(FakeDropBlocks.Mode));
        Assert.False(drop.IsExplicit(FakeDropBlocks.Mode));
        var q = p.Steps[1].Options;
        Assert.Equal(128, q.Get(FakeQuantize.BlockSize));
        Assert.Equal(0.5, q.Get(FakeQuantize.Ratio));
        Assert.Equal([new IntPair(1, 0), new IntPair(2, 3)], q.Get(FakeQuantize.Experts));
        Assert.False(q.TryGet(FakeQuantize.Label, out _));
        var e = Assert.Throws<PassException>(() => q.Get(FakeQuantize.Label));
        Assert.Equal("pass quantize-int4: option 'label' is required", e.Message);
    }

    [Fact]
    public void An_option_handle_reads_only_the_pass_that_declares_it()
    {
        // Options are their declarations: another pass's handle, or a second declaration of the same name, is not this pass's option.
        var drop = Parse("drop-blocks{mode=consecutive}").Steps[0].Options;
        var e = Assert.Throws<ArgumentException>(() => drop.Get(FakeQuantize.BlockSize));
        Assert.Equal("option 'block-size' is not declared by pass drop-blocks", e.Message);
        var sameName = PassOption.String("mode", "discrete", "selection", "discrete", "consecutive");
        Assert.Throws<ArgumentException>(() => drop.Get(sameName));
        Assert.Equal("consecutive", drop.Get(FakeDropBlocks.Mode));
    }

    [Fact]
    public void An_option_declared_after_the_info_listing_it_is_caught()
    {
        PassOption? notYetDeclared = null;
        var e = Assert.Throws<ArgumentException>(() => new PassInfo("late", "test", notYetDeclared!));
        Assert.Contains("declare option fields before Info", e.Message);
    }

    [Fact]
    public void Typed_and_textual_options_build_equal_values()
    {
        var typed = PassOptions.Defaults(FakeDropBlocks.Info).With(FakeDropBlocks.Blocks, [7, 3]).With(FakeDropBlocks.Mode, "consecutive")
            .With(FakeDropBlocks.Norm, true);
        var parsed = Parse("drop-blocks{blocks=7,3,mode=consecutive}").Steps[0].Options;
        Assert.Equal(parsed, typed);
        Assert.Equal(parsed.GetHashCode(), typed.GetHashCode());
        Assert.False(typed.IsExplicit(FakeDropBlocks.Norm));   // a default value is not stored
        Assert.Equal("blocks=7,3,mode=consecutive", typed.Format());
        var e = Assert.Throws<ArgumentException>(() => typed.With(FakeDropBlocks.Mode, "sideways"));
        Assert.Equal("option drop-blocks.mode must be one of discrete, consecutive, got 'sideways'", e.Message);
    }

    [Fact]
    public void Explicit_format_spells_out_defaults_in_declared_order()
    {
        var p = Parse("drop-blocks{mode=consecutive,blocks=1}");
        Assert.Equal("drop-blocks{blocks=1,mode=consecutive,norm=true}", p.Format(includeDefaults: true));
    }

    [Theory]
    [InlineData("drop-blokcs{blocks=3}", 0, "unknown pass 'drop-blokcs' (did you mean 'drop-blocks'?)")]
    [InlineData("cleanup,quantise-int4", 8, "did you mean 'quantize-int4'?")]
    [InlineData("drop-blocks{blokcs=3}", 12, "unknown option 'blokcs' for pass drop-blocks (did you mean 'blocks'?)")]
    [InlineData("drop-blocks{blocks=3,xyzzy}", 21, "unknown option 'xyzzy' for pass drop-blocks (options: blocks, n, mode, norm)")]
    [InlineData("drop-blocks{blocks=3;4}", 19, "bad value for option 'blocks' of drop-blocks: '3;4' is not an int list element")]
    [InlineData("drop-blocks{n=3 4}", 16, "expected ',' or '}' after the value of 'n', found '4'")]
    [InlineData("drop-blocks{blocks=3", 20, "missing '}' to close the options of drop-blocks opened at column 12")]
    [InlineData("drop-blocks blocks=3", 12, "expected ',' between passes or '{' to start options")]
    [InlineData("quantize-int4{block-size=big}", 25, "bad value for option 'block-size' of quantize-int4: 'big' is not an int")]
    [InlineData("quantize-int4{ratio=fast}", 20, "'fast' is not a float")]
    [InlineData("drop-blocks{norm=yes}", 17, "'yes' is not a bool")]
    [InlineData("drop-blocks{n=150%}", 14, "not a percentage")]
    [InlineData("drop-blocks{n=-1}", 14, "is not a count")]
    [InlineData("drop-blocks{mode=consecutiv}", 17, "not one of discrete, consecutive (did you mean 'consecutive'?)")]
    [InlineData("quantize-int4{experts=1:0,2}", 26, "'2' is not a pair like 2:3")]
    [InlineData("drop-blocks{blocks=1,blocks=2}", 21, "option 'blocks' of drop-blocks is given twice")]
    [InlineData("cleanup{inputs=true}", 7, "'cleanup' is an alias")]
    [InlineData("drop-blocks{blocks=}", 19, "expected an element of int-list option 'blocks', found '}'")]
    [InlineData("drop-blocks,,cleanup", 12, "expected a pass name")]
    [InlineData("drop-blocks,", 12, "expected a pass name at the end")]
    [InlineData("quantize-int4{label=\"open}", 20, "unterminated string")]
    [InlineData("drop-blocks{blocks=[1,2}", 23, "missing ']'")]
    public void Errors_name_the_problem_and_its_position(string text, int position, string expected)
    {
        var e = Assert.Throws<PipelineException>(() => Parse(text));
        Assert.Contains(expected, e.Problem);
        Assert.Equal(position, e.Position);
        Assert.StartsWith($"pipeline error at column {position + 1}: ", e.Message);
        Assert.EndsWith(new string(' ', position) + "^", e.Message);
    }

    [Fact]
    public void Unknown_pass_far_from_any_name_lists_known_passes()
    {
        var e = Assert.Throws<PipelineException>(() => Parse("zzzzzzzzzzzz"));
        Assert.Contains("known passes: append-identity, break-ir, cleanup,", e.Problem);
    }

    [Fact]
    public void Alias_expands_to_its_passes()
    {
        var passes = Parse("cleanup").CreatePasses().Select(p => p.Name).ToArray();
        Assert.Equal(["remove-unused", "dedupe-constants", "topo-sort"], passes);
    }

    [Fact]
    public void Registry_help_lists_options_with_types_and_defaults()
    {
        var help = _registry.Find("drop-blocks")!.Describe();
        Assert.Equal("""
            drop-blocks: test stand-in
              blocks: int-list  block indices
              n: count  how many
              mode: string (discrete|consecutive) = discrete  selection
              norm: bool = true  use norm
            """.ReplaceLineEndings("\n"), help);
        Assert.Contains("alias of: remove-unused,dedupe-constants,topo-sort", _registry.Find("cleanup")!.Describe());
        Assert.All(new[] { "cleanup", "dedupe-constants", "remove-unused", "topo-sort", "quantize-int4", "drop-blocks", "drop-moe-layers", "prune-experts" }, n => Assert.Contains(n, PassRegistry.CreateDefault().Names));
    }

    [Fact]
    public void Registering_a_name_twice_fails()
    {
        var e = Assert.Throws<ArgumentException>(() => _registry.Register<FakeQuantize>());
        Assert.Contains("quantize-int4 is already registered", e.Message);
    }

    [Fact]
    public void Random_pipelines_round_trip()
    {
        var rng = new Random(1234);
        string[] strings = ["a", "x y", "q\"uote", "back\\slash", "", "25%", "a,b", "{}", "dash-ed"];
        for (int iter = 0; iter < 500; iter++)
        {
            var steps = new List<PipelineStep>();
            int n = rng.Next(0, 4);
            for (int s = 0; s < n; s++)
            {
                if (rng.Next(2) == 0)
                {
                    var o = PassOptions.Defaults(FakeDropBlocks.Info);
                    if (rng.Next(2) == 0) o = o.With(FakeDropBlocks.Blocks, Enumerable.Range(0, rng.Next(0, 4)).Select(_ => rng.Next(-5, 100)).ToArray());
                    if (rng.Next(2) == 0) o = o.With(FakeDropBlocks.N, rng.Next(2) == 0 ? PassCount.Absolute(rng.Next(0, 50)) : PassCount.Percent(rng.Next(0, 1001) / 10.0));
                    if (rng.Next(2) == 0) o = o.With(FakeDropBlocks.Mode, rng.Next(2) == 0 ? "discrete" : "consecutive");
                    if (rng.Next(2) == 0) o = o.With(FakeDropBlocks.Norm, rng.Next(2) == 0);
                    steps.Add(new PipelineStep(_registry.Find("drop-blocks")!, o));
                }
                else
                {
                    var o = PassOptions.Defaults(FakeQuantize.Info);
                    if (rng.Next(2) == 0) o = o.With(FakeQuantize.BlockSize, rng.Next(int.MinValue, int.MaxValue));
                    if (rng.Next(2) == 0) o = o.With(FakeQuantize.Ratio, (rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-20, 20)));
                    if (rng.Next(2) == 0) o = o.With(FakeQuantize.Label, strings[rng.Next(strings.Length)]);
                    if (rng.Next(2) == 0) o = o.With(FakeQuantize.Experts, Enumerable.Range(0, rng.Next(0, 4)).Select(_ => new IntPair(rng.Next(-3, 64), rng.Next(0, 128))).ToArray());
                    steps.Add(new PipelineStep(_registry.Find("quantize-int4")!, o));
                }
            }
            var p = new PassPipeline(steps);
            var text = p.ToString();
            Assert.Equal(p, Parse(text));
            Assert.Equal(text, Parse(text).ToString());
            Assert.Equal(p, Parse(p.Format(includeDefaults: true)));
        }
    }
}
