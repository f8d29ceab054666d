using System.Text.Json;
using OnnxMoe.Compiler.Compile;
using OnnxMoe.Inference.Models;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx;
using OnnxMoe.Passes;
using OnnxMoe.Structure;

namespace OnnxMoe.Compiler.Verify;

/// <summary>What <see cref="ModelFolderVerifier.Verify"/> found: one line per problem (each naming its file), and a one-line summary.</summary>
public sealed record VerifyResult(IReadOnlyList<string> Problems, string Summary)
{
    public bool IsClean => Problems.Count == 0;
}

/// <summary>
/// Checks a compiled model folder without running it: every file compile writes is present and parses; model.onnx passes the
/// IR verifier, its external data ranges lie inside model.onnx.data without overlapping, and the data file has no bytes past
/// the last tensor's page; graph inputs and outputs follow the decoder convention with the types of the onnxmoe.structure
/// metadata; genai_config.json names those inputs and outputs and agrees with the graph on layers, heads, head size and
/// vocabulary; compile_report.json agrees with the files' sizes and the pipeline metadata; the tokenizer files load.
/// Reads the model lazily: weights are not read, so a large folder verifies in seconds.
/// </summary>
public static class ModelFolderVerifier
{
    private const int PageAlignment = 4096;
    private const string TokenizerFile = "tokenizer.json";

    /// <summary>Verifies <paramref name="directory"/>; a missing folder is a <see cref="UserErrorException"/>, anything wrong inside is a problem line.</summary>
    public static VerifyResult Verify(string directory)
    {
        if (!Directory.Exists(directory)) throw new UserErrorException($"{directory}: model folder not found");
        var run = new Run(directory);
        run.All();
        return new VerifyResult(run.Problems, run.Summary);
    }

    private sealed class Run(string directory)
    {
        public readonly List<string> Problems = [];
        public string Summary = "";
        private Model? _model;
        private DecoderStructure? _structure;
        private GenAiConfig? _genAi;
        private CompileReport? _report;
        private readonly Dictionary<string, Value> _inputs = new(StringComparer.Ordinal), _outputs = new(StringComparer.Ordinal);

        private string PathOf(string file) => Path.Combine(directory, file);

        private void Problem(string file, string what) => Problems.Add($"{PathOf(file)}: {what}");

        private bool Require(string file)
        {
            if (File.Exists(PathOf(file))) return true;
            Problem(file, "missing");
            return false;
        }

        public void All()
        {
            GenAi();
            string modelFile = _genAi?.DecoderFileName ?? CompileJob.ModelFileName;
            if (Path.IsPathRooted(modelFile) || modelFile.Split('/', '\\').Contains(".."))
            {
                Problem(CompileJob.GenAiConfigFileName, $"decoder filename \"{modelFile}\" leaves the model folder");
                modelFile = CompileJob.ModelFileName;
            }
            ModelFile(modelFile);
            if (_model is not null)
            {
                Metadata(modelFile);
                GraphInterface(modelFile);
                if (_genAi is not null) GenAiAgainstGraph();
            }
            Report(modelFile);
            Tokenizer();
            int layers = _structure?.NumLayers ?? _inputs.Keys.Count(k => k.EndsWith(".key", StringComparison.Ordinal));
            Summary = Problems.Count == 0
                ? $"{directory}: ok ({_structure?.Family ?? "model"}, {layers} layers, {_model?.Graph.NodeCount ?? 0} nodes, " +
                  $"{_model?.Graph.Initializers.Count ?? 0} initializers, {DataBytes:N0} bytes of external data)"
                : $"{directory}: {Problems.Count} problem{(Problems.Count == 1 ? "" : "s")}";
        }

        private long DataBytes;

        private void GenAi()
        {
            if (!Require(CompileJob.GenAiConfigFileName)) return;
            try { _genAi = GenAiConfig.Load(PathOf(CompileJob.GenAiConfigFileName)); }
            catch (Exception e) when (e is not OutOfMemoryException) { Problems.Add(Line(CompileJob.GenAiConfigFileName, e)); }
        }

        private void ModelFile(string modelFile)
        {
            if (!Require(modelFile)) return;
            try { _model = OnnxReader.Read(PathOf(modelFile)); }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Problems.Add(Line(modelFile, e));
                return;
            }
            foreach (var p in new IrVerifier().Check(_model)) Problem(modelFile, p);
            foreach (var v in _model.Graph.Inputs) _inputs.TryAdd(v.Name, v);
            foreach (var v in _model.Graph.Outputs) _outputs.TryAdd(v.Name, v);
            ExternalData(modelFile);
        }

