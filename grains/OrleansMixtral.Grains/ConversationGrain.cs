using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Streams;
using Newtonsoft.Json;
using OrleansMixtral.Engine;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Grains;

/// <summary>A conversation as persisted in grain storage.</summary>
[GenerateSerializer, Alias("mixtral.ConversationState")]
public sealed class ConversationState
{
    /// <summary>
    /// The messages: an optional system message, then user/assistant pairs of every completed turn (those dropped from
    /// the model's context too: this is the conversation's transcript).
    /// </summary>
    /// <remarks>
    /// Stored without .NET type names (Orleans' JSON storage serializer names every object's type otherwise): the
    /// message type moved (it was OrleansMixtral.Grains.ChatMessage), and a name in the record would tie stored
    /// conversations to where the type lives. Records written with the old names still load: their names are skipped
    /// here, and older silos read these records by the property's declared type.
    /// </remarks>
    [Id(0), JsonProperty(TypeNameHandling = TypeNameHandling.None, ItemTypeNameHandling = TypeNameHandling.None)]
    public List<ChatMessage> Messages { get; set; } = [];
    /// <summary>
    /// The exact token ids of the conversation as the model sees it (<see cref="ConversationWindow"/>): each kept
    /// turn's prompt, the ids the model generated, and EOS. The next turn's prompt is these ids plus the new user turn's
    /// template ids, so the engine that generated the last turn finds all of it in its KV prefix cache.
    /// </summary>
    [Id(1)] public int[] Tokens { get; set; } = [];
    /// <summary>The silo (engine grain key) whose engine generated the last turn and so holds the KV prefix.</summary>
    [Id(2)] public string? KvSilo { get; set; }
    /// <summary>Tokens of the conversation that engine has processed.</summary>
    [Id(3)] public int KvTokens { get; set; }
    /// <summary>Completed turns.</summary>
    [Id(4)] public int Turns { get; set; }
    /// <summary>
    /// The conversation was started (<see cref="IConversationGrain.Start"/>). A grain whose storage has no record of it
    /// does not exist: its turns, history, reset and cancel are refused with <see cref="ConversationNotFoundException"/>.
    /// </summary>
    [Id(5)] public bool Created { get; set; }
    /// <summary>The oldest completed turns that are no longer in <see cref="Tokens"/>: the conversation outgrew the context.</summary>
    [Id(6)] public int DroppedTurns { get; set; }
    /// <summary>Where each turn of <see cref="Tokens"/> begins, and where its reply begins (empty in states stored before they were kept).</summary>
    [Id(7)] public int[] TurnStarts { get; set; } = [];
    [Id(8)] public int[] ReplyStarts { get; set; } = [];
}

