using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Extensions.AI;
using MEAI = Microsoft.Extensions.AI;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Client.AI;

/// <summary>Settings of <see cref="MixtralChatClient"/>.</summary>
public sealed class MixtralChatClientOptions
{
    /// <summary>
    /// Prepended to <see cref="ChatOptions.ConversationId"/> to form the conversation grain's key, so that the
    /// conversations of different clients (tenants) sharing a cluster never meet. Null or empty: none.
    /// </summary>
    public string? ConversationPrefix { get; set; }
}

/// <summary>A reply that ended in an error (the engine or its silo failed); nothing was added to a conversation.</summary>
public sealed class MixtralGenerationException(string message) : Exception(message);

/// <summary>
/// A Microsoft.Extensions.AI <see cref="IChatClient"/> over the cluster.
/// <list type="bullet">
/// <item>Without <see cref="ChatOptions.ConversationId"/>: stateless; the messages are the whole conversation (optional
/// system message, then user and assistant alternating, ending with a user message), rendered with the model's chat
/// template and generated on the least loaded engine.</item>
/// <item>With <see cref="ChatOptions.ConversationId"/>: the turn goes through that conversation grain, which keeps the
/// history (and its KV cache on one engine). Send only the new user message (plus, before the first turn, an optional
/// system message), as Microsoft.Extensions.AI does for services that keep state; any new id starts a conversation.
/// The response's <see cref="ChatResponse.ConversationId"/> is the same id.</item>
/// </list>
/// <see cref="ChatOptions"/>: Temperature, TopP, TopK, MaxOutputTokens, StopSequences, Seed, Instructions (a system
/// message), and AdditionalProperties["ignore_eos"] (bool: generate MaxOutputTokens tokens whatever the model says); tools
/// and response formats other than text are refused with <see cref="NotSupportedException"/>.
/// Cancelling the token cancels the generation on its engine.
/// </summary>
public sealed class MixtralChatClient(MixtralChatService service, MixtralChatClientOptions? options = null) : IChatClient
{
    readonly string _prefix = options?.ConversationPrefix ?? "";
    readonly ChatClientMetadata _metadata = new("orleansmixtral", null, service.ModelId);

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<MEAI.ChatMessage> messages, ChatOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var text = new StringBuilder();
        TurnEnd? end = null;
        await foreach (var u in RunAsync(messages, options, cancellationToken))
        {
            text.Append(u.Text);
            end = u.End ?? end;
        }
        end = EnsureSucceeded(end);
        return new ChatResponse(new MEAI.ChatMessage(MEAI.ChatRole.Assistant, text.ToString()))
        {
            ModelId = service.ModelId,
            ConversationId = options?.ConversationId,
            ResponseId = NewResponseId(),
            CreatedAt = DateTimeOffset.UtcNow,
            FinishReason = Finish(end),
            Usage = Usage(end),
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<MEAI.ChatMessage> messages,
        ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var responseId = NewResponseId();
        var created = DateTimeOffset.UtcNow;
        await foreach (var u in RunAsync(messages, options, cancellationToken))
        {
            if (u.End is { } end)
            {
                EnsureSucceeded(end);
                var last = new ChatResponseUpdate(MEAI.ChatRole.Assistant, u.Text.Length > 0 ? [new TextContent(u.Text), new UsageContent(Usage(end))] : [new UsageContent(Usage(end))])
                {
                    FinishReason = Finish(end),
                };
                yield return Stamp(last, responseId, created, options);
                yield break;
            }
            if (u.Text.Length > 0) yield return Stamp(new ChatResponseUpdate(MEAI.ChatRole.Assistant, u.Text), responseId, created, options);
        }
    }

    ChatResponseUpdate Stamp(ChatResponseUpdate update, string responseId, DateTimeOffset created, ChatOptions? options)
    {
        update.ResponseId = responseId;
        update.MessageId = responseId;
        update.CreatedAt = created;
        update.ModelId = service.ModelId;
        update.ConversationId = options?.ConversationId;
        return update;
    }

