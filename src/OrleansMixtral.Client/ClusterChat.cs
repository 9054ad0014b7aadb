using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Client;

/// <summary>
/// The console chat against a running cluster (<c>mixtral chat --cluster HOST:PORT</c>): one line in, the reply streamed
/// out, turn after turn, in a conversation that lives in the cluster and can be resumed by its id from anywhere.
/// Replies go to <c>output</c> (one line each); the conversation id, figures, errors and prompts go to <c>error</c>.
/// The loop and its commands are <see cref="ChatRepl"/>'s, as in a local chat.
/// </summary>
public sealed class ClusterChat(MixtralClient client, TextReader input, TextWriter output, TextWriter error)
{
    public const int ExitOk = ChatRepl.ExitOk;
    public const int ExitError = ChatRepl.ExitError;
    public const int ExitInterrupted = ChatRepl.ExitInterrupted;

    /// <summary>How long <see cref="RunAsync(string, string?, string?, SamplingOptions?, TextReader, TextWriter, TextWriter, bool, CancellationToken, string?, TimeSpan?, ChatInterrupts?)"/> waits for the cluster by default.</summary>
    public static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromSeconds(10);

    public SamplingOptions Options { get; init; } = new();
    /// <summary>System message of a new conversation (ignored when resuming one that has turns).</summary>
    public string? SystemPrompt { get; init; }
    /// <summary>Print "> " before each line (when the input is a terminal).</summary>
    public bool Prompt { get; init; }
    /// <summary>Ctrl+C: cancels a reply, or ends the chat at the prompt; null: none.</summary>
    public ChatInterrupts? Interrupts { get; init; }

