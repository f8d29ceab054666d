using OnnxMoe.Runtime.Native;

namespace OnnxMoe.Runtime;

/// <summary>
/// An ORT session over a model file (external data is resolved relative to the model's folder).
/// Owns the native session; dispose it. <see cref="Run"/> may be called from several threads at once.
/// </summary>
public sealed class InferenceSession : IDisposable
{
    private readonly OrtSessionHandle _session;
    private readonly Dictionary<string, byte[]> _inputNames;
    private readonly Dictionary<string, byte[]> _outputNames;

    /// <summary>Loads <paramref name="modelPath"/>; throws <see cref="OrtException"/> with ORT's message when it cannot.</summary>
    public InferenceSession(string modelPath, SessionConfig? config = null)
    {
        ModelPath = Path.GetFullPath(modelPath);
        config ??= new SessionConfig();
        using (var options = config.CreateNative())
            _session = OrtApi.CreateSession(OrtRuntime.Environment, ModelPath, options);
        try
        {
            Inputs = ReadInfos(output: false);
            Outputs = ReadInfos(output: true);
        }
        catch
        {
            _session.Dispose();
            throw;
        }
        _inputNames = Inputs.ToDictionary(i => i.Name, i => OrtApi.Utf8(i.Name), StringComparer.Ordinal);
        _outputNames = Outputs.ToDictionary(o => o.Name, o => OrtApi.Utf8(o.Name), StringComparer.Ordinal);
        Device = config.Device;
    }

    public string ModelPath { get; }
    public ExecutionDevice Device { get; }
    public IReadOnlyList<TensorInfo> Inputs { get; }
    public IReadOnlyList<TensorInfo> Outputs { get; }
    public IEnumerable<string> InputNames => Inputs.Select(i => i.Name);
    public IEnumerable<string> OutputNames => Outputs.Select(o => o.Name);

