using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Client.AI;

/// <summary>
/// A piece of a reply as it is generated: text and how many tokens it holds. The last update has <see cref="End"/> set
/// (finish reason, usage, the engine's silo); it may carry text too. With <see cref="SamplingOptions.Logprobs"/>,
/// <see cref="Logprobs"/> has one entry per token; with <see cref="SamplingOptions.PromptLogprobs"/> the first update
/// has <see cref="PromptLogprobs"/> ([i] scores prompt token i, [0] null).
/// </summary>
public readonly record struct GenerationUpdate(string Text, int Tokens, TurnEnd? End,
    IReadOnlyList<TokenLogprobs>? Logprobs = null, IReadOnlyList<TokenLogprobs?>? PromptLogprobs = null)
{
    public bool IsFinal => End is not null;
}

/// <summary>A request that can never be served as it is (OpenAI's 400): bad messages or parameters, too long a prompt.</summary>
public class MixtralRequestException(string message, string? param = null, string code = "invalid_request") : Exception(message)
{
    /// <summary>The request field at fault (OpenAI's "param"), if one is.</summary>
    public string? Param { get; } = param;
    /// <summary>A machine-readable code (OpenAI's "code"), e.g. context_length_exceeded.</summary>
    public string Code { get; } = code;
}

/// <summary>No engine can take the request now (every engine's queue is full): try again later (OpenAI's 429).</summary>
public sealed class MixtralOverloadedException(string message) : Exception(message);

/// <summary>No engine of the cluster answers (OpenAI's 503).</summary>
public sealed class MixtralUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// The next turn of a conversation, as worked out from a request's messages by <see cref="MixtralChatService.PrepareTurnAsync"/>;
/// <paramref name="Create"/>: the conversation does not exist yet and the turn starts it.
/// </summary>
public sealed record ConversationTurn(string ConversationKey, string UserMessage, string? NewSystemMessage, ConversationSnapshot Before, bool Create = false);
