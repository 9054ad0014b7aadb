using OrleansMixtral.Grains;

namespace OrleansMixtral.Client.AI;

/// <summary>How a reply is sampled (OpenAI's defaults: temperature 1, top_p 1). Temperature 0 is greedy.</summary>
public sealed record GenerationOptions
{
    /// <summary>Most tokens to generate; null: as many as the context leaves.</summary>
    public int? MaxTokens { get; init; }
    public float Temperature { get; init; } = 1f;
    public float TopP { get; init; } = 1f;
    /// <summary>Keep only the K most likely tokens (0 = off).</summary>
    public int TopK { get; init; }
    public ulong? Seed { get; init; }
    /// <summary>Strings that end the reply (not included in it).</summary>
    public IReadOnlyList<string> Stop { get; init; } = [];
    /// <summary>Generate exactly <see cref="MaxTokens"/> tokens, ignoring the end-of-sequence token (benchmarks, tests).</summary>
    public bool IgnoreEos { get; init; }
    /// <summary>Logprobs of each generated token and of this many most likely alternatives (0-20); null: none.</summary>
    public int? Logprobs { get; init; }
    /// <summary>Stateless requests: logprobs of every prompt token after the first, with this many alternatives; null: none.</summary>
    public int? PromptLogprobs { get; init; }
    /// <summary>
    /// Stateless requests: the reply continues the prompt's text (a completion: "The history of the city" → " is the
    /// most…", its leading space kept); false: a chat reply, which starts a text of its own.
    /// </summary>
    public bool ContinuesPrompt { get; init; }
}

/// <summary>
/// A piece of a reply as it is generated: text and how many tokens it holds. The last update has <see cref="End"/> set
/// (finish reason, usage, the engine's silo); it may carry text too. With <see cref="GenerationOptions.Logprobs"/>,
/// <see cref="Logprobs"/> has one entry per token; with <see cref="GenerationOptions.PromptLogprobs"/> the first update
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
