using System.Runtime.CompilerServices;
using System.Text;
using Orleans;
using Orleans.Runtime;
using Orleans.Streams;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Client;

/// <summary>A finished turn as the client saw it.</summary>
public sealed record TurnResult(string ConversationId, int Turn, string Text, TurnEnd End, int Chunks, TimeSpan TimeToFirstChunk, TimeSpan Elapsed)
{
    public bool Succeeded => End.Succeeded;
}

/// <summary>
/// Chat with a running cluster over an <see cref="IClusterClient"/>: start conversations, send turns (tokens come back
/// on the direct path, a streaming grain call), watch a conversation's token stream, cancel, read the history.
/// </summary>
public sealed class MixtralClient(IClusterClient client)
{
    /// <summary>
    /// While a turn streams, a silence of <see cref="WatchdogTimes.StallCheck"/> makes the client ask the conversation
    /// whether it still works on the turn, and a question unanswered within <see cref="WatchdogTimes.ProbeTimeout"/>
    /// loses the turn (a silo that dies without goodbye leaves a grain call waiting until the cluster declares it dead).
    /// </summary>
    public WatchdogTimes Watchdog { get; init; } = WatchdogTimes.Default;

    public IClusterClient Cluster => client;

    public IConversationGrain Conversation(string conversationId) => client.GetGrain<IConversationGrain>(conversationId);

    /// <summary>
    /// Starts a conversation (a new id when <paramref name="conversationId"/> is null), or returns the one that has that
    /// id. A conversation exists once started: turns, history, reset and cancel of an id never started throw
    /// <see cref="ConversationNotFoundException"/>.
    /// </summary>
    public Task<ConversationSnapshot> StartConversationAsync(string? conversationId = null, string? systemPrompt = null) =>
        Conversation(conversationId ?? Guid.NewGuid().ToString("N")).Start(systemPrompt);

    /// <summary>The conversation's history and KV handle; <see cref="ConversationNotFoundException"/> when it does not exist.</summary>
    public async Task<ConversationSnapshot> GetHistoryAsync(string conversationId) =>
        await FindConversationAsync(conversationId) ?? throw new ConversationNotFoundException(conversationId);

    /// <summary>The conversation's history and KV handle, or null when it does not exist (never started, or lost).</summary>
    public async Task<ConversationSnapshot?> FindConversationAsync(string conversationId)
    {
        var snapshot = await Conversation(conversationId).GetSnapshot();
        return snapshot.Exists ? snapshot : null;
    }

    /// <summary>Cancels the conversation's running turn; false when none was running, <see cref="ConversationNotFoundException"/> when it does not exist.</summary>
    public Task<bool> CancelAsync(string conversationId) => Conversation(conversationId).CancelTurn();

