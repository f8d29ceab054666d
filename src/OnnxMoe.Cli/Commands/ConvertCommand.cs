using System.CommandLine;
using OnnxMoe.Ir;
using OnnxMoe.Onnx;

namespace OnnxMoe.Cli.Commands;

internal static class ConvertCommand
{
    public static Command Create()
    {
        var input = new Argument<string>("input") { Description = "The .onnx file to read." };
        var output = new Option<string>("--output", "-o") { Description = "The .onnx file to write (written atomically; its data file is <output>.data).", Required = true };
        var external = new Option<bool>("--external-data") { Description = "Store tensors of 1 KiB or more in one <output>.data file, page-aligned (default)." };
        var embed = new Option<bool>("--embed") { Description = "Store every tensor inside the .onnx file (fails clearly past protobuf's 2 GiB limit)." };
        var threshold = new Option<long>("--external-threshold") { Description = "With --external-data: smallest tensor in bytes that goes to the data file.", DefaultValueFactory = _ => 1024 };
        var command = new Command("convert", "Read a model through onnxmoe's IR and write it back, moving tensors between embedded and external data.\n" +
            "Example: onnxmoe convert big.onnx -o small/model.onnx --external-data")
        {
            input, output, external, embed, threshold,
        };
        command.SetAction(parse =>
        {
            if (parse.GetValue(external) && parse.GetValue(embed)) throw new UserErrorException("--external-data and --embed exclude each other");
            string inPath = CommonOptions.ExistingFile(parse.GetValue(input)!, "model");
            string outPath = parse.GetValue(output)!;
            if (Path.GetFullPath(inPath) == Path.GetFullPath(outPath)) throw new UserErrorException($"{outPath}: output must differ from the input");
            if (parse.GetValue(threshold) < 0) throw new UserErrorException("--external-threshold must be 0 or more");
            var model = OnnxReader.Read(inPath);
            var options = parse.GetValue(embed)
                ? OnnxWriteOptions.Embedded
                : new OnnxWriteOptions { ExternalData = ExternalDataMode.External, ExternalThreshold = parse.GetValue(threshold) };
            string? dir = Path.GetDirectoryName(Path.GetFullPath(outPath));
            if (dir != null) Directory.CreateDirectory(dir);
            var result = OnnxWriter.Write(model, outPath, options);
            Console.WriteLine($"wrote {result.ModelPath} ({result.ModelBytes:N0} bytes)" +
                (result.DataPath != null ? $" and {result.DataPath} ({result.DataBytes:N0} bytes, {result.ExternalTensors} tensors)" : ""));
            return 0;
        });
        return command;
    }
}
