namespace OrleansMixtral.Cli;

/// <summary>The standard streams a command works with, and which of them are terminals.</summary>
public sealed class CliConsole(TextReader input, TextWriter output, TextWriter error, bool inputIsTerminal = false, bool outputIsTerminal = false, bool errorIsTerminal = false)
{
    public TextReader In { get; } = input;
    public TextWriter Out { get; } = output;
    public TextWriter Error { get; } = error;
    /// <summary>A person types the input (a chat shows its prompt then).</summary>
    public bool InputIsTerminal { get; } = inputIsTerminal;
    public bool OutputIsTerminal { get; } = outputIsTerminal;
    /// <summary>Progress bars are drawn only on a terminal.</summary>
    public bool ErrorIsTerminal { get; } = errorIsTerminal;

    /// <summary>The process's own streams: stdout buffered (commands flush as they go), terminals detected.</summary>
    public static CliConsole ForProcess()
    {
        var utf8 = new System.Text.UTF8Encoding(encoderShouldEmitUTF8Identifier: false);
        var stdout = new StreamWriter(Console.OpenStandardOutput(), utf8, 1 << 16) { AutoFlush = false };
        return new CliConsole(Console.In, stdout, Console.Error,
            !Console.IsInputRedirected, !Console.IsOutputRedirected, !Console.IsErrorRedirected);
    }
}

/// <summary>A problem the user can fix (bad input, a file that is not there): one line on stderr, exit code 1.</summary>
public sealed class CliException(string message) : Exception(message);

/// <summary>An argument that parsed but does not fit the model (e.g. longer than its context): one line on stderr, exit code 2.</summary>
public sealed class CliUsageException(string message) : Exception(message);