/// <summary>
/// A conversation. Turns run one at a time as a task of this activation: the grain picks an engine (the one holding
/// the conversation's KV prefix, else the least loaded), streams the engine grain's chunks to the caller of the turn
/// and to the conversation's Orleans stream, and commits the reply to the history only when the turn completes. A turn
/// that fails or is cancelled leaves the stored history as it was.
/// </summary>
/// <remarks>
/// Placed on the silo that first receives a call for it (the gateway the client talks to): the caller's tokens then
/// cross one silo-to-silo hop at most (engine silo → this silo → client).
/// </remarks>
[PreferLocalPlacement]
public sealed partial class ConversationGrain(
    [PersistentState("conversation", ConversationGrain.StorageName)] IPersistentState<ConversationState> state,
    ITokenizerService model,
    ILocalSiloDetails silo,
    EngineRouter engines,
    IOptions<MixtralSiloOptions> options,
    ILogger<ConversationGrain> log) : Grain, IConversationGrain
{
    /// <summary>The grain storage provider conversations are stored in.</summary>
    public const string StorageName = "conversations";

    readonly MixtralSiloOptions _options = options.Value;
    TurnRun? _run;
    Channel<TokenChunk>? _publish;
    Task? _publisher;
    /// <summary>
    /// The token stream's events of the latest turn published by this activation, as published: a watcher who subscribes
    /// mid-turn gets them first (<see cref="GetPublishedTurn"/>), so it sees the turn from its first chunk.
    /// </summary>
    List<TokenChunk> _published = [];

    string Id => this.GetPrimaryKeyString();

    sealed class TurnRun(int turn, string userMessage, TurnPrompt prompt, SamplingOptions options)
    {
        public int Turn { get; } = turn;
        public string UserMessage { get; } = userMessage;
        /// <summary>The prompt and the kept turns it starts with (the context policy's).</summary>
        public TurnPrompt Prompt { get; } = prompt;
        /// <summary>The caller's options, with the reply's limit set to the context's room (when none was given, or less is left).</summary>
        public SamplingOptions Options { get; } = options with { MaxTokens = prompt.MaxTokens };
        public Channel<TokenChunk> Direct { get; } = Channel.CreateUnbounded<TokenChunk>(new() { SingleReader = true, SingleWriter = true });
        public int NextSequence;
        public string? EngineSilo;
        /// <summary>Cancelled when the engine call must be abandoned (a cancel found no answer, or its grace ran out).</summary>
        public CancellationTokenSource? EngineCall;
        public string? CancelReason;
        public bool CancelDelivered;
        /// <summary>The turn's span (<see cref="GrainTracing.TurnSpan"/>), null when nobody listens.</summary>
        public Activity? Trace;
        public bool IsCancelRequested => CancelReason is not null;
    }

    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        if (_run is { } run)
        {
            // The silo is going away under a running turn: end it for the caller and the watchers now (the history
            // does not change), and stop the engine's sequence.
            _run = null;
            run.CancelReason ??= "the conversation's silo is shutting down";
            if (run.EngineSilo is not null) _ = DeliverCancelAsync(run);
            run.EngineCall?.Cancel();
            Emit(run, new TokenChunk
            {
                ConversationId = Id, Turn = run.Turn, Sequence = run.NextSequence++,
                End = new TurnEnd { Finish = FinishReason.Error, Error = $"the conversation's silo is shutting down ({reason.Description})", Silo = run.EngineSilo },
            });
        }
        _publish?.Writer.TryComplete();
        return _publisher?.WaitAsync(cancellationToken).ContinueWith(_ => { }, TaskScheduler.Current) ?? Task.CompletedTask;
    }

    /// <summary>Started and in storage. A record stored before <see cref="ConversationState.Created"/> existed counts too.</summary>
    bool Exists => state.State.Created || state.RecordExists;

    ConversationNotFoundException NotFound() => new(Id);

    public async Task<ConversationSnapshot> Start(string? systemPrompt)
    {
        var messages = state.State.Messages;
        var hasSystem = messages.Count > 0 && messages[0].Role == ChatRole.System;
        var current = hasSystem ? messages[0].Content : null;
        var wanted = string.IsNullOrEmpty(systemPrompt) ? null : systemPrompt;
        var create = !Exists;
        if (current != wanted || create)
        {
            if (current != wanted && (state.State.Turns > 0 || _run is not null))
                throw new InvalidTurnException("the conversation already has turns; its system message cannot change");
            var before = (Messages: messages.ToList(), state.State.Created);
            if (hasSystem && current != wanted) messages.RemoveAt(0);
            if (wanted is not null && current != wanted) messages.Insert(0, new ChatMessage(ChatRole.System, wanted));
            state.State.Created = true;
            try { await state.WriteStateAsync(); }
            catch
            {
                (state.State.Messages, state.State.Created) = before;
                throw;
            }
        }
        return Snapshot();
    }

    public Task<ConversationSnapshot> GetSnapshot() => Task.FromResult(Snapshot());

    public Task<int[]> GetTokens() => Task.FromResult(state.State.Tokens);

    public Task<TokenChunk[]> GetPublishedTurn() => Task.FromResult(_published.ToArray());

    public async Task Reset()
    {
        if (!Exists) throw NotFound();
        if (_run is not null) throw new TurnInProgressException($"conversation {Id}: a turn is running; cancel it first");
        var system = state.State.Messages.FirstOrDefault(m => m.Role == ChatRole.System);
        state.State = new ConversationState { Messages = system is null ? [] : [system], Created = true };
        await state.WriteStateAsync();
    }

    ConversationSnapshot Snapshot() => new()
    {
        ConversationId = Id,
        Messages = [.. state.State.Messages],
        TokenCount = state.State.Tokens.Length,
        Turns = state.State.Turns,
        DroppedTurns = state.State.DroppedTurns,
        KvSilo = state.State.KvSilo,
        KvTokens = state.State.KvTokens,
        TurnInProgress = _run?.Turn,
        GrainSilo = silo.SiloAddress.ToParsableString(),
        Exists = Exists,
    };

    public async IAsyncEnumerable<TokenChunk> SendTurn(string userMessage, SamplingOptions? options, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var run = StartTurn(userMessage, options ?? new SamplingOptions());
        var ended = false;
        try
        {
            await foreach (var chunk in run.Direct.Reader.ReadAllAsync(cancellationToken))
            {
                ended = chunk.IsFinal;
                yield return chunk;
            }
        }
        finally
        {
            // The caller disposed the enumeration (or its call was cancelled) before the end: nobody reads the turn.
            if (!ended) RequestCancel(run, "the caller stopped reading the turn");
        }
    }

    public Task<bool> CancelTurn()
    {
        if (_run is not { } run) return Exists ? Task.FromResult(false) : throw NotFound();
        RequestCancel(run, "cancelled by the client");
        return Task.FromResult(true);
    }

    TurnRun StartTurn(string userMessage, SamplingOptions options)
    {
        if (!Exists) throw NotFound();
        if (_run is not null) throw new TurnInProgressException($"conversation {Id}: turn {_run.Turn} is still running");
        if (string.IsNullOrWhiteSpace(userMessage)) throw new InvalidTurnException("the message is empty");
        if (options.Check() is { } bad) throw new InvalidTurnException(bad.Message);
        var prompt = BuildPrompt(userMessage, options.MaxTokens);
        var run = new TurnRun(state.State.Turns, userMessage, prompt, options);
        _run = run;
        // The turn outlives this call: its span is current in the turn's own task, and the caller's stays current here.
        var caller = Activity.Current;
        run.Trace = GrainTracing.Source.StartActivity(GrainTracing.TurnSpan);
        run.Trace?.SetTag("mixtral.conversation_id", Id);
        run.Trace?.SetTag("mixtral.turn", run.Turn);
        _ = RunTurnAsync(run);
        Activity.Current = caller;
        return run;
    }

    /// <summary>
    /// The prompt of the next turn, by the one prompt builder (<see cref="ChatPromptBuilder"/>): the kept turns' ids
    /// plus the new user turn, the oldest turns dropped when the reply would have too little room.
    /// </summary>
    TurnPrompt BuildPrompt(string userMessage, int? maxTokens)
    {
        var s = state.State;
        var first = s.Messages.Count > 0 && s.Messages[0].Role == ChatRole.System ? 1 : 0;
        var system = first == 1 ? s.Messages[0].Content : null;
        var kept = Enumerable.Range(s.DroppedTurns, s.Turns - s.DroppedTurns)
            .Select(t => (User: s.Messages[first + 2 * t].Content, Assistant: s.Messages[first + 2 * t + 1].Content)).ToList();
        var window = s.TurnStarts.Length == kept.Count && s.ReplyStarts.Length == kept.Count && (kept.Count > 0 || s.Tokens.Length == 0)
            ? new ConversationWindow(s.Tokens, s.TurnStarts, s.ReplyStarts, s.DroppedTurns)
            : ConversationWindow.FromMessages(model.Tokenizer, system, kept, s.DroppedTurns); // stored without turn boundaries
        try
        {
            return new ChatPromptBuilder(model.Tokenizer, model.ContextLength, _options.ReplyReserveTokens)
                .NextTurn(window, system, [.. kept.Select(k => k.User)], userMessage, maxTokens);
        }
        catch (ContextLengthExceededException e) { throw new InvalidTurnException(e.Message, ErrorKind.ContextLengthExceeded); }
    }

    async Task RunTurnAsync(TurnRun run)
    {
        TurnEnd end;
        int[] output = [];
        try
        {
            (end, output) = await GenerateAsync(run);
        }
        catch (Exception e)
        {
            end = new TurnEnd { Finish = FinishReason.Error, Error = e.Message, Silo = run.EngineSilo };
        }
        // Say what the prompt left out: the caller learns that the model no longer sees the oldest turns.
        end = end with { Usage = end.Usage with { DroppedTurns = run.Prompt.Window.DroppedTurns } };
        if (end.Succeeded && _run == run)
        {
            try { await CommitAsync(run, end, output); }
            catch (Exception e)
            {
                LogCommitFailed(log, Id, run.Turn, e);
                end = end with { Finish = FinishReason.Error, Error = "the reply could not be stored: " + e.Message };
            }
        }
        LogTurnEnded(log, Id, run.Turn, end.Finish, end.Silo, end.Usage.PromptTokens, end.Usage.CachedPromptTokens, end.Usage.CompletionTokens, end.Error);
        if (run.Trace is { } trace)
        {
            GrainTracing.Ended(trace, end);
            trace.Stop();
        }
        if (_run != run) return; // already ended (the activation is deactivating)
        _run = null;
        Emit(run, new TokenChunk { ConversationId = Id, Turn = run.Turn, Sequence = run.NextSequence++, End = end });
    }

    async Task CommitAsync(TurnRun run, TurnEnd end, int[] output)
    {
        var before = state.State;
        var window = run.Prompt.Commit(output, model.Tokenizer.EosId);
        var messages = new List<ChatMessage>(before.Messages)
        {
            new(ChatRole.User, run.UserMessage),
            new(ChatRole.Assistant, end.Text),
        };
        state.State = new ConversationState
        {
            Messages = messages,
            Tokens = window.Tokens,
            TurnStarts = window.TurnStarts,
            ReplyStarts = window.ReplyStarts,
            DroppedTurns = window.DroppedTurns,
            KvSilo = end.Silo,
            KvTokens = run.Prompt.Ids.Length + output.Length,
            Turns = before.Turns + 1,
            Created = true,
        };
        try { await state.WriteStateAsync(); }
        catch
        {
            state.State = before;
            throw;
        }
    }

    /// <summary>Runs the turn on an engine: the KV holder first, else (or when it is busy or unreachable before any token) the least loaded.</summary>
    async Task<(TurnEnd End, int[] Output)> GenerateAsync(TurnRun run)
    {
        var tried = new List<string>();
        string? lastError = null;
        var busy = false; // the last engine tried refused because its queue was full: the turn ends Overloaded (429), not failed
        string? refusedKv = null; // the KV engine refused only because it was asked to when busy: it may still queue the turn
        var target = state.State.KvSilo is { } kv && engines.IsActive(kv) ? kv : null;
        var affinity = target is not null;
        while (true)
        {
            if (run.IsCancelRequested) return (new TurnEnd { Finish = FinishReason.Cancelled, Error = run.CancelReason }, []);
            if (target is null)
            {
                target = await engines.PickAsync(Id, tried);
                affinity = false;
                if (target is null && refusedKv is not null) (target, refusedKv) = (refusedKv, null); // no other engine: queue there
                if (target is null)
                    return (new TurnEnd { Finish = FinishReason.Error, Error = lastError ?? "no engine is available in the cluster", Overloaded = busy }, []);
            }
            var attempt = await StreamFromEngineAsync(run, target, refuseIfBusy: affinity);
            if (attempt.End is { } end) return (end, attempt.Output);
            LogRerouted(log, Id, run.Turn, target, attempt.RetryReason);
            lastError = attempt.RetryReason;
            busy = attempt.Busy;
            if (attempt.Busy && affinity) refusedKv = target;
            tried.Add(target);
            target = null;
            if (tried.Count > 3) return (new TurnEnd { Finish = FinishReason.Error, Error = lastError, Overloaded = busy }, []);
        }
    }

    readonly record struct Attempt(TurnEnd? End, int[] Output, string? RetryReason, bool Busy = false);

    async Task<Attempt> StreamFromEngineAsync(TurnRun run, string silo, bool refuseIfBusy)
    {
        var engine = engines.Engine(silo);
        using var call = new CancellationTokenSource();
        run.EngineSilo = silo;
        run.EngineCall = call;
        run.CancelDelivered = false;
        var watchdog = EngineWatchdog(silo);
        var request = new EngineRequest
        {
            ConversationId = Id,
            Turn = run.Turn,
            PromptTokens = run.Prompt.Ids,
            Options = run.Options,
            RefuseIfBusy = refuseIfBusy,
        };
        var enumerator = engine.Generate(request, call.Token).GetAsyncEnumerator(call.Token);
        var anyToken = false;
        try
        {
            while (true)
            {
                bool more;
                try { more = await watchdog.MoveNextAsync(enumerator, call.Token); }
                catch (EngineBusyException e) when (!anyToken) { return new Attempt(null, [], e.Message, Busy: true); }
                catch (InvalidTurnException e) { return new Attempt(new TurnEnd { Finish = FinishReason.Error, Error = e.Message, Silo = silo }, [], null); }
                catch (Exception e) when (!anyToken && !run.IsCancelRequested)
                {
                    return new Attempt(null, [], $"the engine on silo {silo} could not be reached: {e.Message}");
                }
                catch (Exception e)
                {
                    var end = run.IsCancelRequested
                        ? new TurnEnd { Finish = FinishReason.Cancelled, Error = run.CancelReason, Silo = silo }
                        : new TurnEnd { Finish = FinishReason.Error, Error = $"the engine on silo {silo} was lost mid-turn: {e.Message}", Silo = silo };
                    return new Attempt(end, [], null);
                }
                if (!more)
                    return new Attempt(new TurnEnd { Finish = FinishReason.Error, Error = "the engine's stream ended without a result", Silo = silo }, [], null);
                var chunk = enumerator.Current;
                if (chunk.End is { } engineEnd)
                {
                    if (engineEnd.Finish == FinishReason.Cancelled && !run.IsCancelRequested)
                        engineEnd = engineEnd with { Finish = FinishReason.Error, Error = $"the engine on silo {silo} stopped: {engineEnd.Error}" };
                    else if (engineEnd.Finish == FinishReason.Cancelled)
                        engineEnd = engineEnd with { Error = run.CancelReason };
                    return new Attempt(engineEnd, chunk.OutputTokens, null);
                }
                anyToken = true;
                Emit(run, new TokenChunk
                {
                    ConversationId = Id,
                    Turn = run.Turn,
                    Sequence = run.NextSequence++,
                    Text = chunk.Text,
                    TokenIds = chunk.TokenIds,
                    Logprobs = chunk.Logprobs,
                });
                if (run.IsCancelRequested && !run.CancelDelivered) _ = DeliverCancelAsync(run);
            }
        }
        finally
        {
            run.EngineCall = null;
            call.Cancel();
            // Disposing tells the engine grain to drop the enumeration; never wait on a silo that may be gone.
            _ = DisposeQuietlyAsync(enumerator);
        }
    }

    /// <summary>
    /// Bounds the wait on an engine (<see cref="CallWatchdog"/>): the call ends when the engine's silo leaves the
    /// membership, or when no chunk came for StallProbeMilliseconds and the engine grain does not answer a load query
    /// either (a silo that died without goodbye is only declared dead by the membership protocol some seconds later).
    /// </summary>
    CallWatchdog EngineWatchdog(string silo) => new(
        WatchdogTimes.FromMilliseconds(_options.StallProbeMilliseconds, _options.ProbeTimeoutMilliseconds),
        async _ =>
        {
            await engines.Engine(silo).GetLoad();
            return Liveness.Alive; // a long prefill or a queue, not a failure
        },
        $"the engine on silo {silo} does not answer",
        departed: () => engines.IsTerminating(silo) ? $"silo {silo} left the cluster" : null);

    void RequestCancel(TurnRun run, string reason)
    {
        if (run.IsCancelRequested) return;
        run.CancelReason = reason;
        if (run.EngineSilo is not null) _ = DeliverCancelAsync(run);
        // Whatever the engine does, the turn ends soon: after a grace period the engine call itself is cancelled.
        _ = CancelAfterGraceAsync(run);
    }

    async Task DeliverCancelAsync(TurnRun run)
    {
        if (run.EngineSilo is not { } silo) return;
        try
        {
            run.CancelDelivered = await engines.Engine(silo).Cancel(Id, run.Turn)
                .WaitAsync(TimeSpan.FromMilliseconds(_options.ProbeTimeoutMilliseconds));
        }
        catch (Exception) { run.EngineCall?.Cancel(); }
    }

    async Task CancelAfterGraceAsync(TurnRun run)
    {
        await Task.Delay(TimeSpan.FromMilliseconds(_options.ProbeTimeoutMilliseconds));
        if (_run == run) run.EngineCall?.Cancel();
    }

    static async Task DisposeQuietlyAsync(IAsyncEnumerator<EngineChunk> enumerator)
    {
        try { await enumerator.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10)); }
        catch (Exception) { }
    }

    void Emit(TurnRun run, TokenChunk chunk)
    {
        run.Direct.Writer.TryWrite(chunk);
        if (chunk.IsFinal) run.Direct.Writer.TryComplete();
        if (!_options.PublishTokenStream) return;
        if (_publish is null)
        {
            _publish = Channel.CreateUnbounded<TokenChunk>(new() { SingleReader = true, SingleWriter = true });
            _publisher = PublishAsync(_publish.Reader);
        }
        _publish.Writer.TryWrite(chunk);
    }

    /// <summary>
    /// Publishes the turn's chunks on the conversation's stream, off the caller's path (a slow stream never delays the
    /// caller): at most one event per StreamPublishIntervalMilliseconds, merging what came meanwhile. Every stream event
    /// costs a call to the stream's queue and a delivery to each subscriber; merging keeps that cost per interval instead
    /// of per token, and subscribers lose nothing (the pulling agents deliver at their polling period anyway).
    /// </summary>
    async Task PublishAsync(ChannelReader<TokenChunk> reader)
    {
        var stream = this.GetStreamProvider(TokenStreams.Provider).GetStream<TokenChunk>(TokenStreams.For(Id));
        var interval = TimeSpan.FromMilliseconds(Math.Max(0, _options.StreamPublishIntervalMilliseconds));
        var turn = -1;
        var sequence = 0;
        var text = new System.Text.StringBuilder();
        var ids = new List<int>();
        while (await reader.WaitToReadAsync())
        {
            while (reader.TryPeek(out var next))
            {
                // One event holds the chunks of one turn, up to and including its final chunk. A turn's first event starts
                // the replay list afresh (turn numbers start again at 0 after a reset: a final event ends its turn).
                if (next.Turn != turn)
                {
                    turn = next.Turn;
                    sequence = 0;
                    _published = [];
                }
                text.Clear();
                ids.Clear();
                TurnEnd? end = null;
                while (end is null && reader.TryPeek(out var c) && c.Turn == turn)
                {
                    reader.TryRead(out _);
                    text.Append(c.Text);
                    ids.AddRange(c.TokenIds);
                    end = c.End;
                }
                var merged = new TokenChunk { ConversationId = Id, Turn = turn, Sequence = sequence++, Text = text.ToString(), TokenIds = [.. ids], End = end };
                // Kept before it is sent: whoever subscribes after this line gets it from the replay, before it the stream.
                _published.Add(merged);
                if (end is not null) turn = -1;
                try { await stream.OnNextAsync(merged); }
                catch (Exception e) { LogPublishFailed(log, Id, merged.Turn, merged.Sequence, e.Message); }
                if (interval > TimeSpan.Zero && end is null) await Task.Delay(interval);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Conversation {Conversation} turn {Turn}: {Finish} on {Silo}, prompt {Prompt} ({Cached} cached), {Completion} generated {Error}")]
    static partial void LogTurnEnded(ILogger log, string conversation, int turn, FinishReason finish, string? silo, int prompt, int cached, int completion, string? error);

    [LoggerMessage(Level = LogLevel.Information, Message = "Conversation {Conversation} turn {Turn}: leaving engine {Silo}: {Reason}")]
    static partial void LogRerouted(ILogger log, string conversation, int turn, string silo, string? reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Conversation {Conversation} turn {Turn}: storing the reply failed")]
    static partial void LogCommitFailed(ILogger log, string conversation, int turn, Exception error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Conversation {Conversation} turn {Turn} chunk {Sequence}: publishing on the token stream failed: {Error}")]
    static partial void LogPublishFailed(ILogger log, string conversation, int turn, int sequence, string error);
}
