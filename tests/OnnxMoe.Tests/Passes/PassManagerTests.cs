using OnnxMoe.Ir;
using OnnxMoe.Passes;

namespace OnnxMoe.Tests.Passes;

public class PassManagerTests
{
    private readonly PassRegistry _registry = TestGraphs.Registry();

    [Fact]
    public void Runs_passes_in_order_aggregates_counters_and_records_the_pipeline()
    {
        var model = TestGraphs.WithDeadCode(out _, out _, out _);
        var order = new List<string>();
        var changedAfter = new List<string>();
        var externallyChecked = new List<string>();
        var pm = new PassManager
        {
            AfterChange = (m, r) => changedAfter.Add(r.Invocation),
            ExternalCheck = (m, name) => externallyChecked.Add(name),
        };
        var pipeline = PassPipeline.Parse("append-identity{tag=a},cleanup,append-identity{tag=b},topo-sort", _registry);
        var report = pm.Run(model, pipeline, new PassContext().Set(order));

        Assert.Equal(["a", "b"], order);
        Assert.Equal(["append-identity{tag=a}", "remove-unused", "dedupe-constants", "topo-sort", "append-identity{tag=b}", "topo-sort"],
            report.Passes.Select(p => p.Invocation));
        Assert.Equal([true, true, false, false, true, false], report.Passes.Select(p => p.Changed));
        Assert.Equal(["append-identity{tag=a}", "remove-unused", "append-identity{tag=b}"], changedAfter);
        Assert.Equal(["append-identity", "remove-unused", "append-identity"], externallyChecked);
        Assert.Equal(2, report.Counters["nodes-added"]);
        Assert.Equal(2, report.Counters["nodes-removed"]);
        Assert.True(report.Changed);
        Assert.Equal("append-identity{tag=a},cleanup,append-identity{tag=b},topo-sort", report.Pipeline);
        Assert.Equal(report.Pipeline, model.GetMetadata(PassManager.PipelineMetadataKey));
        Assert.Equal("out_b", model.Graph.Outputs[0].Name);
        Assert.Empty(new IrVerifier().Check(model));

        // A second run appends, so the metadata reads as the composed pipeline.
        pm.Run(model, PassPipeline.Parse("remove-unused{inputs=true}", _registry));
        var recorded = model.GetMetadata(PassManager.PipelineMetadataKey)!;
        Assert.Equal("append-identity{tag=a},cleanup,append-identity{tag=b},topo-sort,remove-unused{inputs=true}", recorded);
        Assert.Equal(5, PassPipeline.Parse(recorded, _registry).Steps.Count);
    }

    [Fact]
    public void Recorded_pipeline_spells_out_defaults()
    {
        var model = TestGraphs.WithDeadCode(out _, out _, out _);
        new PassManager().Run(model, PassPipeline.Parse("remove-unused", _registry));
        Assert.Equal("remove-unused{inputs=false}", model.GetMetadata(PassManager.PipelineMetadataKey));
    }

    [Fact]
    public void A_pass_that_breaks_the_IR_is_named()
    {
        var model = TestGraphs.WithDeadCode(out _, out _, out _);
        var pm = new PassManager();
        var e = Assert.Throws<IrVerificationException>(() => pm.Run(model, PassPipeline.Parse("topo-sort,break-ir,cleanup", _registry)));
        Assert.Equal("break-ir", e.PassName);
        Assert.Contains("pass break-ir left the IR invalid", e.Message);
        Assert.Contains("node /test/Relu (Relu) reads stray, which is not defined in this graph or an enclosing one", e.Message);
        Assert.Null(model.GetMetadata(PassManager.PipelineMetadataKey));
    }

    [Fact]
    public void Broken_input_is_reported_before_any_pass_runs()
    {
        var model = TestGraphs.WithDeadCode(out _, out _, out _);
        new BreakIr(PassOptions.Defaults(BreakIr.Info)).Run(model, new PassContext());
        var ran = new List<string>();
        var e = Assert.Throws<InvalidModelException>(() =>
            new PassManager().Run(model, PassPipeline.Parse("append-identity", _registry), new PassContext().Set(ran)));
        Assert.IsAssignableFrom<UserErrorException>(e);
        Assert.StartsWith("the input model is invalid", e.Message);
        Assert.Empty(ran);

        // Without verification the manager trusts the passes.
        new PassManager { Verifier = null }.Run(model, PassPipeline.Parse("append-identity", _registry), new PassContext().Set(ran));
        Assert.Equal(["x"], ran);
    }

    [Fact]
    public void External_check_failure_stops_the_run()
    {
        var model = TestGraphs.WithDeadCode(out _, out _, out _);
        var ran = new List<string>();
        var pm = new PassManager { ExternalCheck = (m, pass) => throw new InvalidOperationException($"ORT rejected the model after {pass}") };
        var e = Assert.Throws<InvalidOperationException>(() =>
            pm.Run(model, PassPipeline.Parse("append-identity{tag=a},append-identity{tag=b}", _registry), new PassContext().Set(ran)));
        Assert.Equal("ORT rejected the model after append-identity", e.Message);
        Assert.Equal(["a"], ran);
    }

    [Fact]
    public void Cancellation_is_checked_between_passes()
    {
        var model = TestGraphs.WithDeadCode(out _, out _, out _);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.Throws<OperationCanceledException>(() =>
            new PassManager().Run(model, PassPipeline.Parse("cleanup", _registry), new PassContext { CancellationToken = cts.Token }));
    }

    [Fact]
    public void Report_format_lists_each_pass()
    {
        var model = TestGraphs.WithDeadCode(out _, out _, out _);
        var report = new PassManager().Run(model, PassPipeline.Parse("cleanup", _registry));
        Assert.Equal("""
            remove-unused: changed initializers-removed=2 nodes-removed=2
            dedupe-constants: unchanged
            topo-sort: unchanged
            """.ReplaceLineEndings("\n"), report.Format(includeTimes: false));
    }
}