    /// <summary>
    /// Runs the model. <paramref name="inputs"/> stay owned by the caller (they may be outputs of an earlier run,
    /// e.g. a KV cache fed back without copying). Returns the requested outputs (all, in model order, when
    /// <paramref name="outputNames"/> is null) in a <see cref="RunResult"/> that owns them.
    /// Unknown names throw <see cref="ArgumentException"/>; ORT failures throw <see cref="OrtException"/>;
    /// cancellation throws <see cref="OperationCanceledException"/>.
    /// </summary>
    public unsafe RunResult Run(IEnumerable<KeyValuePair<string, OrtValue>> inputs, IReadOnlyList<string>? outputNames = null,
        CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_session.IsClosed, this);
        var given = inputs.ToList();
        var names = outputNames ?? Outputs.Select(o => o.Name).ToList();
        var inputNameBytes = new byte[given.Count][];
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < given.Count; i++)
        {
            string name = given[i].Key;
            if (!_inputNames.TryGetValue(name, out inputNameBytes[i]!))
                throw new ArgumentException($"model {ModelPath} has no input named '{name}'; its inputs are: {string.Join(", ", _inputNames.Keys)}");
            if (!seen.Add(name)) throw new ArgumentException($"input '{name}' is given twice");
            ArgumentNullException.ThrowIfNull(given[i].Value, $"input '{name}'");
        }
        var outputNameBytes = new byte[names.Count][];
        for (int i = 0; i < names.Count; i++)
            if (!_outputNames.TryGetValue(names[i], out outputNameBytes[i]!))
                throw new ArgumentException($"model {ModelPath} has no output named '{names[i]}'; its outputs are: {string.Join(", ", _outputNames.Keys)}");

        var inputHandles = new IntPtr[given.Count];
        var outputHandles = new IntPtr[names.Count];
        using var inputNamePointers = new PinnedCStrings(inputNameBytes);
        using var outputNamePointers = new PinnedCStrings(outputNameBytes);
        var refs = new List<OrtValueHandle>(given.Count);
        try
        {
            // Keep the input handles from being released by another thread's Dispose during the call.
            foreach (var (_, value) in given)
            {
                var handle = value.Handle;
                bool added = false;
                handle.DangerousAddRef(ref added);
                refs.Add(handle);
                inputHandles[refs.Count - 1] = handle.DangerousGetHandle();
            }
            using var runOptions = cancellationToken.CanBeCanceled ? OrtApi.CreateRunOptions() : null;
            using var registration = runOptions is null ? default : cancellationToken.Register(() => OrtApi.RunOptionsSetTerminate(runOptions));
            cancellationToken.ThrowIfCancellationRequested();
            try
            {
                fixed (IntPtr* inputPtrs = inputHandles)
                fixed (IntPtr* outputPtrs = outputHandles)
                    OrtApi.Run(_session, runOptions, inputNamePointers.Pointers, inputPtrs, given.Count,
                        outputNamePointers.Pointers, names.Count, outputPtrs);
            }
            catch (OrtException e) when (cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException($"run of {ModelPath} was cancelled ({e.Message})", e, cancellationToken);
            }
        }
        catch
        {
            foreach (var p in outputHandles)
                if (p != IntPtr.Zero) OrtApi.Release(Slot.ReleaseValue, p);
            throw;
        }
        finally
        {
            foreach (var h in refs) h.DangerousRelease();
            GC.KeepAlive(given); // the values (and the managed memory they pin) must outlive the native call
        }
        return new RunResult(names.ToArray(), Array.ConvertAll(outputHandles, OrtValue.Own));
    }

    /// <summary>Runs the model and copies the first requested output's elements into a managed array.</summary>
    public T[] RunToArray<T>(IEnumerable<KeyValuePair<string, OrtValue>> inputs, string outputName) where T : unmanaged
    {
        using var result = Run(inputs, [outputName]);
        return result[0].ToArray<T>();
    }

    public void Dispose() => _session.Dispose();

    private TensorInfo[] ReadInfos(bool output)
    {
        int count = OrtApi.SessionGetCount(_session, output);
        var infos = new TensorInfo[count];
        for (int i = 0; i < count; i++)
        {
            string name = OrtApi.SessionGetName(_session, output, i);
            using var typeInfo = OrtApi.SessionGetTypeInfo(_session, output, i);
            infos[i] = TensorInfo.Read(name, typeInfo);
        }
        return infos;
    }
}

/// <summary>Outputs of one <see cref="InferenceSession.Run"/>, in the requested order; owns them until disposed
/// (or until a value is taken with <see cref="Detach"/>).</summary>
public sealed class RunResult : IReadOnlyList<OrtValue>, IDisposable
{
    private readonly string[] _names;
    private readonly OrtValue?[] _values;

    internal RunResult(string[] names, OrtValue[] values)
    {
        _names = names;
        _values = values;
    }

    public IReadOnlyList<string> Names => _names;
    public int Count => _values.Length;

    public OrtValue this[int index] => _values[index] ?? throw new InvalidOperationException($"output '{_names[index]}' was detached from this result");

    public OrtValue this[string name] => this[IndexOf(name)];

    /// <summary>Hands output <paramref name="name"/> to the caller, who then owns (and disposes) it.</summary>
    public OrtValue Detach(string name)
    {
        int i = IndexOf(name);
        var value = this[i];
        _values[i] = null;
        return value;
    }

    public IEnumerator<OrtValue> GetEnumerator()
    {
        for (int i = 0; i < _values.Length; i++) yield return this[i];
    }

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();

    public void Dispose()
    {
        foreach (var v in _values) v?.Dispose();
    }

    private int IndexOf(string name)
    {
        int i = Array.IndexOf(_names, name);
        if (i < 0) throw new KeyNotFoundException($"no output named '{name}' in this result; it holds: {string.Join(", ", _names)}");
        return i;
    }
}
