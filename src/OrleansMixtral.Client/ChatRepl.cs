
namespace OrleansMixtral.Client;

/// <summary>
/// Where a console chat's turns run and its history lives: a local engine (<c>mixtral chat --model</c>) or a conversation
/// in a cluster (<see cref="ClusterChat"/>). <see cref="ChatRepl"/> runs either with the same commands.
/// </summary>
public interface IChatSession
{
    /// <summary>The conversation's id in its cluster (it can be resumed by it); null for a local chat.</summary>
    string? ConversationId { get; }

    /// <summary>The conversation's messages so far, its system message first if it has one.</summary>
    Task<IReadOnlyList<ChatMessage>> GetHistoryAsync(CancellationToken cancellationToken);

    /// <summary>Forgets the conversation's turns (its system message stays).</summary>
    Task ResetAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Runs one turn, handing its text to <paramref name="onText"/> as it comes. Cancelling <paramref name="cancellationToken"/>
    /// cancels the turn, which then does not join the history. Throws <see cref="ChatSessionException"/> for a turn that
    /// cannot run (one line for the user).
    /// </summary>
    Task<ChatTurnOutcome> SendAsync(string message, Action<string> onText, CancellationToken cancellationToken);
}

/// <summary>How a chat turn ended: one line for stderr (its figures, or how it ended and why).</summary>
/// <param name="EndsChat">The session cannot go on (a local engine that failed).</param>
public sealed record ChatTurnOutcome(string Summary, bool EndsChat = false);

/// <summary>A chat command or turn that cannot run; the chat goes on. The message is one line for the user.</summary>
public sealed class ChatSessionException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Ctrl+C in a console chat: during a reply it cancels the reply and the chat goes on at the prompt; at the prompt, or
/// again before the cancelled reply has ended, it ends the chat. The console's handler calls <see cref="Interrupt"/>.
/// </summary>
public sealed class ChatInterrupts : IDisposable
{
    readonly Lock _lock = new();
    readonly CancellationTokenSource _exit = new();
    CancellationTokenSource? _turn;

    /// <summary>Cancelled when the chat is to end.</summary>
    public CancellationToken Exit => _exit.Token;

    /// <summary>What Ctrl+C does; returns true when it ended the chat.</summary>
    public bool Interrupt()
    {
        lock (_lock)
        {
            if (_turn is { IsCancellationRequested: false } turn)
            {
                turn.Cancel();
                return false;
            }
            _exit.Cancel();
            return true;
        }
    }

    /// <summary>A token for the turn starting now, cancelled by the next Ctrl+C (or with <paramref name="outer"/>).</summary>
    internal CancellationToken BeginTurn(CancellationToken outer)
    {
        lock (_lock)
        {
            _turn = CancellationTokenSource.CreateLinkedTokenSource(outer);
            return _turn.Token;
        }
    }

    internal void EndTurn()
    {
        lock (_lock)
        {
            _turn?.Dispose();
            _turn = null;
        }
    }

    public void Dispose()
    {
        EndTurn();
        _exit.Dispose();
    }
}

/// <summary>
/// The console chat loop, the same for a local engine and a cluster: one line in, the reply streamed to
/// <c>output</c> (one line each); prompts, figures, notes and errors to <c>error</c>. Commands: see <see cref="Commands"/>.
/// </summary>
public sealed class ChatRepl(IChatSession session, TextReader input, TextWriter output, TextWriter error)
{
    public const int ExitOk = 0, ExitError = 1, ExitInterrupted = 130;

    /// <summary>The chat's commands and what they do (what /help prints).</summary>
    public static readonly IReadOnlyList<(string Name, string Help)> Commands =
    [
        ("/help", "these commands"),
        ("/history", "the conversation so far"),
        ("/reset", "forget the conversation's turns (its system message stays)"),
        ("/id", "the conversation's id (a cluster's conversation resumes with chat --cluster ... --conversation ID)"),
        ("/exit", "end the chat (also /quit, end of input, or Ctrl+C at the prompt; Ctrl+C during a reply cancels the reply)"),
    ];

    /// <summary>Print "> " before each line (when the input is a terminal).</summary>
    public bool Prompt { get; init; }
    /// <summary>Ctrl+C; null: none (input from a pipe).</summary>
    public ChatInterrupts? Interrupts { get; init; }

    /// <summary>Reads lines until /exit, the end of the input or an interrupt at the prompt; 130 when interrupted.</summary>
    public async Task<int> RunAsync(CancellationToken cancellationToken = default)
    {
        using var exit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, Interrupts?.Exit ?? CancellationToken.None);
        while (true)
        {
            if (Prompt) error.Write("> ");
            string? line;
            // a console's read blocks its thread and cannot be cancelled (Console.In reads synchronously even when asked
            // for a task): it runs on a pool thread, left behind when the chat ends
            try { line = await Task.Run(() => input.ReadLine(), CancellationToken.None).WaitAsync(exit.Token); }
            catch (OperationCanceledException) { return Interrupted(); }
            if (line is null) return ExitOk;
            var trimmed = line.Trim();
            if (trimmed.Length == 0) continue;
            if (trimmed.StartsWith('/') && !trimmed.Contains(' '))
            {
                if (trimmed is "/exit" or "/quit") return ExitOk;
                try { await CommandAsync(trimmed, exit.Token); }
                catch (ChatSessionException e) { error.WriteLine("error: " + e.Message); }
                catch (OperationCanceledException) when (exit.IsCancellationRequested) { return Interrupted(); }
                continue;
            }

            var turn = Interrupts?.BeginTurn(cancellationToken) ?? cancellationToken;
            ChatTurnOutcome outcome;
            try
            {
                outcome = await session.SendAsync(line, text =>
                {
                    output.Write(text);
                    output.Flush();
                }, turn);
            }
            catch (ChatSessionException e)
            {
                error.WriteLine("error: " + e.Message);
                continue;
            }
            finally { Interrupts?.EndTurn(); }
            output.WriteLine();
            output.Flush();
            error.WriteLine(outcome.Summary);
            if (outcome.EndsChat) return ExitError;
            if (exit.IsCancellationRequested) return Interrupted(); // Ctrl+C again while the reply was being cancelled
        }
    }

    int Interrupted()
    {
        error.WriteLine();
        return ExitInterrupted;
    }

    async Task CommandAsync(string command, CancellationToken cancellationToken)
    {
        switch (command)
        {
            case "/help":
                foreach (var (name, help) in Commands) error.WriteLine($"  {name,-9} {help}");
                break;
            case "/history":
                var history = await session.GetHistoryAsync(cancellationToken);
                if (history.Count == 0) error.WriteLine("(no messages yet)");
                foreach (var m in history) error.WriteLine($"[{m.Role.ToString().ToLowerInvariant()}] {m.Content}");
                break;
            case "/reset":
                await session.ResetAsync(cancellationToken);
                error.WriteLine("(conversation cleared)");
                break;
            case "/id":
                error.WriteLine(session.ConversationId ?? "(a local chat has no id: chat --cluster keeps conversations in a cluster, by id)");
                break;
            default:
                error.WriteLine($"unknown command {command} (commands: {string.Join(", ", Commands.Select(c => c.Name))})");
                break;
        }
    }
}
