using OnnxMoe.Inference.Evaluation;
using OnnxMoe.Inference.Generation;
using OnnxMoe.Inference.Models;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx;
using IrValue = OnnxMoe.Ir.Value;

namespace OnnxMoe.Tests.Inference;

/// <summary>
/// A two-layer GenAI-I/O decoder built with the IR and run by ORT: logits = E[token] + P[position] + T * w, where T is the
/// length of the KV cache after the step (read from present.1.key), and present.{i} = Concat(past.{i}, K[token]).
/// If the adapter did not feed the presents back as past, T and so the greedy tokens would differ from the reference.
/// </summary>
public sealed class OrtDecoderTests : IDisposable
{
    private const int Vocab = 20, KvHeads = 2, HeadDim = 4, Layers = 2, MaxPositions = 64;
    private readonly string _dir = Directory.CreateTempSubdirectory("onnxmoe-inference-").FullName;
    private readonly float[] _e, _p, _k, _w;

    public OrtDecoderTests()
    {
        var rng = new Random(123);
        float[] Random(int n, double scale) => Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();
        _e = Random(Vocab * Vocab, 2);
        _p = Random(MaxPositions * Vocab, 1);
        _k = Random(Vocab * KvHeads * HeadDim, 1);
        _w = Random(Vocab, 0.3);
        WriteModelFolder();
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private void WriteModelFolder()
    {
        var g = new Graph("toy_decoder");
        IrValue Input(string name, DataType type, params Dim[] dims)
        {
            var v = new IrValue(name, new TensorType(type, dims));
            g.Inputs.Add(v);
            return v;
        }
        IrValue Init(string name, Tensor t) => g.AddInitializer(new IrValue(name, constValue: t));
        IrValue Op(string op, IrValue[] inputs, string name, params OnnxMoe.Ir.Attribute[] attributes)
        {
            var node = new Node("", op, inputs, 1, name);
            foreach (var a in attributes) node.SetAttribute(a);
            g.Append(node);
            node.Outputs[0].Name = name;
            return node.Outputs[0];
        }

        var ids = Input("input_ids", DataType.Int64, "batch", "sequence");
        Input("attention_mask", DataType.Int64, "batch", "total_sequence");
        var positions = Input("position_ids", DataType.Int64, "batch", "sequence");
        var past = new List<IrValue>();
        for (int i = 0; i < Layers; i++)
            foreach (var kind in new[] { "key", "value" })
                past.Add(Input($"past_key_values.{i}.{kind}", DataType.Float, "batch", KvHeads, "past_sequence", HeadDim));

        var e = Init("E", InMemoryTensor.FromFloats([Vocab, Vocab], _e));
        var p = Init("P", InMemoryTensor.FromFloats([MaxPositions, Vocab], _p));
        var k = Init("K", InMemoryTensor.FromFloats([Vocab, KvHeads * HeadDim], _k));
        var w = Init("w", InMemoryTensor.FromFloats([Vocab], _w));
        var kvShape = Init("kv_shape", InMemoryTensor.FromInt64s([4], [0, 0, KvHeads, HeadDim]));
        var two = Init("two", InMemoryTensor.Scalar(2L));

        var sum = Op("Add", [Op("Gather", [e, ids], "token_logits"), Op("Gather", [p, positions], "position_logits")], "sum");
        var newKey = Op("Transpose", [Op("Reshape", [Op("Gather", [k, ids], "k_flat"), kvShape], "k_heads")], "k_new",
            OnnxMoe.Ir.Attribute.Ints("perm", 0, 2, 1, 3));
        IrValue last = null!;
        for (int i = 0; i < Layers; i++)
        {
            foreach (var (kind, j) in new[] { ("key", 0), ("value", 1) })
            {
                last = Op("Concat", [past[2 * i + j], newKey], $"present.{i}.{kind}", OnnxMoe.Ir.Attribute.Int("axis", 2));
                g.Outputs.Add(last);
            }
        }
        var length = Op("Cast", [Op("Gather", [Op("Shape", [last], "cache_shape"), two], "cache_length")], "cache_length_f",
            OnnxMoe.Ir.Attribute.Int("to", (long)DataType.Float));
        var logits = Op("Add", [sum, Op("Mul", [w, length], "length_term")], "logits");
        g.Outputs.Insert(0, logits);

        var model = new Model(g);
        model.SetOpset("", 17);
        OnnxWriter.Write(model, Path.Combine(_dir, "model.onnx"));
        File.WriteAllText(Path.Combine(_dir, "genai_config.json"), $$$"""
            {"model": {"bos_token_id": 1, "eos_token_id": [19], "pad_token_id": 0, "context_length": {{{MaxPositions}}}, "vocab_size": {{{Vocab}}},
              "type": "toy", "decoder": {"filename": "model.onnx", "head_size": {{{HeadDim}}}, "num_key_value_heads": {{{KvHeads}}}, "num_hidden_layers": {{{Layers}}}}},
             "search": {"max_length": 64}}
            """);
        File.Copy(TestFiles.FixturePath("bytelevel-tokenizer.json"), Path.Combine(_dir, "tokenizer.json"));
    }

    /// <summary>The same function in C#: the cache length after a step is the number of tokens fed so far.</summary>
    private ToyDecoder Reference() => new(Vocab, (history, vocab) =>
    {
        var (token, position) = history[^1];
        return Enumerable.Range(0, vocab).Select(v => _e[token * Vocab + v] + _p[position * Vocab + v] + history.Count * _w[v]).ToArray();
    });

    [Fact]
    public void ReadsTheSignatureFromTheSession()
    {
        var folder = ModelFolder.Open(_dir);
        using var decoder = OrtDecoder.Open(folder);
        Assert.Equal(new DecoderSignature(Layers, KvHeads, HeadDim, DataType.Float, Vocab, true, true), decoder.Signature);
        Assert.Equal([19], folder.EosTokenIds);
        Assert.Equal(0, folder.PadTokenId);
        Assert.Equal(MaxPositions, folder.GenAi!.ContextLength);
    }

    [Fact]
    public void GenerationFeedsPresentsBackAsPast()
    {
        var folder = ModelFolder.Open(_dir);
        using var decoder = OrtDecoder.Open(folder);
        var tokenizer = folder.LoadTokenizer();
        var options = new GenerationOptions { MaxNewTokens = 10 };
        var actual = new Generator(decoder, tokenizer, folder.EosTokenIds, folder.PadTokenId, folder.GenAi?.ContextLength).Generate("hello world", options);
        var expected = new Generator(Reference(), tokenizer, folder.EosTokenIds).Generate("hello world", options);
        Assert.Equal(expected.GeneratedIds, actual.GeneratedIds);
        Assert.Equal(expected.Text, actual.Text);
    }

    [Fact]
    public void IncrementalLogitsEqualFullSequenceLogits()
    {
        using var decoder = OrtDecoder.Open(ModelFolder.Open(_dir));
        long[] ids = [3, 7, 11, 2, 5];
        float[] full;
        using (var state = decoder.CreateState(1))
            full = state.Forward(ids, 5, [1, 1, 1, 1, 1], [0, 1, 2, 3, 4]).Slice(4 * Vocab, Vocab).ToArray();
        using var incremental = decoder.CreateState(1);
        incremental.Forward(ids.AsSpan(0, 3), 3, [1, 1, 1], [0, 1, 2]);
        incremental.Forward(ids.AsSpan(3, 1), 1, [1, 1, 1, 1], [3]);
        var last = incremental.Forward(ids.AsSpan(4, 1), 1, [1, 1, 1, 1, 1], [4]).ToArray();
        Assert.Equal(5, incremental.PastLength);
        for (int v = 0; v < Vocab; v++) Assert.Equal(full[v], last[v], 1e-5f);
    }

    [Fact]
    public void PerplexityThroughOrtEqualsTheReference()
    {
        using var decoder = OrtDecoder.Open(ModelFolder.Open(_dir));
        var tokens = Enumerable.Range(0, 90).Select(i => i * 13 % Vocab).ToArray();
        var options = new PerplexityOptions { SequenceLength = 24, Stride = 10 };
        var actual = new PerplexityEvaluator(decoder).Evaluate(tokens, options);

        // Direct computation: in a window of n tokens every position sees cache length n.
        double total = 0;
        long count = 0;
        foreach (var (begin, end, firstScored) in PerplexityEvaluator.Windows(tokens.Length, 24, 10))
        {
            int n = end - begin;
            for (int t = firstScored; t < end; t++)
            {
                int previous = tokens[t - 1], position = t - 1 - begin;
                var row = Enumerable.Range(0, Vocab).Select(v => (double)(_e[previous * Vocab + v] + _p[position * Vocab + v] + n * _w[v])).ToArray();
                total += Math.Log(row.Sum(Math.Exp)) - row[tokens[t]];
                count++;
            }
        }
        Assert.Equal(89, count);
        Assert.Equal(count, actual.TokenCount);
        Assert.Equal(total / count, actual.NegativeLogLikelihood, 1e-5);
    }

    [Fact]
    public void MissingDecoderFileIsAUserError()
    {
        File.Delete(Path.Combine(_dir, "model.onnx"));
        var e = Assert.Throws<UserErrorException>(() => ModelFolder.Open(_dir));
        Assert.Contains("model.onnx not found", e.Message);
    }
}
