using System.Numerics.Tensors;
using System.Text.RegularExpressions;
using OnnxMoe.Inference.Models;
using OnnxMoe.Ir;
using OnnxMoe.Runtime;

namespace OnnxMoe.Inference.Generation;

/// <summary>The decoder's KV layout as read from the session (with genai_config.json for symbolic dimensions).</summary>
public sealed record DecoderSignature(int Layers, int KeyValueHeads, int HeadDim, DataType CacheType, int VocabSize,
    bool HasAttentionMask, bool HasPositionIds);

/// <summary>How a decoder state holds its KV cache between steps.</summary>
public enum KvCacheMode
{
    /// <summary><see cref="Shared"/> where the graph allows it (every attention fused into GroupQueryAttention, on CPU), else <see cref="Concat"/>.</summary>
    Auto,
    /// <summary>Each step's presents (past + new, a fresh tensor) become the next step's past.</summary>
    Concat,
    /// <summary>One buffer per cache tensor with room for more positions, bound as both past and present, so
    /// GroupQueryAttention (past_present_share_buffer) writes the new positions in place; the buffer grows by doubling.</summary>
    Shared,
}

/// <summary>
/// <see cref="IDecoder"/> over an ORT session with GenAI I/O (input_ids, attention_mask, position_ids,
/// past_key_values.{i}.key|value -> logits, present.{i}.key|value). The cache is never copied per step: the presents
/// are fed back as the next past (<see cref="KvCacheMode.Concat"/>), or one buffer is updated in place
/// (<see cref="KvCacheMode.Shared"/>). Owns the session when created by <see cref="Open"/>.
/// </summary>
public sealed partial class OrtDecoder : IDecoder
{
    private readonly InferenceSession _session;
    private readonly bool _ownsSession;
    private readonly DataType _logitsType;
    // ORT's GroupQueryAttention (fused attention) runs several new tokens after a KV cache only for one sequence at a time.
    private readonly bool _rowByRowContinuation;

    /// <param name="kvCache"><see cref="KvCacheMode.Shared"/> is refused unless every attention is fused.</param>
    public OrtDecoder(InferenceSession session, GenAiConfig? genAi = null, bool ownsSession = false, KvCacheMode kvCache = KvCacheMode.Auto)
    {
        _session = session;
        _ownsSession = ownsSession;
        Signature = ReadSignature(session, genAi);
        _logitsType = session.Outputs.First(o => o.Name == "logits").ElementType;
        var blocks = session.CustomMetadata.TryGetValue(Structure.DecoderStructure.MetadataKey, out var json)
            ? Structure.DecoderStructure.FromJson(json).Blocks : [];
        _rowByRowContinuation = blocks.Any(b => b.Attention.FusedNode != null);
        bool allFused = blocks.Count > 0 && blocks.All(b => b.Attention.FusedNode != null);
        if (kvCache == KvCacheMode.Shared && !allFused)
            throw new ArgumentException($"{session.ModelPath}: a shared KV buffer needs every attention fused into GroupQueryAttention (compile with fuse)");
        KvCache = kvCache switch
        {
            KvCacheMode.Auto => allFused && session.Device == ExecutionDevice.Cpu ? KvCacheMode.Shared : KvCacheMode.Concat,
            _ => kvCache,
        };
    }

    /// <summary>Opens the folder's decoder in a new session (CPU unless <paramref name="config"/> says otherwise).</summary>
    public static OrtDecoder Open(ModelFolder folder, SessionConfig? config = null, KvCacheMode kvCache = KvCacheMode.Auto) =>
        new(new InferenceSession(folder.ModelPath, config), folder.GenAi, ownsSession: true, kvCache);

    public DecoderSignature Signature { get; }

    /// <summary>How states hold the cache (never <see cref="KvCacheMode.Auto"/>).</summary>
    public KvCacheMode KvCache { get; }

    public int VocabSize => Signature.VocabSize;

    public InferenceSession Session => _session;

    public IDecoderState CreateState(int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        return new State(this, batchSize);
    }

    public void Dispose()
    {
        if (_ownsSession) _session.Dispose();
    }

    [GeneratedRegex(@"^past_key_values\.(\d+)\.key$")]
    private static partial Regex PastKeyName();

