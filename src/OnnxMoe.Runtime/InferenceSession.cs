using Ort = Microsoft.ML.OnnxRuntime;

namespace OnnxMoe.Runtime;

/// <summary>
/// An ORT session over a model file (external data is resolved relative to the model's folder) or over
/// model bytes held in memory. Owns the binding's session; dispose it. <see cref="Run"/> may be called from
/// several threads at once.
/// </summary>
public sealed class InferenceSession : IDisposable
{
    private static readonly Ort.RunOptions s_defaultRunOptions = new();
    private readonly Ort.InferenceSession _session;
    private readonly HashSet<string> _inputNames;
    private readonly HashSet<string> _outputNames;
    private readonly IReadOnlyList<ExternalDataFile> _ownedData;
    private bool _disposed;
    private bool _profiling;

    /// <summary>Loads <paramref name="modelPath"/>; throws <see cref="OrtException"/> with ORT's message when it cannot.</summary>
    public InferenceSession(string modelPath, SessionConfig? config = null)
        : this(Path.GetFullPath(modelPath), null, config, null) { }

    /// <summary>
    /// A session over a serialized model in memory; nothing is written to disk. <paramref name="externalData"/> are the
    /// images of the external-data files the model refers to (by file name), read by ORT in place (no copy where the
    /// tensors are aligned); the session owns them from now on and frees them after itself. <paramref name="displayName"/>
    /// names the model in errors.
    /// </summary>
    public InferenceSession(byte[] model, string displayName, SessionConfig? config = null, IReadOnlyList<ExternalDataFile>? externalData = null)
        : this(displayName, model, config, externalData) { }

    private InferenceSession(string name, byte[]? bytes, SessionConfig? config, IReadOnlyList<ExternalDataFile>? externalData)
    {
        ModelPath = name;
        config ??= new SessionConfig();
        _ownedData = externalData ?? [];
        try
        {
            using var options = config.CreateNative();
            if (_ownedData.Count > 0)
            {
                // The images live as long as the session, so ORT may use them as the initializers' memory.
                options.AddSessionConfigEntry("session.use_external_initializer_file_buffers_directly", "1");
                InMemoryExternalData.Add(options, _ownedData);
            }
            _session = bytes is null ? new Ort.InferenceSession(name, options) : new Ort.InferenceSession(bytes, options);
        }
        catch (Ort.OnnxRuntimeException e)
        {
            DisposeData();
            throw OrtException.From(e, name);
        }
        catch
        {
            DisposeData();
            throw;
        }
        Inputs = _session.InputNames.Select(n => TensorInfo.Read(n, _session.InputMetadata[n])).ToArray();
        Outputs = _session.OutputNames.Select(n => TensorInfo.Read(n, _session.OutputMetadata[n])).ToArray();
        _inputNames = new HashSet<string>(_session.InputNames, StringComparer.Ordinal);
        _outputNames = new HashSet<string>(_session.OutputNames, StringComparer.Ordinal);
        Device = config.Device;
        _profiling = config.ProfilePrefix is not null;
    }

    /// <summary>The model file's full path, or the display name of an in-memory model.</summary>
    public string ModelPath { get; }
    public ExecutionDevice Device { get; }
    public IReadOnlyList<TensorInfo> Inputs { get; }
    public IReadOnlyList<TensorInfo> Outputs { get; }
    public IEnumerable<string> InputNames => Inputs.Select(i => i.Name);
    public IEnumerable<string> OutputNames => Outputs.Select(o => o.Name);

    /// <summary>The model's metadata_props (e.g. onnxmoe.structure).</summary>
    public IReadOnlyDictionary<string, string> CustomMetadata => _session.ModelMetadata.CustomMetadataMap;

    /// <summary>
    /// Runs the model. <paramref name="inputs"/> stay owned by the caller (they may be outputs of an earlier run,
    /// e.g. a KV cache fed back without copying). Returns the requested outputs (all, in model order, when
    /// <paramref name="outputNames"/> is null) in a <see cref="RunResult"/> that owns them.
    /// Unknown names throw <see cref="ArgumentException"/>; ORT failures throw <see cref="OrtException"/>;
    /// cancellation throws <see cref="OperationCanceledException"/>.
    /// </summary>
    public RunResult Run(IEnumerable<KeyValuePair<string, OrtValue>> inputs, IReadOnlyList<string>? outputNames = null,
        CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var (given, inputNames, inputValues) = NativeInputs(inputs);
        var names = outputNames ?? Outputs.Select(o => o.Name).ToList();
        CheckOutputNames(names);
        Ort.IDisposableReadOnlyCollection<Ort.OrtValue> outputs = null!;
        Invoke(given, cancellationToken, runOptions =>
            outputs = _session.Run(runOptions, inputNames, inputValues, names as IReadOnlyCollection<string> ?? names.ToArray()));
        // The collection's Dispose would release the values; ownership moves to the RunResult instead.
        return new RunResult(names.ToArray(), outputs.Select(OrtValue.Own).ToArray());
    }