        /// <summary>The reader has checked that every range lies inside its file; here: one data file, no overlaps, nothing after the end.</summary>
        private void ExternalData(string modelFile)
        {
            var byFile = _model!.Graph.Initializers
                .Where(v => v.ConstValue is FileTensor)
                .Select(v => (Name: v.Name, Tensor: (FileTensor)v.ConstValue!))
                .GroupBy(t => t.Tensor.File.Path, StringComparer.Ordinal);
            foreach (var file in byFile)
            {
                string name = Path.GetFileName(file.Key);
                if (name != CompileJob.DataFileName) Problem(modelFile, $"external data in '{name}', not {CompileJob.DataFileName}");
                var ranges = file.OrderBy(t => t.Tensor.Offset).ThenBy(t => t.Name, StringComparer.Ordinal).ToList();
                for (int i = 1; i < ranges.Count; i++)
                {
                    var (a, b) = (ranges[i - 1], ranges[i]);
                    if (b.Tensor.Offset < a.Tensor.Offset + a.Tensor.Length)
                        Problem(name, $"tensors {a.Name} [{a.Tensor.Offset}, {a.Tensor.Offset + a.Tensor.Length}) and {b.Name} " +
                            $"[{b.Tensor.Offset}, {b.Tensor.Offset + b.Tensor.Length}) overlap");
                }
                long end = ranges.Max(t => t.Tensor.Offset + t.Tensor.Length), length = new FileInfo(file.Key).Length;
                if (length > (end + PageAlignment - 1) / PageAlignment * PageAlignment)
                    Problem(name, $"{length:N0} bytes, but the model's tensors end at byte {end:N0}: data appended or the wrong file");
                DataBytes += length;
            }
        }

        private void Metadata(string modelFile)
        {
            if (_model!.GetMetadata(DecoderStructure.MetadataKey) is null)
            {
                Problem(modelFile, $"no '{DecoderStructure.MetadataKey}' metadata (not written by onnxmoe compile?)");
                return;
            }
            try { _structure = DecoderStructure.Read(_model); }
            catch (InvalidDataException e)
            {
                Problem(modelFile, e.Message);
                return;
            }
            var g = _model.Graph;
            var values = new HashSet<string>(StringComparer.Ordinal);
            foreach (var v in g.Inputs.Concat(g.Initializers)) values.Add(v.Name);
            var nodes = new HashSet<string>(StringComparer.Ordinal);
            foreach (var n in g.Nodes)
            {
                nodes.Add(n.Name);
                foreach (var o in n.Outputs) values.Add(o.Name);
            }
            var s = _structure;
            void Needs(HashSet<string> set, string name, string what, string where)
            {
                if (!set.Contains(name)) Problem(modelFile, $"'{DecoderStructure.MetadataKey}' {where} names {what} '{name}', which the graph lacks");
            }
            Needs(values, s.EmbeddingOutput, "value", "embedding_output");
            Needs(nodes, s.FinalNormInputNode, "node", "final_norm_input_node");
            foreach (var b in s.Blocks)
            {
                string where = $"block {b.Index}";
                Needs(values, b.Input, "value", where);
                Needs(values, b.Output, "value", where);
                Needs(_inputs.Keys.ToHashSet(StringComparer.Ordinal), b.Attention.PastKey, "graph input", where);
                Needs(_inputs.Keys.ToHashSet(StringComparer.Ordinal), b.Attention.PastValue, "graph input", where);
                Needs(_outputs.Keys.ToHashSet(StringComparer.Ordinal), b.Attention.PresentKey, "graph output", where);
                Needs(_outputs.Keys.ToHashSet(StringComparer.Ordinal), b.Attention.PresentValue, "graph output", where);
                Needs(nodes, b.Attention.ResidualAdd, "node", where);
                Needs(values, b.Attention.Output, "value", where);
                if (b.Attention.FusedNode is { } gqa) Needs(nodes, gqa, "node", where);
                if (b.Ffn is not { } f) continue;
                Needs(values, f.Input, "value", where);
                Needs(values, f.Output, "value", where);
                Needs(nodes, f.ResidualAdd, "node", where);
                if (f.Moe is not { } m) continue;
                Needs(nodes, m.RouterMatMul, "node", where);
                if (m.FusedNode is { } fused)
                {
                    Needs(nodes, fused, "node", where);
                    continue;
                }
                Needs(nodes, m.TopKNode, "node", where);
                Needs(values, m.ExpertIdTable, "initializer", where);
            }
        }