    /// <summary>
    /// Connects to <paramref name="cluster"/> (see <see cref="ClusterConnection"/>; <paramref name="clusterId"/> null: the
    /// local silo's registered id, else the default), saying so on <paramref name="error"/>, and runs the chat. A cluster
    /// that does not answer within <paramref name="connectTimeout"/> (default <see cref="DefaultConnectTimeout"/>) is one
    /// line on <paramref name="error"/> and exit code 1.
    /// </summary>
    public static async Task<int> RunAsync(string cluster, string? conversationId, string? systemPrompt, SamplingOptions? options,
        TextReader input, TextWriter output, TextWriter error, bool prompt = false, CancellationToken cancellationToken = default,
        string? clusterId = null, TimeSpan? connectTimeout = null, ChatInterrupts? interrupts = null)
    {
        var timeout = connectTimeout ?? DefaultConnectTimeout;
        string ids;
        try { ids = ClusterConnection.ResolveIds(cluster, clusterId).ClusterId; }
        catch (ArgumentException e)
        {
            error.WriteLine($"error: --cluster {cluster}: {e.Message}");
            return ExitError;
        }
        error.WriteLine($"connecting to the cluster at {cluster} (cluster id {ids})…");
        Microsoft.Extensions.Hosting.IHost host;
        using var connecting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, interrupts?.Exit ?? CancellationToken.None);
        try
        {
            // the failure is this one line: no log output (Orleans' would be a stack trace)
            host = await ClusterConnection.ConnectAsync(cluster, timeout, clusterId, logLevel: LogLevel.None, cancellationToken: connecting.Token);
        }
        catch (OperationCanceledException) when (connecting.IsCancellationRequested)
        {
            error.WriteLine("interrupted");
            return ExitInterrupted;
        }
        catch (Exception e)
        {
            var why = e is TimeoutException
                ? $"no gateway answered within {timeout.TotalSeconds:0.#} s" + (e.InnerException is { } last ? $" ({last.Message.ReplaceLineEndings(" ")})" : "")
                : e.Message.ReplaceLineEndings(" ");
            error.WriteLine($"error: cannot connect to the cluster at {cluster} (cluster id {ids}; a silo prints its own when ready): {why}");
            return ExitError;
        }
        using (host)
        {
            var chat = new ClusterChat(host.Services.GetRequiredService<MixtralClient>(), input, output, error)
            {
                Options = options ?? new SamplingOptions(),
                SystemPrompt = systemPrompt,
                Prompt = prompt,
                Interrupts = interrupts,
            };
            var code = await chat.RunAsync(conversationId, cancellationToken);
            try { await host.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(5)).Token); } catch (Exception) { }
            return code;
        }
    }

    /// <summary>Runs the chat in the conversation <paramref name="conversationId"/> (a new one when null).</summary>
    public async Task<int> RunAsync(string? conversationId = null, CancellationToken cancellationToken = default)
    {
        ConversationSnapshot snapshot;
        try
        {
            snapshot = conversationId is null
                ? await client.StartConversationAsync(null, SystemPrompt)
                : await client.GetHistoryAsync(conversationId);
            if (conversationId is not null && snapshot.Turns == 0 && snapshot.Messages.Length == 0 && SystemPrompt is not null)
                snapshot = await client.StartConversationAsync(conversationId, SystemPrompt);
        }
        catch (ConversationNotFoundException)
        {
            error.WriteLine($"error: conversation {conversationId} does not exist (it was never started, or its storage lost it); leave out --conversation to start a new one");
            return ExitError;
        }
        catch (Exception e)
        {
            error.WriteLine("error: the cluster does not answer: " + e.Message);
            return ExitError;
        }
        var id = snapshot.ConversationId;
        error.WriteLine(snapshot.Turns == 0
            ? $"conversation {id} (resume it with --conversation {id}); /help lists the commands"
            : $"resuming conversation {id}: {snapshot.Turns} turn(s) so far; /history shows them, /help the commands");
        var repl = new ChatRepl(new Session(client, id, Options), input, output, error) { Prompt = Prompt, Interrupts = Interrupts };
        return await repl.RunAsync(cancellationToken);
    }

    /// <summary>A conversation in the cluster, as the chat loop sees it.</summary>
    sealed class Session(MixtralClient client, string id, SamplingOptions options) : IChatSession
    {
        public string? ConversationId => id;

        public async Task<IReadOnlyList<ChatMessage>> GetHistoryAsync(CancellationToken cancellationToken) =>
            await Guard(async () => (await client.GetHistoryAsync(id)).Messages);

        public Task ResetAsync(CancellationToken cancellationToken) => Guard(async () =>
        {
            await client.Conversation(id).Reset();
            return true;
        });

        public async Task<ChatTurnOutcome> SendAsync(string message, Action<string> onText, CancellationToken cancellationToken)
        {
            var result = await Guard(() => client.SendAndCollectAsync(id, message, options, chunk => onText(chunk.Text), cancellationToken));
            var end = result.End;
            // a cancelled turn ends in the grain at the engine's next step: the next message must not find it still running
            if (end.Finish == FinishReason.Cancelled) await UntilNoTurnRunsAsync();
            if (!end.Succeeded)
                return new ChatTurnOutcome($"({end.Finish.ToString().ToLowerInvariant()}: {end.Error}; the conversation is as it was before this message)");
            var decode = result.Elapsed - result.TimeToFirstChunk;
            var rate = end.Usage.CompletionTokens > 1 && decode > TimeSpan.Zero ? (end.Usage.CompletionTokens - 1) / decode.TotalSeconds : 0;
            return new ChatTurnOutcome(string.Create(CultureInfo.InvariantCulture,
                $"[{end.Usage.CompletionTokens} tokens, first after {result.TimeToFirstChunk.TotalMilliseconds:F0} ms, {rate:F1} tok/s; prompt {end.Usage.PromptTokens} ({end.Usage.CachedPromptTokens} cached) on {end.Silo}]"));
        }

        async Task UntilNoTurnRunsAsync()
        {
            var waited = System.Diagnostics.Stopwatch.StartNew();
            try
            {
                while ((await client.Conversation(id).GetSnapshot()).TurnInProgress is not null && waited.Elapsed < TimeSpan.FromSeconds(10))
                    await Task.Delay(25);
            }
            catch (Exception) { } // a silo gone: the next message says so
        }

        /// <summary>A conversation its storage lost (memory storage), a turn still running, one that can never run: one line.</summary>
        static async Task<T> Guard<T>(Func<Task<T>> call)
        {
            try { return await call(); }
            catch (Exception e) when (e is ConversationNotFoundException or TurnInProgressException or InvalidTurnException)
            {
                throw new ChatSessionException(e.Message, e);
            }
        }
    }
}
