namespace OnnxMoe.Checkpoints;

/// <summary>
/// A checkpoint the user supplied is malformed or unsupported. The message names the file (and
/// tensor or config field) and what is wrong; the CLI maps it to exit code 1 without a stack trace.
/// Derives from <see cref="ArgumentException"/> (as PassException does) so generic handlers treat
/// it as a user error; <see cref="InvalidDataException"/> is sealed.
/// </summary>
public sealed class CheckpointException : ArgumentException
{
    public CheckpointException(string message) : base(message) { }
    public CheckpointException(string message, Exception inner) : base(message, inner) { }
}
