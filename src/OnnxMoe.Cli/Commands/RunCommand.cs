using System.CommandLine;
using System.Globalization;
using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;
using OnnxMoe.Onnx;
using OnnxMoe.Runtime;

namespace OnnxMoe.Cli.Commands;

internal static class RunCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "The .onnx file to execute." };
        var inputs = new Option<string[]>("--input", "-i") { Description = "An input as name=path/to/tensor.pb (a TensorProto file); repeat for each input." };
        var random = new Option<bool>("--random") { Description = "Fill inputs not given with --input by seeded random values (floats ~ N(0,1), integers in [0, --int-max), bools)." };
        var seed = new Option<int>("--seed") { Description = "Seed for --random.", DefaultValueFactory = _ => 0 };
        var intMax = new Option<long>("--int-max") { Description = "Upper bound (exclusive) of random integers, e.g. the vocabulary size for input_ids.", DefaultValueFactory = _ => 10 };
        var dims = new Option<string[]>("--dim") { Description = "Size of a symbolic dimension for --random, as name=value (unnamed or unset dims are 1)." };
        var save = new Option<string?>("--save-outputs") { Description = "Folder to write each output to as <name>.pb (TensorProto)." };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var command = new Command("run", "Execute a model with ONNX Runtime on given or seeded random inputs and summarise every output (shape, dtype, min/max/mean, first values).\n" +
            "Example: onnxmoe run model.onnx --random --dim batch=1 --dim sequence=8 --int-max 1024")
        {
            model, inputs, random, seed, intMax, dims, save, device, threads,
        };
        command.SetAction(parse =>
        {
            string path = CommonOptions.ExistingFile(parse.GetValue(model)!, "model");
            var config = CommonOptions.SessionConfig(parse.GetValue(device)!, parse.GetValue(threads));
            var given = ParsePairs(parse.GetValue(inputs) ?? [], "--input");
            var dimSizes = ParsePairs(parse.GetValue(dims) ?? [], "--dim").ToDictionary(kv => kv.Key, kv => ParseLong(kv.Value, "--dim " + kv.Key));
            using var session = new InferenceSession(path, config);
            foreach (var name in given.Keys)
                if (!session.Inputs.Any(i => i.Name == name))
                    throw new UserErrorException($"--input {name}: the model has no such input (inputs: {string.Join(", ", session.Inputs.Select(i => i.Name))})");
            var rng = new Random(parse.GetValue(seed));
            var feeds = new List<KeyValuePair<string, OrtValue>>();
            try
            {
                foreach (var info in session.Inputs)
                {
                    Tensor tensor;
                    if (given.TryGetValue(info.Name, out var file)) tensor = OnnxReader.ReadTensor(CommonOptions.ExistingFile(file, "tensor"));
                    else if (parse.GetValue(random)) tensor = RandomTensor(info, dimSizes, rng, parse.GetValue(intMax));
                    else throw new UserErrorException($"input {info.Name} has no value: pass --input {info.Name}=file.pb or --random");
                    feeds.Add(new(info.Name, OrtValue.FromTensor(tensor)));
                }
                var watch = System.Diagnostics.Stopwatch.StartNew();
                using var result = session.Run(feeds);
                watch.Stop();
                string? saveDir = parse.GetValue(save);
                if (saveDir != null) Directory.CreateDirectory(saveDir);
                for (int k = 0; k < result.Count; k++)
                {
                    var t = result[k].ToTensor();
                    Console.WriteLine(Describe(result.Names[k], t));
                    if (saveDir != null) OnnxWriter.WriteTensor(t, Path.Combine(saveDir, SafeFileName(result.Names[k]) + ".pb"), result.Names[k]);
                }
                Console.WriteLine($"ran in {watch.Elapsed.TotalMilliseconds:F1} ms on {config.Device.ToString().ToLowerInvariant()}");
            }
            finally
            {
                foreach (var f in feeds) f.Value.Dispose();
            }
            return 0;
        });
        return command;
    }

    private static Dictionary<string, string> ParsePairs(string[] items, string option)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var item in items)
        {
            int eq = item.IndexOf('=');
            if (eq <= 0 || eq == item.Length - 1) throw new UserErrorException($"{option} {item}: expected name=value");
            if (!result.TryAdd(item[..eq], item[(eq + 1)..])) throw new UserErrorException($"{option} {item[..eq]} is given twice");
        }
        return result;
    }

    private static long ParseLong(string text, string what) =>
        long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) && v >= 0 ? v : throw new UserErrorException($"{what}: '{text}' is not a non-negative integer");

    private static Tensor RandomTensor(TensorInfo info, Dictionary<string, long> dims, Random rng, long intMax)
    {
        var shape = new long[info.Shape.Count];
        for (int d = 0; d < shape.Length; d++)
        {
            string? name = info.DimensionNames.Count > d ? info.DimensionNames[d] : null;
            shape[d] = info.Shape[d] >= 0 ? info.Shape[d] : name != null && dims.TryGetValue(name, out long v) ? v : 1;
        }
        long count = 1;
        foreach (var s in shape) count *= s;
        int n = checked((int)count);
        switch (info.ElementType)
        {
            case DataType.Float:
                {
                    var data = new float[n];
                    for (int i = 0; i < n; i++) data[i] = (float)Gaussian(rng);
                    return InMemoryTensor.FromFloats(shape, data);
                }
            case DataType.Float16:
                {
                    var data = new Half[n];
                    for (int i = 0; i < n; i++) data[i] = (Half)Gaussian(rng);
                    return InMemoryTensor.FromHalves(shape, data);
                }
            case DataType.Int64:
                {
                    var data = new long[n];
                    for (int i = 0; i < n; i++) data[i] = rng.NextInt64(Math.Max(1, intMax));
                    return InMemoryTensor.FromInt64s(shape, data);
                }
            case DataType.Int32:
                {
                    var data = new int[n];
                    for (int i = 0; i < n; i++) data[i] = (int)rng.NextInt64(Math.Max(1, Math.Min(intMax, int.MaxValue)));
                    return InMemoryTensor.FromInt32s(shape, data);
                }
            case DataType.Bool:
            case DataType.UInt8:
                {
                    var data = new byte[n];
                    for (int i = 0; i < n; i++) data[i] = (byte)rng.Next(info.ElementType == DataType.Bool ? 2 : 256);
                    return new InMemoryTensor(info.ElementType, shape, data);
                }
            default:
                throw new UserErrorException($"input {info.Name}: --random cannot make {info.ElementType.Name()} values; pass --input {info.Name}=file.pb");
        }
    }

    private static double Gaussian(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    private static string SafeFileName(string name) => string.Concat(name.Select(c => char.IsLetterOrDigit(c) || c is '.' or '-' or '_' ? c : '_'));

    internal static string Describe(string name, Tensor t)
    {
        string head = $"{name}: {t.DataType.Name()}[{string.Join(",", t.Shape)}]";
        if (t is StringTensor s) return $"{head} first: {string.Join(" | ", s.Values.Take(4).Select(v => System.Text.Encoding.UTF8.GetString(v)))}";
        double[] values = ToDoubles(t);
        if (values.Length == 0) return $"{head} (empty)";
        string first = string.Join(", ", values.Take(6).Select(v => v.ToString("G6", CultureInfo.InvariantCulture)));
        return $"{head} min {values.Min().ToString("G6", CultureInfo.InvariantCulture)} max {values.Max().ToString("G6", CultureInfo.InvariantCulture)} " +
            $"mean {values.Average().ToString("G6", CultureInfo.InvariantCulture)} first [{first}{(values.Length > 6 ? ", ..." : "")}]";
    }

    private static double[] ToDoubles(Tensor t) => t.DataType switch
    {
        DataType.Float or DataType.Float16 or DataType.BFloat16 or DataType.Double => t.ToFloatArray().Select(v => (double)v).ToArray(),
        DataType.Int64 => t.GetSpan<long>().ToArray().Select(v => (double)v).ToArray(),
        DataType.Int32 => t.GetSpan<int>().ToArray().Select(v => (double)v).ToArray(),
        DataType.UInt8 or DataType.Bool => t.GetBytes().ToArray().Select(v => (double)v).ToArray(),
        DataType.Int8 => t.GetSpan<sbyte>().ToArray().Select(v => (double)v).ToArray(),
        _ => [],
    };
}
