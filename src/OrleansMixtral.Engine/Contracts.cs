namespace OrleansMixtral.Engine;

/// <summary>
/// One generation: the whole token history of a conversation (the engine reuses the longest prefix it still
/// holds in its KV cache, so a follow-up turn computes only the new tokens) and how to sample.
/// </summary>
public sealed record GenerationRequest(IReadOnlyList<int> PromptTokens, SamplingOptions Sampling)
{
    /// <summary>
    /// The output continues the prompt's text (a completion): its text is what it adds to the prompt's, a leading space
    /// kept ("The history of the city" → " is the most…"). False: a reply that starts a text of its own (chat), whose
    /// first space, like the dummy prefix's, is not written.
    /// </summary>
    public bool ContinuesPrompt { get; init; }
}


/// <summary>
/// A piece of the output stream: one sampled token and the text it completes (may be empty), with its logprobs when
/// asked for (<see cref="SamplingOptions.Logprobs"/>).
/// </summary>
public readonly record struct GeneratedToken(int Index, int TokenId, string Text, TokenLogprobs? Logprobs = null);

/// <summary>
/// What the model gave one token at one position: its log-probability (log-softmax of the logits there) and the most
/// likely tokens at that position with theirs, best first.
/// </summary>
public sealed record TokenLogprobs(int TokenId, float Logprob, int[] TopTokenIds, float[] TopLogprobs);

public sealed record GenerationResult(
    FinishReason FinishReason,
    TokenUsage Usage,
    IReadOnlyList<int> OutputTokens,
    string Text,
    TimeSpan TimeToFirstToken,
    TimeSpan Elapsed,
    string? Error = null);

/// <summary>Live figures for routing and dashboards.</summary>
public sealed record EngineStats(
    string Backend,
    int Waiting,
    int Running,
    int KvBlocksUsed,
    int KvBlocksTotal,
    int KvBlocksCached,
    long TokensGenerated,
    long PromptTokensComputed,
    long PromptTokensReused,
    double DecodeTokensPerSecond, // tokens generated per second over the last EngineOptions.ThroughputWindow (0 when idle), to 0.1
    int LastBatchSize,
    long Preemptions = 0,
    double? TimeToFirstTokenP50Ms = null, // over the last 1,024 requests' first tokens; null before the first
    double? TimeToFirstTokenP99Ms = null);

public sealed record EngineInfo(string Backend, string ModelName, int ContextLength, int VocabSize, int KvBlockSize, int KvBlocks);

/// <summary>Thrown for requests that can never be served (bad parameters, too long for the context or the KV cache).</summary>
public class InvalidRequestException(string message, ErrorKind kind = ErrorKind.InvalidRequest) : Exception(message)
{
    /// <summary>What kind of refusal this is (the layers above map it, never the message).</summary>
    public ErrorKind Kind { get; } = kind;
}

/// <summary>A request that needs more KV cache than the engine has, even when empty.</summary>
public sealed class KvCapacityException(string message) : InvalidRequestException(message);

/// <summary>The engine's queue is full; try again later.</summary>
public sealed class EngineOverloadedException(string message) : Exception(message);
