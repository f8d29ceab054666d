namespace OnnxMoe.Ir;

/// <summary>
/// Base of errors the user caused (bad path, malformed file, nonsense option). The CLI prints the
/// message alone and exits with code 1; any other exception is an internal error (exit code 2).
/// Messages name the file or option and say what is wrong.
/// </summary>
public class UserErrorException : Exception
{
    public UserErrorException(string message) : base(message) { }
    public UserErrorException(string message, Exception inner) : base(message, inner) { }
}