        /// <summary>The decoder convention: int64 ids, mask and positions; logits and the KV cache in the compute type.</summary>
        private void GraphInterface(string modelFile)
        {
            foreach (var name in new[] { "input_ids", "attention_mask", "position_ids" })
                if (!_inputs.TryGetValue(name, out var v)) Problem(modelFile, $"graph input '{name}' missing");
                else if (v.ElementType != DataType.Int64) Problem(modelFile, $"graph input '{name}' is {v.Type}, expected int64");
            if (!_outputs.TryGetValue("logits", out var logits)) Problem(modelFile, "graph output 'logits' missing");
            if (_structure is null) return;
            DataType? compute = _structure.ComputeType switch { "f32" => DataType.Float, "f16" => DataType.Float16, _ => null };
            if (compute is null)
            {
                Problem(modelFile, $"'{DecoderStructure.MetadataKey}' compute_type '{_structure.ComputeType}' is neither f32 nor f16");
                return;
            }
            if (logits is not null && logits.ElementType is not (DataType.Float or DataType.Float16))
                Problem(modelFile, $"graph output 'logits' is {logits.Type}, expected a float type");
            foreach (var b in _structure.Blocks)
                foreach (var (name, table, what) in new[]
                         {
                             (b.Attention.PastKey, _inputs, "input"), (b.Attention.PastValue, _inputs, "input"),
                             (b.Attention.PresentKey, _outputs, "output"), (b.Attention.PresentValue, _outputs, "output"),
                         })
                    if (table.TryGetValue(name, out var v) && v.ElementType != compute)
                        Problem(modelFile, $"graph {what} '{name}' is {v.Type}, expected {compute.Value.Name()} (the model's compute type)");
        }

        /// <summary>genai_config.json's names, counts and sizes against the graph and the structure metadata.</summary>
        private void GenAiAgainstGraph()
        {
            string file = CompileJob.GenAiConfigFileName;
            var g = _genAi!;
            if (g.ModelType is null) Problem(file, "model.type missing");
            JsonElement decoder;
            using var doc = JsonDocument.Parse(File.ReadAllBytes(PathOf(file)));
            if (!doc.RootElement.TryGetProperty("model", out var model) || !model.TryGetProperty("decoder", out decoder))
            {
                Problem(file, "model.decoder section missing");
                return;
            }
            int layers = g.NumHiddenLayers ?? -1;
            if (g.NumHiddenLayers is null) Problem(file, "model.decoder.num_hidden_layers missing");
            int graphLayers = _inputs.Keys.Count(k => k.StartsWith("past_key_values.", StringComparison.Ordinal) && k.EndsWith(".key", StringComparison.Ordinal));
            if (layers >= 0 && layers != graphLayers)
                Problem(file, $"model.decoder.num_hidden_layers is {layers}, the graph has {graphLayers} layers of KV cache");
            Names(decoder, "inputs", _inputs, "input", layers);
            Names(decoder, "outputs", _outputs, "output", layers);

            var logitsShape = _outputs.GetValueOrDefault("logits")?.Shape;
            long? vocab = logitsShape is { Count: > 0 } ? logitsShape[^1].Value : null;
            if (vocab is { } v && g.VocabSize != v) Problem(file, $"model.vocab_size is {Show(g.VocabSize)}, the graph's logits have {v}");
            var past = _inputs.GetValueOrDefault("past_key_values.0.key")?.Shape;
            if (past is { Count: 4 })
            {
                if (past[1].Value is { } kv && g.NumKeyValueHeads != kv)
                    Problem(file, $"model.decoder.num_key_value_heads is {Show(g.NumKeyValueHeads)}, the graph's KV cache has {kv}");
                if (past[3].Value is { } hs && g.HeadSize != hs)
                    Problem(file, $"model.decoder.head_size is {Show(g.HeadSize)}, the graph's KV cache has {hs}");
            }
            if (_structure is { } s)
            {
                if (g.HiddenSize != s.HiddenSize) Problem(file, $"model.decoder.hidden_size is {Show(g.HiddenSize)}, the model's metadata says {s.HiddenSize}");
                if (g.NumAttentionHeads != s.NumAttentionHeads)
                    Problem(file, $"model.decoder.num_attention_heads is {Show(g.NumAttentionHeads)}, the model's metadata says {s.NumAttentionHeads}");
                if (layers >= 0 && layers != s.NumLayers)
                    Problem(file, $"model.decoder.num_hidden_layers is {layers}, the model's metadata has {s.NumLayers} blocks");
            }
            if (g.ContextLength is not > 0) Problem(file, $"model.context_length is {Show(g.ContextLength)}, expected a positive length");
            if (g.VocabSize is int vs)
                foreach (var (name, id) in g.EosTokenIds.Select(e => ("eos_token_id", (int?)e)).Append(("bos_token_id", g.BosTokenId)).Append(("pad_token_id", g.PadTokenId)))
                    if (id is < 0 || id >= vs) Problem(file, $"model.{name} {id} is outside the vocabulary (0..{vs - 1})");
        }