    /// <summary>
    /// Runs the model writing each output into the caller's preallocated <paramref name="outputs"/> (of the output's
    /// exact shape and type); all values stay owned by the caller. An output may be the very value given as an input:
    /// ORT then hands the kernel one buffer for both, which is how GroupQueryAttention's past_present_share_buffer mode
    /// updates a KV cache in place. Errors as for <see cref="Run"/>.
    /// </summary>
    public void RunInto(IEnumerable<KeyValuePair<string, OrtValue>> inputs, IReadOnlyList<KeyValuePair<string, OrtValue>> outputs,
        CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var (given, inputNames, inputValues) = NativeInputs(inputs);
        var names = outputs.Select(o => o.Key).ToArray();
        CheckOutputNames(names);
        var values = new Ort.OrtValue[outputs.Count];
        for (int i = 0; i < values.Length; i++)
        {
            ArgumentNullException.ThrowIfNull(outputs[i].Value, $"output '{names[i]}'");
            values[i] = outputs[i].Value.Native;
        }
        Invoke(given, cancellationToken, runOptions => _session.Run(runOptions, inputNames, inputValues, names, values));
        GC.KeepAlive(outputs);
    }

    private (List<KeyValuePair<string, OrtValue>> Given, string[] Names, Ort.OrtValue[] Values) NativeInputs(IEnumerable<KeyValuePair<string, OrtValue>> inputs)
    {
        var given = inputs.ToList();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var inputNames = new string[given.Count];
        var inputValues = new Ort.OrtValue[given.Count];
        for (int i = 0; i < given.Count; i++)
        {
            string name = given[i].Key;
            if (!_inputNames.Contains(name))
                throw new ArgumentException($"model {ModelPath} has no input named '{name}'; its inputs are: {string.Join(", ", _session.InputNames)}");
            if (!seen.Add(name)) throw new ArgumentException($"input '{name}' is given twice");
            ArgumentNullException.ThrowIfNull(given[i].Value, $"input '{name}'");
            inputNames[i] = name;
            inputValues[i] = given[i].Value.Native;
        }
        return (given, inputNames, inputValues);
    }

    private void CheckOutputNames(IEnumerable<string> names)
    {
        foreach (var name in names)
            if (!_outputNames.Contains(name))
                throw new ArgumentException($"model {ModelPath} has no output named '{name}'; its outputs are: {string.Join(", ", _session.OutputNames)}");
    }

    /// <summary>Calls ORT with run options that honour <paramref name="cancellationToken"/>, mapping its errors.</summary>
    private void Invoke(List<KeyValuePair<string, OrtValue>> given, CancellationToken cancellationToken, Action<Ort.RunOptions> run)
    {
        cancellationToken.ThrowIfCancellationRequested();
        using var runOptions = cancellationToken.CanBeCanceled ? new Ort.RunOptions() : null;
        using var registration = runOptions is null ? default : cancellationToken.Register(() => runOptions.Terminate = true);
        try
        {
            run(runOptions ?? s_defaultRunOptions);
        }
        catch (Ort.OnnxRuntimeException e) when (cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException($"run of {ModelPath} was cancelled ({e.Message})", e, cancellationToken);
        }
        catch (Ort.OnnxRuntimeException e)
        {
            throw OrtException.From(e);
        }
        finally
        {
            GC.KeepAlive(given); // the values (and the managed memory they pin) must outlive the native call
        }
    }

    /// <summary>Runs the model and copies the first requested output's elements into a managed array.</summary>
    public T[] RunToArray<T>(IEnumerable<KeyValuePair<string, OrtValue>> inputs, string outputName) where T : unmanaged
    {
        using var result = Run(inputs, [outputName]);
        return result[0].ToArray<T>();
    }

    /// <summary>
    /// Ends ORT's profiling (enabled by <see cref="SessionConfig.ProfilePrefix"/>) and returns the full path of the
    /// profile it wrote; later runs are no longer recorded. Throws <see cref="InvalidOperationException"/> when the
    /// session was created without profiling.
    /// </summary>
    public string EndProfiling()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_profiling) throw new InvalidOperationException($"session of {ModelPath} was created without profiling (SessionConfig.ProfilePrefix)");
        string file;
        try
        {
            file = _session.EndProfiling();
        }
        catch (Ort.OnnxRuntimeException e)
        {
            throw OrtException.From(e);
        }
        _profiling = false;
        return Path.GetFullPath(file);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _session.Dispose();
        DisposeData();
    }

    private void DisposeData()
    {
        foreach (var d in _ownedData) d.Data.Dispose();
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