    private static DecoderSignature ReadSignature(InferenceSession session, GenAiConfig? genAi)
    {
        var path = session.ModelPath;
        var inputs = session.Inputs.ToDictionary(i => i.Name);
        if (!inputs.ContainsKey("input_ids")) throw new UserErrorException($"{path}: no 'input_ids' input: not a GenAI-style decoder");
        if (!session.Outputs.Any(o => o.Name == "logits")) throw new UserErrorException($"{path}: no 'logits' output: not a GenAI-style decoder");
        var layers = session.Inputs.Select(i => PastKeyName().Match(i.Name)).Where(m => m.Success).Select(m => int.Parse(m.Groups[1].Value)).OrderBy(i => i).ToList();
        if (layers.Count == 0) throw new UserErrorException($"{path}: no past_key_values.{{i}}.key inputs: the decoder has no KV cache");
        for (int i = 0; i < layers.Count; i++)
        {
            if (layers[i] != i) throw new UserErrorException($"{path}: past_key_values layers are not numbered 0..{layers.Count - 1}");
            foreach (var name in new[] { $"past_key_values.{i}.value" })
                if (!inputs.ContainsKey(name)) throw new UserErrorException($"{path}: input '{name}' is missing");
            foreach (var name in new[] { $"present.{i}.key", $"present.{i}.value" })
                if (!session.Outputs.Any(o => o.Name == name)) throw new UserErrorException($"{path}: output '{name}' is missing");
        }
        var key0 = inputs["past_key_values.0.key"];
        if (key0.Shape.Count != 4) throw new UserErrorException($"{path}: past_key_values.0.key must be [batch, kv_heads, past, head_dim], got {key0}");
        if (key0.ElementType is not (DataType.Float or DataType.Float16))
            throw new UserErrorException($"{path}: KV cache type {key0.ElementType} is not supported (f32 or f16)");
        int Dim(long fromModel, int? fromConfig, string what) =>
            fromModel > 0 ? (int)fromModel : fromConfig ?? throw new UserErrorException(
                $"{path}: {what} is symbolic in the model and genai_config.json does not give it");
        var logits = session.Outputs.First(o => o.Name == "logits");
        int vocab = Dim(logits.Shape.Count == 3 ? logits.Shape[2] : -1, genAi?.VocabSize, "the vocabulary size (logits' last dimension)");
        return new DecoderSignature(layers.Count, Dim(key0.Shape[1], genAi?.NumKeyValueHeads, "kv heads"), Dim(key0.Shape[3], genAi?.HeadSize, "head_dim"),
            key0.ElementType, vocab, inputs.ContainsKey("attention_mask"), inputs.ContainsKey("position_ids"));
    }

    private sealed class State : IDecoderState
    {
        private readonly OrtDecoder _owner;
        private readonly OrtValue[] _past;
        private readonly string[] _pastNames;
        private readonly string[] _outputNames;
        private RunResult? _last;
        private float[] _converted = [];
        // Shared mode: the positions the buffers have room for (>= PastLength); the logits tensor written into.
        private int _capacity;
        private OrtValue? _logits;

        public State(OrtDecoder owner, int batch, bool allocatePast = true)
        {
            _owner = owner;
            BatchSize = batch;
            var s = owner.Signature;
            _past = new OrtValue[2 * s.Layers];
            _pastNames = new string[2 * s.Layers];
            _outputNames = new string[1 + 2 * s.Layers];
            _outputNames[0] = "logits";
            for (int i = 0; i < s.Layers; i++)
            {
                _pastNames[2 * i] = $"past_key_values.{i}.key";
                _pastNames[2 * i + 1] = $"past_key_values.{i}.value";
                _outputNames[1 + 2 * i] = $"present.{i}.key";
                _outputNames[2 + 2 * i] = $"present.{i}.value";
            }
            if (!allocatePast) return;
            long[] empty = [batch, s.KeyValueHeads, 0, s.HeadDim];
            for (int j = 0; j < _past.Length; j++) _past[j] = OrtValue.Allocate(s.CacheType, empty);
        }

