namespace OrleansMixtral.Grains.Contracts;

/// <summary>The end of a turn, carried by its final chunk.</summary>
[GenerateSerializer, Immutable, Alias("mixtral.TurnEnd")]
public sealed record TurnEnd
{
    [Id(0)] public required FinishReason Finish { get; init; }
    [Id(1)] public TokenUsage Usage { get; init; } = TokenUsage.None;
    /// <summary>Why the turn failed or was cancelled; null otherwise.</summary>
    [Id(2)] public string? Error { get; init; }
    /// <summary>The silo whose engine generated the turn (its SiloAddress as a string), if any.</summary>
    [Id(3)] public string? Silo { get; init; }
    /// <summary>Engine-side time from submission to the first token.</summary>
    [Id(4)] public double EngineTtftMs { get; init; }
    /// <summary>Engine-side time from submission to the end.</summary>
    [Id(5)] public double EngineElapsedMs { get; init; }
    /// <summary>The whole reply text (what is appended to the history when the turn succeeded).</summary>
    [Id(6)] public string Text { get; init; } = "";
    /// <summary>
    /// The turn did not start because every engine that could take it had a full queue (an Error, before any token): the
    /// cluster is overloaded, not broken; retry later (OpenAI's 429).
    /// </summary>
    [Id(7)] public bool Overloaded { get; init; }

    public bool Succeeded => Finish is FinishReason.Stop or FinishReason.Length;
}

/// <summary>One token's log-probability and the most likely tokens at its position with theirs, best first.</summary>
[GenerateSerializer, Immutable, Alias("mixtral.TokenLogprobs")]
public sealed record TokenLogprobs(
    [property: Id(0)] int TokenId,
    [property: Id(1)] float Logprob,
    [property: Id(2)] int[] TopTokenIds,
    [property: Id(3)] float[] TopLogprobs);

/// <summary>
/// A piece of a turn's output. Chunks of a turn are numbered from 0 without gaps; the last one has
/// <see cref="End"/> set (and may carry text too). The caller of the turn and the subscribers of the conversation's
/// token stream each get the whole output in order, chunked independently: a chunk holds several tokens when the
/// engine produced them faster than they were picked up, and the stream merges what a conversation produced within
/// one publishing interval (a few milliseconds) into one event.
/// </summary>
[GenerateSerializer, Immutable, Alias("mixtral.TokenChunk")]
public sealed record TokenChunk
{
    [Id(0)] public required string ConversationId { get; init; }
    /// <summary>The turn's number in the conversation (0 for the first user message).</summary>
    [Id(1)] public required int Turn { get; init; }
    /// <summary>The chunk's number within its turn: 0, 1, 2, ...</summary>
    [Id(2)] public required int Sequence { get; init; }
    [Id(3)] public string Text { get; init; } = "";
    /// <summary>The sampled token ids in this chunk (may be empty: the final chunk, or flushed text).</summary>
    [Id(4)] public int[] TokenIds { get; init; } = [];
    [Id(5)] public TurnEnd? End { get; init; }
    /// <summary>With <see cref="SamplingOptions.Logprobs"/>: one per entry of <see cref="TokenIds"/> (the caller's chunks only).</summary>
    [Id(6)] public TokenLogprobs[] Logprobs { get; init; } = [];

    public bool IsFinal => End is not null;
}

