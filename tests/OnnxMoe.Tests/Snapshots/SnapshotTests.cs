namespace OnnxMoe.Tests.Snapshots;

public sealed class SnapshotTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "onnxmoe-snapshot-tests-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void Matching_text_passes_and_removes_a_stale_received_file()
    {
        var store = new SnapshotStore(_dir, update: false);
        Directory.CreateDirectory(_dir);
        File.WriteAllText(store.PathOf("same"), "a\r\nb\n");
        File.WriteAllText(store.ReceivedPathOf("same"), "old");
        store.Match("a\nb\n", "same");
        Assert.False(File.Exists(store.ReceivedPathOf("same")));
    }

    [Fact]
    public void Mismatch_writes_received_and_fails_with_a_unified_diff()
    {
        var store = new SnapshotStore(_dir, update: false);
        Directory.CreateDirectory(_dir);
        var expected = string.Join("\n", Enumerable.Range(1, 20).Select(i => $"line {i}")) + "\n";
        File.WriteAllText(store.PathOf("text"), expected);
        var actual = expected.Replace("line 5\n", "line five\n").Replace("line 18\n", "");
        var e = Assert.Throws<SnapshotMismatchException>(() => store.Match(actual, "text"));
        Assert.Equal(actual, File.ReadAllText(store.ReceivedPathOf("text")));
        Assert.Equal(expected, File.ReadAllText(store.PathOf("text"))); // the snapshot is untouched
        var diff = e.Message[e.Message.IndexOf("--- ", StringComparison.Ordinal)..];
        Assert.Equal("""
            --- text.txt
            +++ text.received.txt
            @@ -2,7 +2,7 @@
             line 2
             line 3
             line 4
            -line 5
            +line five
             line 6
             line 7
             line 8
            @@ -15,7 +15,6 @@
             line 15
             line 16
             line 17
            -line 18
             line 19
             line 20
             

            """.ReplaceLineEndings("\n"), diff);
    }

    [Fact]
    public void Missing_snapshot_fails_and_writes_received()
    {
        var store = new SnapshotStore(_dir, update: false);
        var e = Assert.Throws<SnapshotMismatchException>(() => store.Match("new\n", "fresh"));
        Assert.Contains("snapshot fresh does not exist yet", e.Message);
        Assert.Equal("new\n", File.ReadAllText(store.ReceivedPathOf("fresh")));
        Assert.False(File.Exists(store.PathOf("fresh")));
    }

    [Fact]
    public void Update_mode_accepts_the_received_text()
    {
        var update = new SnapshotStore(_dir, update: true);
        update.Match("v1\n", "accepted");
        update.Match("v2\n", "accepted");
        Assert.Equal("v2\n", File.ReadAllText(update.PathOf("accepted")));
        Assert.False(File.Exists(update.ReceivedPathOf("accepted")));
        new SnapshotStore(_dir, update: false).Match("v2\n", "accepted");
    }

    [Theory]
    [InlineData("")]
    [InlineData("../escape")]
    [InlineData("a/b")]
    [InlineData("x.received")]
    public void Bad_names_are_rejected(string name)
    {
        Assert.Throws<ArgumentException>(() => new SnapshotStore(_dir, false).Match("x", name));
    }

    [Fact]
    public void Default_store_reads_the_checked_in_folder()
    {
        // The checked-in snapshot proves the helper found the source tree rather than bin/.
        Snapshot.Match("This file is read by SnapshotTests.Default_store_reads_the_checked_in_folder.\n", "snapshot-helper-self-test");
    }
}