        public IDecoderState SelectRows(ReadOnlySpan<int> rows)
        {
            if (rows.Length == 0) throw new ArgumentException("select at least one row");
            foreach (var r in rows)
                if ((uint)r >= (uint)BatchSize) throw new ArgumentOutOfRangeException(nameof(rows), $"row {r} is outside the batch of {BatchSize}");
            var s = _owner.Signature;
            var copy = new State(_owner, rows.Length, allocatePast: false) { PastLength = PastLength, _capacity = _capacity };
            long[] shape = [rows.Length, s.KeyValueHeads, Positions, s.HeadDim];
            for (int j = 0; j < _past.Length; j++)
            {
                var source = _past[j].GetBytes();
                int rowBytes = source.Length / BatchSize;
                var target = OrtValue.Allocate(s.CacheType, shape);
                var bytes = target.GetBytes();
                for (int i = 0; i < rows.Length; i++) source.Slice(rows[i] * rowBytes, rowBytes).CopyTo(bytes.Slice(i * rowBytes, rowBytes));
                copy._past[j] = target;
            }
            return copy;
        }

        public int BatchSize { get; }

        public int PastLength { get; private set; }

        private bool Shared => _owner.KvCache == KvCacheMode.Shared;

        /// <summary>The cache tensors' position dimension.</summary>
        private int Positions => Shared ? _capacity : PastLength;

        /// <summary>Shared mode: makes room for <paramref name="total"/> positions, copying the cache into buffers of at
        /// least twice the size when it has none (so growing costs amortised O(1) per position).</summary>
        private void EnsureCapacity(int total)
        {
            if (total <= _capacity) return;
            var s = _owner.Signature;
            int capacity = (Math.Max(total + 64, 2 * _capacity) + 63) / 64 * 64;
            int elementBytes = checked((int)s.CacheType.ByteCount(1));
            int usedBytes = PastLength * s.HeadDim * elementBytes, oldRow = _capacity * s.HeadDim * elementBytes, newRow = capacity * s.HeadDim * elementBytes;
            long[] shape = [BatchSize, s.KeyValueHeads, capacity, s.HeadDim];
            for (int j = 0; j < _past.Length; j++)
            {
                var grown = OrtValue.Allocate(s.CacheType, shape);
                if (usedBytes > 0)
                {
                    var from = _past[j].GetBytes();
                    var to = grown.GetBytes();
                    for (int r = 0; r < BatchSize * s.KeyValueHeads; r++) from.Slice(r * oldRow, usedBytes).CopyTo(to.Slice(r * newRow, usedBytes));
                }
                _past[j].Dispose();
                _past[j] = grown;
            }
            _capacity = capacity;
        }

        public ReadOnlySpan<float> Forward(ReadOnlySpan<long> inputIds, int sequenceLength, ReadOnlySpan<long> attentionMask, ReadOnlySpan<long> positionIds)
        {
            int batch = BatchSize, total = PastLength + sequenceLength, vocab = _owner.VocabSize;
            if (inputIds.Length != batch * sequenceLength) throw new ArgumentException("input_ids must be [batch, sequence]");
            if (attentionMask.Length != batch * total) throw new ArgumentException("attention_mask must be [batch, past + sequence]");
            if (positionIds.Length != batch * sequenceLength) throw new ArgumentException("position_ids must be [batch, sequence]");
            if (_owner._rowByRowContinuation && batch > 1 && sequenceLength > 1 && PastLength > 0)
                return ForwardRowByRow(inputIds, sequenceLength, attentionMask, positionIds);

            // Shared mode: room must exist before the run, since the buffers given as past are the ones ORT writes the presents into.
            if (Shared) EnsureCapacity(total);
            using var ids = OrtValue.CreateTensor<long>(inputIds.ToArray(), [batch, sequenceLength]);
            using var mask = OrtValue.CreateTensor<long>(attentionMask.ToArray(), [batch, total]);
            using var positions = OrtValue.CreateTensor<long>(positionIds.ToArray(), [batch, sequenceLength]);
            var inputs = new List<KeyValuePair<string, OrtValue>>(3 + _past.Length) { new("input_ids", ids) };
            if (_owner.Signature.HasAttentionMask) inputs.Add(new("attention_mask", mask));
            if (_owner.Signature.HasPositionIds) inputs.Add(new("position_ids", positions));
            for (int j = 0; j < _past.Length; j++) inputs.Add(new(_pastNames[j], _past[j]));
            if (Shared) return ForwardShared(inputs, sequenceLength, total);

            var result = _owner._session.Run(inputs, _outputNames);
            _last?.Dispose();
            _last = result;
            // The presents become the next past as they are: no copy.
            for (int j = 0; j < _past.Length; j++)
            {
                _past[j].Dispose();
                _past[j] = result.Detach(_outputNames[1 + j]);
            }
            PastLength = total;

            return Logits(result["logits"], sequenceLength);
        }

