using Orleans.Runtime;
using Orleans.Concurrency;

namespace OrleansMixtral.Grains.Contracts;

/// <summary>
/// One conversation (key: the conversation id). Keeps the chat history and the exact token ids of the conversation
/// (persisted in grain storage), and the KV handle: which silo's engine holds the conversation's prefix. Runs one turn
/// at a time; the reply joins the history only when the turn completes.
/// </summary>
[Alias("mixtral.IConversationGrain")]
public interface IConversationGrain : IGrainWithStringKey
{
    /// <summary>
    /// Starts the conversation (stores it: until then it does not exist), or sets the system message of one that has no
    /// turns yet (null or empty: none). Starting one that exists with the same system message changes nothing.
    /// </summary>
    [Alias("Start")]
    Task<ConversationSnapshot> Start(string? systemPrompt);

    /// <summary>
    /// Runs a turn and streams its chunks back to the caller (the direct path; the same chunks go to the conversation's
    /// token stream). The last chunk has <see cref="TokenChunk.End"/> set: a failure of the engine or its silo ends the
    /// turn with <see cref="FinishReason.Error"/> there. Throws <see cref="TurnInProgressException"/> when a turn is already
    /// running, <see cref="InvalidTurnException"/> for a request that can never run and <see cref="ConversationNotFoundException"/>
    /// when the conversation was never started (or its storage lost it). Disposing the enumeration early cancels the turn.
    /// </summary>
    [Alias("SendTurn")]
    IAsyncEnumerable<TokenChunk> SendTurn(string userMessage, SamplingOptions? options, CancellationToken cancellationToken = default);

    /// <summary>Cancels the running turn, if any; returns whether there was one. Its final chunk says Cancelled.</summary>
    [AlwaysInterleave, Alias("CancelTurn")]
    Task<bool> CancelTurn();

    /// <summary>
    /// The history and where its KV lives. Answers during a turn too (the running turn is not in it), and for a
    /// conversation that does not exist (<see cref="ConversationSnapshot.Exists"/> false).
    /// </summary>
    [AlwaysInterleave, Alias("GetSnapshot")]
    Task<ConversationSnapshot> GetSnapshot();

    /// <summary>The exact token ids of the conversation so far (the next turn's prompt starts with them).</summary>
    [AlwaysInterleave, Alias("GetTokens")]
    Task<int[]> GetTokens();

    /// <summary>
    /// The events of the latest turn this activation published on the conversation's token stream, in order (empty: none
    /// yet). A running turn's replay for a watcher who subscribes mid-turn; the turn has ended when the last one is final.
    /// </summary>
    [AlwaysInterleave, Alias("GetPublishedTurn")]
    Task<TokenChunk[]> GetPublishedTurn();

    /// <summary>Forgets the history (keeps the system message) and clears the stored state.</summary>
    [Alias("Reset")]
    Task Reset();
}

/// <summary>
/// The engine of one silo (key: that silo's address, <c>SiloAddress.ToParsableString()</c>): exactly one activation per
/// silo, placed on that silo by <c>SiloEnginePlacement</c>. Its methods interleave: every turn of every conversation on
/// the silo runs at the same time, and the engine micro-batches them.
/// </summary>
[Alias("mixtral.IEngineGrain")]
public interface IEngineGrain : IGrainWithStringKey
{
    /// <summary>Generates one turn. The last chunk carries the end (finish reason, usage, the output ids).</summary>
    [Alias("Generate")]
    IAsyncEnumerable<EngineChunk> Generate(EngineRequest request, CancellationToken cancellationToken = default);

    /// <summary>Stops a running turn at the engine's next step; its final chunk then says Cancelled.</summary>
    [AlwaysInterleave, Alias("Cancel")]
    Task<bool> Cancel(string conversationId, int turn);

    [AlwaysInterleave, Alias("GetLoad")]
    Task<EngineLoad> GetLoad();
}

/// <summary>Stream names of the token streams: namespace <see cref="Namespace"/>, key = the conversation id.</summary>
public static class TokenStreams
{
    /// <summary>The stream provider's name (a memory stream provider on silos and clients).</summary>
    public const string Provider = "MixtralTokens";
    public const string Namespace = "conversation-tokens";

    public static StreamId For(string conversationId) => StreamId.Create(Namespace, conversationId);
}
