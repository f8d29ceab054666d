using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Runtime;

namespace OnnxMoe.Tests.Runtime;

public class RuntimeTests
{
    [Fact]
    public void Version_and_library_are_reported()
    {
        Assert.StartsWith("1.", OrtRuntime.Version);
        Assert.True(File.Exists(OrtRuntime.LibraryPath), OrtRuntime.LibraryPath);
        Assert.Contains("CPUExecutionProvider", OrtRuntime.AvailableProviders);
        Assert.Equal(OrtRuntime.BindingVersion, OrtRuntime.Version);
        if (Environment.GetEnvironmentVariable(OrtRuntime.LibraryPathVariable) is not { Length: > 0 })
            Assert.StartsWith(AppContext.BaseDirectory, OrtRuntime.LibraryPath); // NuGet's library, beside the binaries
    }

    [Fact]
    public void Ir_tensors_round_trip_through_ORT_values()
    {
        var floats = InMemoryTensor.FromFloats([2, 3], [1, -2, 3.5f, 0, 1e-3f, 7]);
        using (var v = OrtValue.FromTensor(floats))
        {
            var back = v.ToTensor();
            Assert.Equal(DataType.Float, back.DataType);
            Assert.Equal(floats.Shape, back.Shape);
            Assert.Equal(floats.GetBytes().ToArray(), back.GetBytes().ToArray());
            Assert.Equal([1, -2, 3.5f, 0, 1e-3f, 7], v.ToFloatArray());
        }
        // The official binding has no sub-byte element types: a clear refusal instead of a wrong tensor.
        var int4 = new InMemoryTensor(DataType.Int4, [5], [0x21, 0x43, 0x05]);
        var refused = Assert.Throws<NotSupportedException>(() => OrtValue.FromTensor(int4));
        Assert.Contains("i4 tensors cannot be created", refused.Message);
        var strings = new StringTensor([2], ["héllo"u8.ToArray(), []]);
        using (var v = OrtValue.FromTensor(strings))
        {
            var back = Assert.IsType<StringTensor>(v.ToTensor());
            Assert.Equal(strings.Values, back.Values);
        }
    }

    [Fact]
    public void Values_over_managed_memory_share_it()
    {
        var data = new long[] { 1, 2, 3, 4 };
        using var v = OrtValue.CreateTensor<long>(data, [2, 2]);
        Assert.Equal(DataType.Int64, v.ElementType);
        v.GetSpan<long>()[3] = 40;
        Assert.Equal(40, data[3]);

        var bits = new ushort[] { ((BFloat16)1.5f).Bits, ((BFloat16)(-3f)).Bits };
        using var bf = OrtValue.CreateTensor<ushort>(bits, [2], DataType.BFloat16);
        Assert.Equal(DataType.BFloat16, bf.ElementType);
        Assert.Equal([1.5f, -3f], bf.ToFloatArray());

        using var empty = OrtValue.CreateTensor<float>(Array.Empty<float>(), [0, 3]);
        Assert.Equal(0, empty.ElementCount);
        Assert.Equal([0L, 3], empty.Shape);
    }

    [Fact]
    public void BFloat16_rounds_to_nearest_even()
    {
        Assert.Equal((ushort)0x3F80, ((BFloat16)1f).Bits);
        // 1 + 2^-8 lies exactly between two bf16 values: ties go to the even mantissa (1.0).
        Assert.Equal((ushort)0x3F80, ((BFloat16)BitConverter.UInt32BitsToSingle(0x3F808000)).Bits);
        // 1 + 3*2^-8 ties between 0x3F81 and 0x3F82: even is 0x3F82.
        Assert.Equal((ushort)0x3F82, ((BFloat16)BitConverter.UInt32BitsToSingle(0x3F818000)).Bits);
        Assert.True(float.IsNaN((float)(BFloat16)float.NaN));
        Assert.Equal(float.PositiveInfinity, (float)(BFloat16)float.PositiveInfinity);
    }
}

/// <summary>Resident memory is process-wide: run alone, or other tests allocating beside it (the suite on 2 cores) add to the growth
/// it measures.</summary>
[Collection("memory-measuring")]
public class NativeMemoryReleaseTests
{
    /// <summary>Runs a small session 1000 times and creates 100 sessions with garbage collection
    /// suspended, so finalizers cannot hide a value or session the wrapper fails to release: each run
    /// returns 1 MiB of output, so one leaked output per run would add about 1 GiB of resident memory.</summary>
    [Fact]
    public void Repeated_runs_and_sessions_release_native_memory()
    {
        var model = TinyOnnx.Model(
            [TinyOnnx.Node("Relu", ["x"], ["y"])],
            [TinyOnnx.Value("x", DataType.Float, "n")],
            [TinyOnnx.Value("y", DataType.Float, "n")]);
        using var folder = new TempFolder();
        string path = folder.Write("relu.onnx", model);
        var config = new SessionConfig { IntraOpThreads = 1 };
        const int n = 1 << 18; // 1 MiB of floats
        var x = new float[n];

        void RunMany(InferenceSession session, int count)
        {
            for (int i = 0; i < count; i++)
            {
                x[i % n] = i;
                using var xv = OrtValue.CreateTensor<float>(x, [n]);
                using var result = session.Run([new("x", xv)]);
                if (result[0].GetSpan<float>()[i % n] != i) Assert.Fail($"run {i} returned a wrong value");
            }
        }

        using var session = new InferenceSession(path, config);
        RunMany(session, 50);
        using (new InferenceSession(path, config)) { }
        Settle();
        long before = PeakMemory.ResidentBytes;
        Assert.True(GC.TryStartNoGCRegion(200L << 20), "could not suspend garbage collection");
        long growth;
        try
        {
            RunMany(session, 1000);
            for (int i = 0; i < 100; i++)
                using (new InferenceSession(path, config)) { }
            growth = PeakMemory.ResidentBytes - before;
        }
        finally
        {
            if (System.Runtime.GCSettings.LatencyMode == System.Runtime.GCLatencyMode.NoGCRegion) GC.EndNoGCRegion();
        }
        Assert.True(growth < 16L << 20, $"resident memory grew by {growth >> 20} MiB over 1000 runs and 100 sessions (limit 16 MiB)");
    }

    private static void Settle()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }
}

/// <summary>Peak RSS is process-wide: run alone, or another test freeing memory meanwhile could hide the block.</summary>
[Collection("memory-measuring")]
public class PeakMemoryTests
{
    [Fact]
    public void PeakMemory_reads_proc_status()
    {
        var before = PeakMemory.Read();
        Assert.True(before.ResidentBytes > 1 << 20);
        Assert.True(before.PeakResidentBytes >= before.ResidentBytes);
        var block = new byte[64 << 20];
        Array.Fill(block, (byte)1); // touch every page
        var after = PeakMemory.Read();
        Assert.True(after.PeakResidentBytes >= before.ResidentBytes + (60L << 20),
            $"peak {after.PeakResidentBytes} should include the 64 MiB block over {before.ResidentBytes}");
        GC.KeepAlive(block);
    }
}