/// <summary>A conversation as stored: its messages, and where its KV prefix lives.</summary>
[GenerateSerializer, Immutable, Alias("mixtral.ConversationSnapshot")]
public sealed record ConversationSnapshot
{
    [Id(0)] public required string ConversationId { get; init; }
    [Id(1)] public ChatMessage[] Messages { get; init; } = [];
    /// <summary>Token ids of the conversation so far (what the next turn's prompt starts with).</summary>
    [Id(2)] public int TokenCount { get; init; }
    /// <summary>Completed turns (user message + reply pairs).</summary>
    [Id(3)] public int Turns { get; init; }
    /// <summary>
    /// The oldest of those turns that the model no longer sees: the conversation outgrew the context, and its next turns'
    /// prompts start after them (with the system message). <see cref="Messages"/> still holds them.
    /// </summary>
    [Id(9)] public int DroppedTurns { get; init; }
    /// <summary>The silo whose engine holds this conversation's KV prefix, or null.</summary>
    [Id(4)] public string? KvSilo { get; init; }
    /// <summary>How many tokens of the conversation that engine has in its KV cache (after the last turn).</summary>
    [Id(5)] public int KvTokens { get; init; }
    /// <summary>The turn now generating, or null.</summary>
    [Id(6)] public int? TurnInProgress { get; init; }
    /// <summary>The silo this conversation's grain runs on.</summary>
    [Id(7)] public string? GrainSilo { get; init; }
    /// <summary>
    /// The conversation was started and its storage has it. False: it was never started (or its storage lost it); the
    /// rest of the snapshot is then empty, and its turns are refused with <see cref="ConversationNotFoundException"/>.
    /// </summary>
    [Id(8)] public bool Exists { get; init; }
}

/// <summary>Whether a silo's engine takes requests.</summary>
[GenerateSerializer, Alias("mixtral.EngineState")]
public enum EngineState
{
    /// <summary>Loaded and serving.</summary>
    Ready = 0,
    /// <summary>The model is still loading.</summary>
    Loading = 1,
    /// <summary>The silo runs no engine (<c>--Mixtral:Engine false</c>): it holds conversations; engines run elsewhere.</summary>
    None = 2,
}

/// <summary>An engine's load, for routing and dashboards.</summary>
[GenerateSerializer, Immutable, Alias("mixtral.EngineLoad")]
public sealed record EngineLoad
{
    [Id(0)] public required string Silo { get; init; }
    [Id(1)] public string Backend { get; init; } = "";
    [Id(2)] public string Model { get; init; } = "";
    /// <summary>Requests queued for admission.</summary>
    [Id(3)] public int Waiting { get; init; }
    /// <summary>Sequences in the running batch.</summary>
    [Id(4)] public int Running { get; init; }
    [Id(5)] public int KvBlocksUsed { get; init; }
    [Id(6)] public int KvBlocksTotal { get; init; }
    [Id(7)] public int KvBlocksCached { get; init; }
    [Id(8)] public double DecodeTokensPerSecond { get; init; }
    [Id(9)] public int LastBatchSize { get; init; }
    [Id(10)] public long TokensGenerated { get; init; }
    [Id(11)] public long PromptTokensComputed { get; init; }
    [Id(12)] public long PromptTokensReused { get; init; }
    /// <summary>Distinct conversations that ran a turn on this engine recently (their KV prefixes live here).</summary>
    [Id(13)] public int ResidentConversations { get; init; }
    [Id(14)] public int ContextLength { get; init; }
    [Id(15)] public int KvBlockSize { get; init; }
    /// <summary>The engine's GPU: its index among the devices its silo's process sees (<c>--Mixtral:Device</c>); null on the CPU.</summary>
    [Id(16)] public int? DeviceIndex { get; init; }
    /// <summary>The GPU's name (e.g. "NVIDIA H200"), or "cpu".</summary>
    [Id(17)] public string DeviceName { get; init; } = "";
    /// <summary>Whether the engine takes requests; only <see cref="EngineState.Ready"/> engines are routed to.</summary>
    [Id(18)] public EngineState State { get; init; }
    /// <summary>Time to first token in the engine, median and 99th percentile of its last 1,024 requests (ms); null before any.</summary>
    [Id(19)] public double? TimeToFirstTokenP50Ms { get; init; }
    [Id(20)] public double? TimeToFirstTokenP99Ms { get; init; }

    /// <summary>KV blocks neither held by running sequences nor cached (cached ones can be evicted, so they count as free).</summary>
    public int KvBlocksFree => KvBlocksTotal - KvBlocksUsed;
}

