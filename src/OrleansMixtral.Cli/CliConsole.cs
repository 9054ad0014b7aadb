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
    /// <summary>Ctrl+C, for commands that handle it themselves (<see cref="SelfInterruptingCommand"/>).</summary>
    public ConsoleInterrupts Interrupts { get; } = new();

    /// <summary>The process's own streams: stdout buffered (commands flush as they go), terminals detected.</summary>
    public static CliConsole ForProcess()
    {
        var utf8 = new System.Text.UTF8Encoding(encoderShouldEmitUTF8Identifier: false);
        var stdout = new StreamWriter(Console.OpenStandardOutput(), utf8, 1 << 16) { AutoFlush = false };
        var console = new CliConsole(Console.In, stdout, Console.Error,
            !Console.IsInputRedirected, !Console.IsOutputRedirected, !Console.IsErrorRedirected);
        Console.CancelKeyPress += (_, e) =>
        {
            // a command that handles Ctrl+C keeps the process; otherwise System.CommandLine's handler cancels the command
            if (console.Interrupts.Raise()) e.Cancel = true;
        };
        return console;
    }
}

/// <summary>
/// Ctrl+C as a command that handles it itself sees it (chat: cancel the reply, not the process). The process's console
/// raises it from its Ctrl+C handler; tests raise it themselves.
/// </summary>
public sealed class ConsoleInterrupts
{
    event Action? Interrupted;

    /// <summary>Calls <paramref name="handler"/> on each Ctrl+C until the result is disposed.</summary>
    public IDisposable Handle(Action handler)
    {
        Interrupted += handler;
        return new Unsubscribe(() => Interrupted -= handler);
    }

    /// <summary>Delivers a Ctrl+C; false when no command handles it.</summary>
    public bool Raise()
    {
        var handlers = Interrupted;
        handlers?.Invoke();
        return handlers is not null;
    }

    sealed class Unsubscribe(Action action) : IDisposable
    {
        public void Dispose() => action();
    }
}

/// <summary>A command that handles Ctrl+C itself, through <see cref="CliConsole.Interrupts"/> (the process's handler leaves it running).</summary>
sealed class SelfInterruptingCommand(string name, string description) : System.CommandLine.Command(name, description);

/// <summary>A problem the user can fix (bad input, a file that is not there): one line on stderr, exit code 1.</summary>
public sealed class CliException(string message) : Exception(message);

/// <summary>An argument that parsed but does not fit the model (e.g. longer than its context): one line on stderr, exit code 2.</summary>
public sealed class CliUsageException(string message) : Exception(message);