        /// <summary>Shared mode: the buffers (grown to fit) are both past and present; logits go into a tensor kept for the next call.</summary>
        private ReadOnlySpan<float> ForwardShared(List<KeyValuePair<string, OrtValue>> inputs, int sequenceLength, int total)
        {
            long[] logitsShape = [BatchSize, sequenceLength, _owner.VocabSize];
            if (_logits is null || !_logits.Shape.AsSpan().SequenceEqual(logitsShape))
            {
                _logits?.Dispose();
                _logits = OrtValue.Allocate(_owner._logitsType, logitsShape);
            }
            var outputs = new List<KeyValuePair<string, OrtValue>>(_outputNames.Length) { new("logits", _logits) };
            for (int j = 0; j < _past.Length; j++) outputs.Add(new(_outputNames[1 + j], _past[j]));
            _owner._session.RunInto(inputs, outputs);
            PastLength = total;
            return Logits(_logits, sequenceLength);
        }

        private ReadOnlySpan<float> Logits(OrtValue logits, int sequenceLength)
        {
            int batch = BatchSize, vocab = _owner.VocabSize;
            long expected = (long)batch * sequenceLength * vocab;
            if (logits.ElementCount != expected)
                throw new InvalidOperationException($"{_owner._session.ModelPath}: logits has shape [{string.Join(",", logits.Shape)}], expected [{batch},{sequenceLength},{vocab}]");
            if (_owner._logitsType == DataType.Float) return logits.GetSpan<float>();
            if (_converted.Length != expected) _converted = new float[expected];
            switch (_owner._logitsType)
            {
                case DataType.Float16:
                    TensorPrimitives.ConvertToSingle(logits.GetSpan<Half>(), _converted);
                    break;
                default:
                    logits.ToFloatArray().CopyTo(_converted, 0);
                    break;
            }
            return _converted;
        }

        /// <summary>Runs each row on its own (a one-row copy of its cache) and stacks the rows' presents and logits back.</summary>
        private ReadOnlySpan<float> ForwardRowByRow(ReadOnlySpan<long> inputIds, int sequenceLength, ReadOnlySpan<long> attentionMask, ReadOnlySpan<long> positionIds)
        {
            int batch = BatchSize, total = PastLength + sequenceLength, vocab = _owner.VocabSize;
            var s = _owner.Signature;
            var logits = new float[(long)batch * sequenceLength * vocab];
            var presents = new OrtValue[_past.Length];
            for (int b = 0; b < batch; b++)
            {
                using var row = (State)SelectRows([b]);
                row.Forward(inputIds.Slice(b * sequenceLength, sequenceLength), sequenceLength,
                    attentionMask.Slice(b * total, total), positionIds.Slice(b * sequenceLength, sequenceLength)).CopyTo(logits.AsSpan(b * sequenceLength * vocab));
                // Every row grows its cache the same way (same lengths), so the first row's layout is the batch's.
                if (b == 0)
                {
                    _capacity = row._capacity;
                    for (int j = 0; j < _past.Length; j++) presents[j] = OrtValue.Allocate(s.CacheType, [batch, s.KeyValueHeads, row.Positions, s.HeadDim]);
                }
                for (int j = 0; j < _past.Length; j++)
                {
                    var bytes = row._past[j].GetBytes();
                    bytes.CopyTo(presents[j].GetBytes().Slice(b * bytes.Length, bytes.Length));
                }
            }
            for (int j = 0; j < _past.Length; j++)
            {
                _past[j].Dispose();
                _past[j] = presents[j];
            }
            PastLength = total;
            _last?.Dispose();
            _last = null;
            _converted = logits;
            return _converted;
        }

        public void Dispose()
        {
            _last?.Dispose();
            _last = null;
            _logits?.Dispose();
            _logits = null;
            foreach (var v in _past) v?.Dispose();
        }
    }
}
