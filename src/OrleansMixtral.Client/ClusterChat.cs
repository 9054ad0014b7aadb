using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OrleansMixtral.Grains;

namespace OrleansMixtral.Client;

/// <summary>
/// The console chat against a running cluster (<c>mixtral chat --cluster HOST:PORT</c>): one line in, the reply streamed
/// out, turn after turn, in a conversation that lives in the cluster and can be resumed by its id from anywhere.
/// Replies go to <c>output</c> (one line each); the conversation id, figures, errors and prompts go to <c>error</c>.
/// Commands: /exit (or end of input), /reset, /history, /id.
/// </summary>
public sealed class ClusterChat(MixtralClient client, TextReader input, TextWriter output, TextWriter error)
{
    public const int ExitOk = 0;
    public const int ExitError = 1;

    public TurnOptions Options { get; init; } = new() { MaxTokens = 512, Temperature = 0.7f };
    /// <summary>System message of a new conversation (ignored when resuming one that has turns).</summary>
    public string? SystemPrompt { get; init; }
    /// <summary>Print "> " before each line (when the input is a terminal).</summary>
    public bool Prompt { get; init; }

    /// <summary>
    /// Connects to <paramref name="cluster"/> (see <see cref="ClusterConnection"/>; <paramref name="clusterId"/> null: the
    /// local silo's registered id, else the default) and runs the chat.
    /// </summary>
    public static async Task<int> RunAsync(string cluster, string? conversationId, string? systemPrompt, TurnOptions? options,
        TextReader input, TextWriter output, TextWriter error, bool prompt = false, CancellationToken cancellationToken = default,
        string? clusterId = null)
    {
        Microsoft.Extensions.Hosting.IHost host;
        try
        {
            host = await ClusterConnection.ConnectAsync(cluster, TimeSpan.FromSeconds(15), clusterId, logLevel: LogLevel.Error, cancellationToken: cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            string ids;
            try { ids = ClusterConnection.ResolveIds(cluster, clusterId).ClusterId; }
            catch (Exception) { ids = "?"; }
            error.WriteLine($"error: cannot connect to the cluster at {cluster} (cluster id {ids}; a silo prints its own when ready): {e.Message}");
            return ExitError;
        }
        using (host)
        {
            var chat = new ClusterChat(host.Services.GetRequiredService<MixtralClient>(), input, output, error)
            {
                Options = options ?? new TurnOptions { MaxTokens = 512, Temperature = 0.7f },
                SystemPrompt = systemPrompt,
                Prompt = prompt,
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
            ? $"conversation {id} (resume it with --conversation {id}); /exit quits, /reset clears, /history shows it"
            : $"resuming conversation {id}: {snapshot.Turns} turn(s) so far; /history shows them");

        while (!cancellationToken.IsCancellationRequested)
        {
            if (Prompt) error.Write("> ");
            string? line;
            try { line = await input.ReadLineAsync(cancellationToken); }
            catch (OperationCanceledException) { break; }
            if (line is null) break;
            var trimmed = line.Trim();
            if (trimmed.Length == 0) continue;
            try
            {
                switch (trimmed)
                {
                    case "/exit" or "/quit":
                        return ExitOk;
                    case "/id":
                        error.WriteLine(id);
                        continue;
                    case "/reset":
                        await client.Conversation(id).Reset();
                        error.WriteLine("(conversation cleared)");
                        continue;
                    case "/history":
                        foreach (var m in (await client.GetHistoryAsync(id)).Messages)
                            error.WriteLine($"[{m.Role.ToString().ToLowerInvariant()}] {m.Content}");
                        continue;
                }
            }
            catch (Exception e) when (e is ConversationNotFoundException or TurnInProgressException)
            {
                error.WriteLine("error: " + e.Message); // a conversation its storage lost (memory storage), a turn still running
                continue;
            }
            if (trimmed.StartsWith('/') && !trimmed.Contains(' '))
            {
                error.WriteLine($"unknown command {trimmed} (commands: /exit, /reset, /history, /id)");
                continue;
            }
            await TurnAsync(id, line, cancellationToken);
        }
        return ExitOk;
    }

    async Task TurnAsync(string id, string line, CancellationToken cancellationToken)
    {
        try
        {
            var result = await client.SendAndCollectAsync(id, line, Options, chunk =>
            {
                output.Write(chunk.Text);
                output.Flush();
            }, cancellationToken);
            output.WriteLine();
            output.Flush();
            var end = result.End;
            if (end.Succeeded)
            {
                var decode = result.Elapsed - result.TimeToFirstChunk;
                var rate = end.Usage.CompletionTokens > 1 && decode > TimeSpan.Zero ? (end.Usage.CompletionTokens - 1) / decode.TotalSeconds : 0;
                error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"[{end.Usage.CompletionTokens} tokens, first after {result.TimeToFirstChunk.TotalMilliseconds:F0} ms, {rate:F1} tok/s; prompt {end.Usage.PromptTokens} ({end.Usage.CachedPromptTokens} cached) on {end.Silo}]"));
            }
            else
            {
                error.WriteLine($"({end.Finish.ToString().ToLowerInvariant()}: {end.Error}; the conversation is as it was before this message)");
            }
        }
        catch (Exception e) when (e is TurnInProgressException or InvalidTurnException or ConversationNotFoundException)
        {
            error.WriteLine("error: " + e.Message);
        }
    }
}
