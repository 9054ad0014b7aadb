using System.CommandLine;
using OrleansMixtral.Cli.Commands;
using OrleansMixtral.Engine;
using OrleansMixtral.Model;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Cli;

/// <summary>
/// The <c>mixtral</c> command line. <see cref="Run(string[], TextReader, TextWriter, TextWriter)"/> is the whole
/// program over given streams (the process's Main calls it with its own), so tests run it in-process.
/// Exit codes: 0 success, 1 an error (one line on stderr), 2 bad arguments (usage on stderr), 130 interrupted.
/// </summary>
public static class CliApp
{
    public const int ExitOk = 0, ExitError = 1, ExitUsage = 2, ExitInterrupted = 130;

    public static int Run(string[] args, TextReader stdin, TextWriter stdout, TextWriter stderr)
        => Run(args, new CliConsole(stdin, stdout, stderr));

    /// <param name="handleTermination">Turn Ctrl+C / SIGTERM into cancellation (only for the real process).</param>
    public static int Run(string[] args, CliConsole console, bool handleTermination = false)
        => Task.Run(() => RunAsync(args, console, handleTermination)).GetAwaiter().GetResult();

    public static async Task<int> RunAsync(string[] args, CliConsole console, bool handleTermination = false, CancellationToken cancellationToken = default)
    {
        RootCommand root = BuildRootCommand(console);
        ParseResult parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            // System.CommandLine's parse-error action prints the errors and the command's help; all of it goes to stderr.
            await parse.InvokeAsync(new InvocationConfiguration
            {
                Output = console.Error, Error = console.Error, ProcessTerminationTimeout = null,
            }, cancellationToken);
            return ExitUsage;
        }

        var configuration = new InvocationConfiguration
        {
            Output = console.Out,
            Error = console.Error,
            EnableDefaultExceptionHandler = false,
        };
        if (!handleTermination || parse.CommandResult.Command is SelfInterruptingCommand) configuration.ProcessTerminationTimeout = null;
        try
        {
            int code = await parse.InvokeAsync(configuration, cancellationToken);
            console.Out.Flush();
            return code;
        }
        catch (OperationCanceledException)
        {
            console.Out.Flush();
            console.Error.WriteLine("interrupted");
            return ExitInterrupted;
        }
        catch (CliUsageException e)
        {
            console.Out.Flush();
            console.Error.WriteLine("error: " + OneLine(e.Message));
            return ExitUsage;
        }
        catch (Exception e)
        {
            console.Out.Flush();
            console.Error.WriteLine("error: " + Describe(e));
            if (Environment.GetEnvironmentVariable("MIXTRAL_DEBUG") is { Length: > 0 }) console.Error.WriteLine(e);
            return ExitError;
        }
    }

    /// <summary>One line for the user: the message of errors they can act on, the type too for anything unexpected.</summary>
    static string Describe(Exception e)
    {
        while (e is AggregateException { InnerExceptions.Count: 1 } a) e = a.InnerExceptions[0];
        string message = OneLine(e.Message);
        return e switch
        {
            CliException or ModelFormatException or TokenizerFormatException or InvalidRequestException or ChatTemplateException
                or BackendUnavailableException or EngineOverloadedException => message,
            FileNotFoundException f when f.FileName is not null => $"file not found: {f.FileName}",
            IOException or UnauthorizedAccessException => message,
            _ => $"{e.GetType().Name}: {message} (set MIXTRAL_DEBUG=1 for a stack trace)",
        };
    }

    static string OneLine(string text) => text.ReplaceLineEndings(" ").Trim();

    public static RootCommand BuildRootCommand(CliConsole console)
    {
        var root = new RootCommand("mixtral: run a Mixtral checkpoint (Hugging Face layout) on this machine.");
        root.Subcommands.Add(GenerateCommand.Create(console));
        root.Subcommands.Add(ChatCommand.Create(console));
        root.Subcommands.Add(TokenizeCommand.Create(console));
        root.Subcommands.Add(PerplexityCommand.Create(console));
        root.Subcommands.Add(QuantizeCommand.Create(console));
        root.Subcommands.Add(BenchCommand.Create(console));
        return root;
    }
}
