namespace OrleansMixtral;

/// <summary>How a generation ended: the engine's, a turn's and a reply's one finish-reason type.</summary>
public enum FinishReason
{
    /// <summary>The model ended its reply (EOS or a stop string).</summary>
    Stop = 0,
    /// <summary>The reply reached its max tokens or the context length.</summary>
    Length = 1,
    /// <summary>Cancelled; a conversation's history does not contain it.</summary>
    Cancelled = 2,
    /// <summary>Failed (a silo went away, the engine failed); a conversation's history does not contain it.</summary>
    Error = 3,
}

/// <summary>
/// What kind of failure a refusal is, carried as data from the layer that found it to the one that answers the client
/// (never worked out from an error message's text).
/// </summary>
public enum ErrorKind
{
    /// <summary>A request that can never be served as it is (bad parameters, an empty message).</summary>
    InvalidRequest = 0,
    /// <summary>The prompt leaves the model's context no room for a reply (OpenAI's context_length_exceeded).</summary>
    ContextLengthExceeded = 1,
}

/// <summary>
/// The token counts of one generation: the engine's, a turn's and a reply's one usage type (the gateway writes it as
/// OpenAI's <c>usage</c>, the chat client as <c>UsageDetails</c>).
/// </summary>
public sealed record TokenUsage(
    int PromptTokens,        // the whole prompt: for a conversation's turn, the conversation so far plus the new user turn
    int CachedPromptTokens,  // prompt tokens whose KV came from the engine's prefix cache
    int CompletionTokens)
{
    public static readonly TokenUsage None = new(0, 0, 0);

    /// <summary>
    /// A chat reply (a conversation's turn, or a whole history sent in one request): the oldest turns its prompt left out,
    /// because the chat outgrew the model's context (the system message always stays). 0 for plain completions.
    /// </summary>
    public int DroppedTurns { get; init; }

    public int TotalTokens => PromptTokens + CompletionTokens;
}