/// <summary>What a conversation grain sends to an engine grain for one turn.</summary>
[GenerateSerializer, Immutable, Alias("mixtral.EngineRequest")]
public sealed record EngineRequest
{
    [Id(0)] public required string ConversationId { get; init; }
    [Id(1)] public required int Turn { get; init; }
    [Id(2)] public required int[] PromptTokens { get; init; }
    /// <summary>How to sample, the reply's limit already fitted to the context (prompt logprobs included).</summary>
    [Id(3)] public required SamplingOptions Options { get; init; }
    /// <summary>
    /// When set, the engine grain refuses (with <see cref="EngineBusyException"/>) instead of queueing if its engine is
    /// over its redirect threshold, so that the conversation can go to a less loaded silo.
    /// </summary>
    [Id(4)] public bool RefuseIfBusy { get; init; }
    /// <summary>
    /// A request of no conversation (the gateway's stateless requests, named "stateless-…" for the engine): nothing of it
    /// outlives the request, so it never counts as a conversation resident on the engine.
    /// </summary>
    [Id(5)] public bool Stateless { get; init; }
    /// <summary>The output continues the prompt's text (a completion: its leading space kept); false: a reply of its own.</summary>
    [Id(6)] public bool ContinuesPrompt { get; init; }
}

/// <summary>One piece of an engine's output for a turn; the last has <see cref="End"/> set.</summary>
[GenerateSerializer, Immutable, Alias("mixtral.EngineChunk")]
public sealed record EngineChunk
{
    [Id(0)] public string Text { get; init; } = "";
    [Id(1)] public int[] TokenIds { get; init; } = [];
    [Id(2)] public TurnEnd? End { get; init; }
    /// <summary>On the final chunk: every generated token id (without EOS), for the conversation's exact token history.</summary>
    [Id(3)] public int[] OutputTokens { get; init; } = [];
    /// <summary>With <see cref="SamplingOptions.Logprobs"/>: one per entry of <see cref="TokenIds"/>.</summary>
    [Id(4)] public TokenLogprobs[] Logprobs { get; init; } = [];
    /// <summary>With <see cref="SamplingOptions.PromptLogprobs"/>, on the first chunk: [i] scores prompt token i ([0] is null).</summary>
    [Id(5)] public TokenLogprobs?[]? PromptLogprobs { get; init; }
}

/// <summary>The engine asked for is over its load threshold (or its queue is full); try another silo.</summary>
[GenerateSerializer, Alias("mixtral.EngineBusyException")]
public sealed class EngineBusyException : Exception
{
    public EngineBusyException(string message) : base(message) { }
}

/// <summary>A turn was asked for while another turn of the same conversation was still generating.</summary>
[GenerateSerializer, Alias("mixtral.TurnInProgressException")]
public sealed class TurnInProgressException : Exception
{
    public TurnInProgressException(string message) : base(message) { }
}

/// <summary>A request that can never be served (empty message, bad sampling parameters, longer than the context).</summary>
[GenerateSerializer, Alias("mixtral.InvalidTurnException")]
public sealed class InvalidTurnException : Exception
{
    public InvalidTurnException(string message, ErrorKind kind = ErrorKind.InvalidRequest) : base(message) => Kind = kind;

    /// <summary>What kind of refusal this is (<see cref="ErrorKind.ContextLengthExceeded"/>: the prompt leaves no room).</summary>
    [Id(0)] public ErrorKind Kind { get; init; }
}

/// <summary>The conversation does not exist: it was never started (<c>Start</c>), or its storage lost it.</summary>
[GenerateSerializer, Alias("mixtral.ConversationNotFoundException")]
public sealed class ConversationNotFoundException : Exception
{
    public ConversationNotFoundException(string conversationId)
        : base($"conversation {conversationId} does not exist (it was never started, or its storage lost it)") =>
        ConversationId = conversationId;

    [Id(0)] public string ConversationId { get; init; }
}
