namespace OnnxMoe.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        Console.Error.WriteLine("onnxmoe: commands are not wired yet");
        return 2;
    }
}
