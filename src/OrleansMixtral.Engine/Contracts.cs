namespace OrleansMixtral.Engine;

/// <summary>How the next token is chosen. Temperature 0 means greedy (argmax).</summary>
public sealed record SamplingParams
{
    public float Temperature { get; init; }
    /// <summary>Nucleus sampling: keep the smallest set of tokens whose probability reaches TopP (1 = off).</summary>
    public float TopP { get; init; } = 1f;
    /// <summary>Keep only the K most likely tokens (0 = off).</summary>
    public int TopK { get; init; }
    /// <summary>Seed for reproducible sampling; null draws one.</summary>
    public ulong? Seed { get; init; }
    public int MaxTokens { get; init; } = 256;
    /// <summary>Token ids that end generation (in addition to the model's EOS unless IgnoreEos).</summary>
    public IReadOnlyList<int> StopTokens { get; init; } = [];
    /// <summary>Strings that end generation; the output is cut before the stop string.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    public bool IgnoreEos { get; init; }
    /// <summary>
    /// Log-probabilities of each generated token and of this many most likely alternatives at its position (0-20, as
    /// OpenAI's top_logprobs); null: none. They are the log-softmax of the logits the token was sampled from (before
    /// temperature), so asking for them keeps sampling off the device (<see cref="IDeviceSampling"/>).
    /// </summary>
    public int? Logprobs { get; init; }
    /// <summary>
    /// The same for every prompt token after the first (scored by the logits before it; the prompt is then computed
    /// whole, without the prefix cache, and at most a step's logit rows at a time); null: none. OpenAI's echo + logprobs.
    /// </summary>
    public int? PromptLogprobs { get; init; }

    /// <summary>The most alternatives <see cref="Logprobs"/> and <see cref="PromptLogprobs"/> may ask for.</summary>
    public const int MaxLogprobs = 20;

    /// <summary>Whether the engine must see this request's logits (logprobs): then no device sampling for its steps.</summary>
    public bool NeedsLogits => Logprobs is not null || PromptLogprobs is not null;

    public static SamplingParams Greedy(int maxTokens) => new() { MaxTokens = maxTokens };

    public void Validate()
    {
        if (!(Temperature >= 0) || float.IsInfinity(Temperature) || Temperature > 100)
            throw new InvalidRequestException($"temperature must be in [0, 100], got {Temperature}");
        if (!(TopP > 0 && TopP <= 1)) throw new InvalidRequestException($"top_p must be in (0, 1], got {TopP}");
        if (TopK < 0) throw new InvalidRequestException($"top_k must be >= 0, got {TopK}");
        if (MaxTokens < 1) throw new InvalidRequestException($"max_tokens must be >= 1, got {MaxTokens}");
        if (StopStrings.Any(string.IsNullOrEmpty)) throw new InvalidRequestException("stop strings must not be empty");
        if (Logprobs is < 0 or > MaxLogprobs) throw new InvalidRequestException($"logprobs must be in [0, {MaxLogprobs}], got {Logprobs}");
        if (PromptLogprobs is < 0 or > MaxLogprobs) throw new InvalidRequestException($"prompt logprobs must be in [0, {MaxLogprobs}], got {PromptLogprobs}");
    }
}

/// <summary>
/// One generation: the whole token history of a conversation (the engine reuses the longest prefix it still
/// holds in its KV cache, so a follow-up turn computes only the new tokens) and how to sample.
/// </summary>
public sealed record GenerationRequest(IReadOnlyList<int> PromptTokens, SamplingParams Sampling)
{
    /// <summary>
    /// The output continues the prompt's text (a completion): its text is what it adds to the prompt's, a leading space
    /// kept ("The history of the city" → " is the most…"). False: a reply that starts a text of its own (chat), whose
    /// first space, like the dummy prefix's, is not written.
    /// </summary>
    public bool ContinuesPrompt { get; init; }
}

public enum FinishReason { Stop, Length, Cancelled, Error }

/// <summary>
/// A piece of the output stream: one sampled token and the text it completes (may be empty), with its logprobs when
/// asked for (<see cref="SamplingParams.Logprobs"/>).
/// </summary>
public readonly record struct GeneratedToken(int Index, int TokenId, string Text, TokenLogprobs? Logprobs = null);

/// <summary>
/// What the model gave one token at one position: its log-probability (log-softmax of the logits there) and the most
/// likely tokens at that position with theirs, best first.
/// </summary>
public sealed record TokenLogprobs(int TokenId, float Logprob, int[] TopTokenIds, float[] TopLogprobs);

public sealed record GenerationUsage(int PromptTokens, int CachedPromptTokens, int CompletionTokens);

public sealed record GenerationResult(
    FinishReason FinishReason,
    GenerationUsage Usage,
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
public class InvalidRequestException(string message) : Exception(message);

/// <summary>A request that needs more KV cache than the engine has, even when empty.</summary>
public sealed class KvCapacityException(string message) : InvalidRequestException(message);

/// <summary>The engine's queue is full; try again later.</summary>
public sealed class EngineOverloadedException(string message) : Exception(message);