    /// <summary>
    /// Sends a user message and streams the reply's chunks as they are generated. The last chunk has
    /// <see cref="TokenChunk.End"/> set; when the cluster fails under the turn (its silo dies), the enumeration still
    /// ends with such a chunk, with <see cref="FinishReason.Error"/>. Cancelling <paramref name="cancellationToken"/>
    /// cancels the turn. Throws <see cref="TurnInProgressException"/>, <see cref="InvalidTurnException"/> and
    /// <see cref="ConversationNotFoundException"/> as the grain does.
    /// </summary>
    public async IAsyncEnumerable<TokenChunk> SendAsync(string conversationId, string message, SamplingOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var grain = Conversation(conversationId);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var turn = -1;
        var next = 0;
        var watchdog = TurnWatchdog(grain, () => turn);
        var chunks = grain.SendTurn(message, options, CancellationToken.None).GetAsyncEnumerator(stop.Token);
        var ended = false;
        try
        {
            while (!ended)
            {
                TokenChunk chunk;
                string? failure = null;
                try
                {
                    if (!await watchdog.MoveNextAsync(chunks, cancellationToken)) failure = "the turn's stream ended without a final chunk";
                }
                catch (Exception e) when (e is TurnInProgressException or InvalidTurnException or ConversationNotFoundException) { throw; }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    _ = CancelQuietlyAsync(grain);
                    failure = "cancelled";
                }
                catch (Exception e) { failure = e.Message; }

                if (failure is not null)
                {
                    ended = true;
                    chunk = new TokenChunk
                    {
                        ConversationId = conversationId,
                        Turn = turn,
                        Sequence = next,
                        End = new TurnEnd
                        {
                            Finish = failure == "cancelled" ? FinishReason.Cancelled : FinishReason.Error,
                            Error = failure == "cancelled" ? "cancelled by the client" : "the turn was lost: " + failure,
                        },
                    };
                }
                else
                {
                    chunk = chunks.Current;
                    turn = chunk.Turn;
                    next = chunk.Sequence + 1;
                    ended = chunk.IsFinal;
                }
                yield return chunk;
            }
        }
        finally
        {
            stop.Cancel();
            // Never wait long on a silo that may be gone (disposing sends a call to the grain's silo).
            try { await chunks.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(2)); }
            catch (Exception) { }
        }
    }

    /// <summary>Sends a message and collects the whole reply (optionally calling <paramref name="onChunk"/> for each chunk).</summary>
    public async Task<TurnResult> SendAndCollectAsync(string conversationId, string message, SamplingOptions? options = null,
        Action<TokenChunk>? onChunk = null, CancellationToken cancellationToken = default)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        TimeSpan first = TimeSpan.Zero;
        var text = new StringBuilder();
        var count = 0;
        await foreach (var chunk in SendAsync(conversationId, message, options, cancellationToken))
        {
            if (count++ == 0) first = System.Diagnostics.Stopwatch.GetElapsedTime(started);
            onChunk?.Invoke(chunk);
            text.Append(chunk.Text);
            if (chunk.End is { } end)
                return new TurnResult(conversationId, chunk.Turn, text.ToString(), end, count, first, System.Diagnostics.Stopwatch.GetElapsedTime(started));
        }
        throw new InvalidOperationException("the turn ended without a final chunk");
    }

    /// <summary>
    /// Subscribes to the conversation's token stream: every chunk of every turn from now on, in order, for any number of
    /// subscribers; a turn running when the subscription starts comes whole, from its first chunk (the conversation
    /// replays what it already published). A watcher gets whole turns only, each numbered 0, 1, 2, ... without gaps.
    /// Dispose the result to unsubscribe.
    /// </summary>
    public async Task<IAsyncDisposable> SubscribeAsync(string conversationId, Func<TokenChunk, Task> onChunk)
    {
        var stream = client.GetStreamProvider(TokenStreams.Provider).GetStream<TokenChunk>(TokenStreams.For(conversationId));
        var cursor = new WatchCursor(onChunk);
        var handle = await stream.SubscribeAsync((chunk, _) => cursor.OnLiveAsync(chunk));
        try
        {
            // Asked after subscribing: what the conversation published before this line is in the replay, the rest comes live.
            await cursor.StartAsync(await Conversation(conversationId).GetPublishedTurn());
        }
        catch
        {
            await handle.UnsubscribeAsync();
            throw;
        }
        return new Subscription(handle);
    }

    /// <summary>
    /// Joins a conversation's replay (the events of its latest turn, published before the subscription was asked about)
    /// with its live stream: live events that come before the replay is delivered are held, those of the replayed turn it
    /// already holds are skipped, and a turn whose first event the watcher did not see is left out whole.
    /// </summary>
    sealed class WatchCursor(Func<TokenChunk, Task> deliver)
    {
        readonly SemaphoreSlim _gate = new(1, 1);
        List<TokenChunk>? _held = [];
        int _turn = -1;
        int _next;
        bool _closed = true; // no turn open yet: a live event must be a turn's first to open one

        public async Task OnLiveAsync(TokenChunk chunk)
        {
            await _gate.WaitAsync();
            try
            {
                if (_held is not null) _held.Add(chunk);
                else await OfferAsync(chunk);
            }
            finally { _gate.Release(); }
        }

        public async Task StartAsync(TokenChunk[] replay)
        {
            await _gate.WaitAsync();
            try
            {
                var held = _held!;
                _held = null;
                if (replay.Length == 0)
                {
                    foreach (var c in held) await OfferAsync(c);
                    return;
                }
                // The replay is the latest turn published: held events of other turns are older, and an ended turn is
                // not this watcher's (it would get its tail only).
                var turn = replay[0].Turn;
                if (replay[^1].IsFinal)
                {
                    (_turn, _closed) = (turn, true);
                    return;
                }
                foreach (var c in replay) await OfferAsync(c);
                foreach (var c in held.Where(c => c.Turn == turn)) await OfferAsync(c);
            }
            finally { _gate.Release(); }
        }

        async Task OfferAsync(TokenChunk chunk)
        {
            if (chunk.Turn == _turn && !_closed)
            {
                if (chunk.Sequence < _next) return; // replayed already
            }
            else if (chunk.Sequence != 0) return; // a turn that began before this watcher (or one it has whole already)
            (_turn, _next, _closed) = (chunk.Turn, chunk.Sequence + 1, chunk.IsFinal);
            await deliver(chunk);
        }
    }

    /// <summary>The loads of the engines of all active silos.</summary>
    public async Task<IReadOnlyList<EngineLoad>> GetEngineLoadsAsync()
    {
        var hosts = await client.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true);
        var loads = await Task.WhenAll(hosts.Keys.Select(async silo =>
        {
            try { return await client.GetGrain<IEngineGrain>(silo.ToParsableString()).GetLoad().WaitAsync(TimeSpan.FromSeconds(5)); }
            catch (Exception) { return null; }
        }));
        return [.. loads.Where(l => l is not null).Select(l => l!)];
    }

    sealed class Subscription(StreamSubscriptionHandle<TokenChunk> handle) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync() => await handle.UnsubscribeAsync();
    }

    /// <summary>
    /// The turn's watchdog (<see cref="CallWatchdog"/>): after a silence, asks the conversation (an interleaving call)
    /// whether it still runs the turn; a turn it no longer runs is lost only when a second look says so too (the final
    /// chunk may be on its way).
    /// </summary>
    CallWatchdog TurnWatchdog(IConversationGrain grain, Func<int> turn)
    {
        var suspect = false;
        return new CallWatchdog(Watchdog, async _ =>
        {
            var snapshot = await grain.GetSnapshot();
            var gone = turn() >= 0 && snapshot.TurnInProgress != turn();
            if (!gone)
            {
                suspect = false;
                return Liveness.Alive;
            }
            if (!suspect)
            {
                suspect = true;
                return Liveness.Unsure;
            }
            return Liveness.Lost("the conversation is no longer running this turn (its silo went away)");
        }, "the conversation does not answer");
    }

    static async Task CancelQuietlyAsync(IConversationGrain grain)
    {
        try { await grain.CancelTurn().WaitAsync(TimeSpan.FromSeconds(5)); }
        catch (Exception) { }
    }
}
