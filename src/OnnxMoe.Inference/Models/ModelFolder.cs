using OnnxMoe.Inference.Tokenization;
using OnnxMoe.Ir;

namespace OnnxMoe.Inference.Models;

/// <summary>
/// A compiled model folder as generate, eval and bench use it: the decoder ONNX file (model.onnx or the
/// genai_config.json decoder filename), genai_config.json, tokenizer.json and generation_config.json when present.
/// Opening reads only the small JSON configs; the tokenizer is loaded on demand.
/// </summary>
public sealed class ModelFolder
{
    private Tokenizer? _tokenizer;

    private ModelFolder(string directory, string modelPath, GenAiConfig? genAi, GenerationConfig? generation)
    {
        Directory = directory;
        ModelPath = modelPath;
        GenAi = genAi;
        Generation = generation;
    }

    /// <summary>The folder (full path).</summary>
    public string Directory { get; }

    /// <summary>Full path of the decoder ONNX file.</summary>
    public string ModelPath { get; }

    public GenAiConfig? GenAi { get; }

    public GenerationConfig? Generation { get; }

    public string TokenizerPath => Path.Combine(Directory, "tokenizer.json");

    public bool HasTokenizer => File.Exists(TokenizerPath);

    /// <summary>Stop ids: generation_config.json's eos_token_id, else genai_config.json's.</summary>
    public IReadOnlyList<int> EosTokenIds =>
        Generation is { EosTokenIds.Count: > 0 } g ? g.EosTokenIds : GenAi?.EosTokenIds ?? [];

    public int? BosTokenId => Generation?.BosTokenId ?? GenAi?.BosTokenId;

    /// <summary>Pad id for left padding: pad_token_id, else the first eos id, else 0.</summary>
    public int PadTokenId => Generation?.PadTokenId ?? GenAi?.PadTokenId ?? EosTokenIds.FirstOrDefault();

    /// <summary>Opens a model folder; a missing folder or decoder file or a malformed config is a <see cref="UserErrorException"/>.</summary>
    public static ModelFolder Open(string directory)
    {
        var full = Path.GetFullPath(directory);
        if (!System.IO.Directory.Exists(full)) throw new UserErrorException($"{directory}: model folder not found");
        var genAiPath = Path.Combine(full, "genai_config.json");
        var genAi = File.Exists(genAiPath) ? GenAiConfig.Load(genAiPath) : null;
        var generationPath = Path.Combine(full, "generation_config.json");
        var generation = File.Exists(generationPath) ? GenerationConfig.Load(generationPath) : null;
        var fileName = genAi?.DecoderFileName ?? "model.onnx";
        if (Path.IsPathRooted(fileName) || fileName.Split('/', '\\').Contains(".."))
            throw new UserErrorException($"{genAiPath}: decoder filename \"{fileName}\" must stay inside the model folder");
        var modelPath = Path.Combine(full, fileName);
        if (!File.Exists(modelPath)) throw new UserErrorException($"{directory}: {fileName} not found (not a compiled model folder?)");
        return new ModelFolder(full, modelPath, genAi, generation);
    }

    /// <summary>The folder's tokenizer.json, loaded once.</summary>
    public Tokenizer LoadTokenizer()
    {
        if (_tokenizer is not null) return _tokenizer;
        if (!HasTokenizer) throw new UserErrorException($"{Directory}: tokenizer.json not found");
        return _tokenizer = Tokenizer.Load(TokenizerPath);
    }
}
