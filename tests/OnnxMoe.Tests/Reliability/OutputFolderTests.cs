using OnnxMoe.Compiler.Compile;
using OnnxMoe.Ir;

namespace OnnxMoe.Tests.Reliability;

/// <summary>The output folder's lock, leftovers and publish, in process.</summary>
public sealed class OutputFolderTests : IDisposable
{
    private readonly TempFolder _tmp = new();

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public void Leftovers_of_this_target_are_removed_and_those_of_another_target_kept()
    {
        foreach (var dir in new[] { ".out.tmp-999999", ".out.tmp-999998.old", ".out.tmp-x.tmp-5", ".outer.tmp-7" })
        {
            Directory.CreateDirectory(_tmp[dir]);
            File.WriteAllText(_tmp[$"{dir}/model.onnx.data"], "partial");
        }
        using (var output = OutputFolder.Begin(_tmp["out"], overwrite: false))
        {
            Assert.Equal([_tmp[".out.tmp-999998.old"], _tmp[".out.tmp-999999"]], output.RemovedLeftovers);
            File.WriteAllText(Path.Combine(output.BuildDirectory, "model.onnx"), "new");
            output.Publish();
        }
        Assert.Equal("new", File.ReadAllText(_tmp["out/model.onnx"]));
        Assert.Equal([".out.tmp-x.tmp-5", ".outer.tmp-7", "out"],
            Directory.EnumerateFileSystemEntries(_tmp.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Overwrite_swaps_in_the_new_folder_and_removes_the_old_one()
    {
        Directory.CreateDirectory(_tmp["out"]);
        File.WriteAllText(_tmp["out/model.onnx"], "old");
        File.WriteAllText(_tmp["out/stale.txt"], "only in the old folder");
        using (var output = OutputFolder.Begin(_tmp["out"], overwrite: true))
        {
            File.WriteAllText(Path.Combine(output.BuildDirectory, "model.onnx"), "new");
            output.Publish();
        }
        Assert.Equal(["model.onnx"], Directory.EnumerateFileSystemEntries(_tmp["out"]).Select(Path.GetFileName));
        Assert.Equal("new", File.ReadAllText(_tmp["out/model.onnx"]));
        Assert.Equal(["out"], Directory.EnumerateFileSystemEntries(_tmp.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void A_held_lock_refuses_a_second_writer_and_a_failed_build_leaves_nothing()
    {
        using (var first = OutputFolder.Begin(_tmp["out"], overwrite: false))
        {
            var e = Assert.Throws<UserErrorException>(() => OutputFolder.Begin(_tmp["out"], overwrite: true));
            Assert.Contains(_tmp["out"], e.Message);
            Assert.Contains("another compile", e.Message);
            File.WriteAllText(Path.Combine(first.BuildDirectory, "model.onnx"), "never published");
        }
        Assert.Empty(Directory.EnumerateFileSystemEntries(_tmp.Path));   // no build folder, no lock file
        using var again = OutputFolder.Begin(_tmp["out"], overwrite: false);   // and the lock is free again
    }

    [Fact]
    public void Bad_targets_are_user_errors()
    {
        File.WriteAllText(_tmp["file"], "");
        Assert.Contains("output path is a file", Assert.Throws<UserErrorException>(() => OutputFolder.Begin(_tmp["file"], true)).Message);
        Assert.Contains("cannot write the output folder", Assert.Throws<UserErrorException>(() => OutputFolder.Begin(_tmp["file/out"], true)).Message);
        Directory.CreateDirectory(_tmp["full"]);
        File.WriteAllText(_tmp["full/x"], "");
        Assert.Contains("already exists and is not empty", Assert.Throws<UserErrorException>(() => OutputFolder.Begin(_tmp["full"], false)).Message);
    }
}
