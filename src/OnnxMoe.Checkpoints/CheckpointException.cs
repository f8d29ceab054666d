namespace OnnxMoe.Checkpoints;

/// <summary>
/// A checkpoint the user supplied is malformed or unsupported. The message names the file (and
/// tensor or config field) and what is wrong; the CLI maps it to exit code 1 without a stack trace.
/// </summary>
public sealed class CheckpointException : OnnxMoe.Ir.UserErrorException
{
    public CheckpointException(string message) : base(message) { }
    public CheckpointException(string message, Exception inner) : base(message, inner) { }
}