    IAsyncEnumerable<GenerationUpdate> RunAsync(IEnumerable<MEAI.ChatMessage> messages, ChatOptions? options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (options?.Tools is { Count: > 0 }) throw new NotSupportedException("tools are not supported by this model server");
        if (options?.ResponseFormat is not null and not ChatResponseFormatText) throw new NotSupportedException("only text responses are supported");
        if (options?.ModelId is { } model && model != service.ModelId)
            throw new ArgumentException($"this client serves the model '{service.ModelId}', not '{model}'", nameof(options));
        var list = new List<ChatMessage>();
        if (!string.IsNullOrEmpty(options?.Instructions)) list.Add(new ChatMessage(ChatRole.System, options.Instructions));
        foreach (var m in messages)
        {
            ChatRole role;
            if (m.Role == MEAI.ChatRole.System) role = ChatRole.System;
            else if (m.Role == MEAI.ChatRole.User) role = ChatRole.User;
            else if (m.Role == MEAI.ChatRole.Assistant) role = ChatRole.Assistant;
            else throw new NotSupportedException($"messages of role '{m.Role}' are not supported");
            // Instructions and a leading system message together: one system message.
            if (role == ChatRole.System && list.Count == 1 && list[0].Role == ChatRole.System)
                list[0] = new ChatMessage(ChatRole.System, list[0].Content + "\n\n" + m.Text);
            else
                list.Add(new ChatMessage(role, m.Text));
        }
        // unset options keep SamplingOptions' defaults, as over HTTP
        var defaults = new SamplingOptions();
        var generation = defaults with
        {
            MaxTokens = options?.MaxOutputTokens,
            Temperature = options?.Temperature ?? defaults.Temperature,
            TopP = options?.TopP ?? defaults.TopP,
            TopK = options?.TopK ?? defaults.TopK,
            Seed = options?.Seed is { } seed ? unchecked((ulong)seed) : null,
            StopStrings = options?.StopSequences is { } stop ? [.. stop] : [],
            IgnoreEos = options?.AdditionalProperties?.TryGetValue("ignore_eos", out bool ignoreEos) == true && ignoreEos,
        };
        if (options?.ConversationId is { } id)
        {
            if (string.IsNullOrWhiteSpace(id)) throw new ArgumentException("ConversationId must not be empty", nameof(options));
            return ConversationAsync(_prefix + id, list, generation, cancellationToken);
        }
        return service.GenerateAsync(service.EncodeChat(list, generation.MaxTokens), generation, cancellationToken);
    }

    async IAsyncEnumerable<GenerationUpdate> ConversationAsync(string key, List<ChatMessage> messages, SamplingOptions options,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var turn = await service.PrepareTurnAsync(key, messages, create: true); // the caller names its conversations: the first turn starts one
        await foreach (var u in service.SendTurnAsync(turn, options, cancellationToken)) yield return u;
    }

    static TurnEnd EnsureSucceeded(TurnEnd? end)
    {
        if (end is null) throw new MixtralGenerationException("the reply ended without a result");
        if (end.Finish == FinishReason.Cancelled) throw new OperationCanceledException(end.Error ?? "the reply was cancelled");
        if (!end.Succeeded) throw new MixtralGenerationException(end.Error ?? "the reply failed");
        return end;
    }

    static ChatFinishReason Finish(TurnEnd end) => end.Finish == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;

    static UsageDetails Usage(TurnEnd end) => new()
    {
        InputTokenCount = end.Usage.PromptTokens,
        OutputTokenCount = end.Usage.CompletionTokens,
        TotalTokenCount = end.Usage.TotalTokens,
        CachedInputTokenCount = end.Usage.CachedPromptTokens,
        // the oldest turns of the history the prompt left out (the context policy), as the HTTP API's usage.dropped_turns
        AdditionalCounts = new() { [DroppedTurnsCount] = end.Usage.DroppedTurns },
    };

    /// <summary>The key of <see cref="UsageDetails.AdditionalCounts"/> that counts the history's oldest turns the prompt left out.</summary>
    public const string DroppedTurnsCount = "dropped_turns";

    static string NewResponseId() => "chatcmpl-" + Guid.NewGuid().ToString("N");

    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return _metadata;
        if (serviceType == typeof(MixtralChatService)) return service;
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    public void Dispose() { }
}