        /// <summary>Each name in model.decoder.inputs/outputs is a graph input/output; "%d" patterns expand over the layers.</summary>
        private void Names(JsonElement decoder, string section, Dictionary<string, Value> graph, string what, int layers)
        {
            string file = CompileJob.GenAiConfigFileName;
            if (!decoder.TryGetProperty(section, out var names) || names.ValueKind != JsonValueKind.Object)
            {
                Problem(file, $"model.decoder.{section} missing");
                return;
            }
            foreach (var kv in names.EnumerateObject())
            {
                if (kv.Value.ValueKind != JsonValueKind.String)
                {
                    Problem(file, $"model.decoder.{section}.{kv.Name} is not a string");
                    continue;
                }
                string pattern = kv.Value.GetString()!;
                var expanded = pattern.Contains("%d") ? Enumerable.Range(0, Math.Max(layers, 0)).Select(i => pattern.Replace("%d", i.ToString())) : [pattern];
                foreach (var name in expanded)
                    if (!graph.ContainsKey(name))
                    {
                        Problem(file, $"model.decoder.{section}.{kv.Name} names '{name}', which is not a graph {what} of the model");
                        break;
                    }
            }
        }

        private void Report(string modelFile)
        {
            string file = CompileJob.ReportFileName;
            if (!Require(file)) return;
            try { _report = CompileReport.FromJson(File.ReadAllText(PathOf(file))); }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Problems.Add(Line(file, e));
                return;
            }
            if (_report is null)
            {
                Problem(file, "empty report (null)");
                return;
            }
            void Size(string name, long expected)
            {
                var info = new FileInfo(PathOf(name));
                if (info.Exists && info.Length != expected) Problem(name, $"{info.Length:N0} bytes, {file} says {expected:N0}: truncated or rewritten");
            }
            if (_report.Bytes is { } bytes)
            {
                Size(modelFile, bytes.Model);
                if (bytes.Data > 0 || File.Exists(PathOf(CompileJob.DataFileName))) Size(CompileJob.DataFileName, bytes.Data);
            }
            if (_model is not null && (_model.GetMetadata(PassManager.PipelineMetadataKey) ?? "") != (_report.Pipeline ?? ""))
                Problem(file, $"pipeline \"{_report.Pipeline}\" differs from the model's '{PassManager.PipelineMetadataKey}' metadata");
            if (_structure is not null && _report.NumLayers != _structure.NumLayers)
                Problem(file, $"num_layers is {_report.NumLayers}, the model has {_structure.NumLayers}");
            foreach (var t in _report.TokenizerFiles ?? []) if (t != TokenizerFile) Require(t);
        }

        private void Tokenizer()
        {
            const string file = TokenizerFile;
            // A checkpoint without a tokenizer compiles to a folder without one (the report lists no tokenizer files).
            if (_report is { TokenizerFiles: { } listed } && !listed.Contains(file) && !File.Exists(PathOf(file))) return;
            if (!Require(file)) return;
            try
            {
                var tokenizer = Inference.Tokenization.Tokenizer.Load(PathOf(file));
                if (_genAi?.VocabSize is int vs && tokenizer.VocabSize > vs)
                    Problem(file, $"{tokenizer.VocabSize} tokens, more than genai_config.json's vocab_size {vs}");
            }
            catch (Exception e) when (e is not OutOfMemoryException) { Problems.Add(Line(file, e)); }
            foreach (var json in new[] { "tokenizer_config.json", "special_tokens_map.json" })
                if (File.Exists(PathOf(json)))
                    try { using var _ = JsonDocument.Parse(File.ReadAllBytes(PathOf(json))); }
                    catch (JsonException e) { Problem(json, $"not valid JSON ({e.Message})"); }
            if (File.Exists(PathOf("generation_config.json")))
                try { GenerationConfig.Load(PathOf("generation_config.json")); }
                catch (Exception e) when (e is not OutOfMemoryException) { Problems.Add(Line("generation_config.json", e)); }
        }

        /// <summary>One line for a file that failed to load: the loader's message, prefixed with the path unless it names it already.</summary>
        private string Line(string file, Exception e)
        {
            string message = e.Message.Split('\n')[0];
            return message.Contains(file, StringComparison.Ordinal) ? message : $"{PathOf(file)}: {message}";
        }

        private static string Show(int? value) => value?.ToString() ?? "missing";
    }
}
