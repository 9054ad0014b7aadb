using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Orleans;
using Orleans.Runtime;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Client.AI;

/// <summary>Settings of <see cref="MixtralChatService"/>.</summary>
public sealed class MixtralChatServiceOptions
{
    /// <summary>
    /// The model directory the cluster serves; only its tokenizer.json and config.json are read (to render prompts and
    /// know the context length), so a gateway machine needs those two files, not the weights.
    /// </summary>
    public string Model { get; set; } = "models/tiny-mixtral";
    /// <summary>The model's name in requests and responses; null: the directory's name.</summary>
    public string? ModelId { get; set; }
    /// <summary>How long the engines' loads are reused when picking an engine for a stateless request.</summary>
    public int LoadCacheMilliseconds { get; set; } = 250;
    /// <summary>A load query or a cancel that takes longer than this counts as failed.</summary>
    public int EngineTimeoutMilliseconds { get; set; } = 3000;
    /// <summary>
    /// A generation that has sent nothing for this long has its engine's silo (stateless requests) or its conversation's
    /// grain (turns) asked whether it still works on it (<see cref="CallWatchdog"/>): a silo killed without goodbye would
    /// otherwise leave the call waiting until the cluster declares the silo dead or Orleans' response timeout (30 s) passes.
    /// </summary>
    public int StallCheckMilliseconds { get; set; } = (int)WatchdogTimes.Default.StallCheck.TotalMilliseconds;
    /// <summary>How long that question may take before the generation counts as lost; 0: <see cref="StallCheckMilliseconds"/>.</summary>
    public int ProbeTimeoutMilliseconds { get; set; } = (int)WatchdogTimes.Default.ProbeTimeout.TotalMilliseconds;
}

/// <summary>
/// Chat and completions over the cluster, shared by the HTTP gateway and <see cref="MixtralChatClient"/>:
/// <list type="bullet">
/// <item>stateless requests (a whole conversation in each request, as OpenAI's API has it): the prompt is rendered here
/// with the model's chat template and sent straight to the least loaded silo's engine grain
/// (<see cref="IEngineGrain.Generate"/>) — no conversation grain, nothing stored;</item>
/// <item>conversation turns: through the conversation grain (<see cref="IConversationGrain.SendTurn"/>), which keeps the
/// history and sends the turn to the engine that holds the conversation's KV prefix.</item>
/// </list>
/// Both stream <see cref="GenerationUpdate"/>s; cancelling the enumeration's token (or disposing it early) cancels the
/// generation on its engine, which frees the sequence's KV blocks.
/// </summary>
public sealed class MixtralChatService
{
    readonly IClusterClient _cluster;
    readonly MixtralChatServiceOptions _options;
    readonly ConcurrentDictionary<string, int> _inFlight = new(); // silo → stateless generations this process runs there
    readonly Lock _lock = new();
    IReadOnlyList<EngineLoad> _loads = [];
    long _loadsAt = long.MinValue / 2;
    Task<IReadOnlyList<EngineLoad>>? _refreshing;
    int _roundRobin;

    public MixtralChatService(IClusterClient cluster, MixtralChatServiceOptions options)
    {
        _cluster = cluster;
        _options = options;
        var directory = Path.GetFullPath(options.Model);
        var tokenizerFile = Path.Combine(directory, "tokenizer.json");
        if (!File.Exists(tokenizerFile)) throw new FileNotFoundException($"the model directory {directory} has no tokenizer.json", tokenizerFile);
        Tokenizer = MistralTokenizer.Load(tokenizerFile);
        ContextLength = ReadContextLength(Path.Combine(directory, "config.json"));
        Prompts = new ChatPromptBuilder(Tokenizer, ContextLength);
        ModelId = string.IsNullOrWhiteSpace(options.ModelId) ? Path.GetFileName(directory.TrimEnd(Path.DirectorySeparatorChar)) : options.ModelId;
        Watchdog = WatchdogTimes.FromMilliseconds(options.StallCheckMilliseconds, options.ProbeTimeoutMilliseconds);
        Client = new MixtralClient(cluster) { Watchdog = Watchdog };
    }

    WatchdogTimes Watchdog { get; }
    TimeSpan StallCheck => Watchdog.StallCheck;
    TimeSpan ProbeTimeout => Watchdog.ProbeTimeout;

    public string ModelId { get; }
    /// <summary>Prompt plus reply tokens the model takes (config.json's max_position_embeddings).</summary>
    public int ContextLength { get; }
    public MistralTokenizer Tokenizer { get; }
    /// <summary>The one prompt builder (the conversations' context policy), for stateless chat requests.</summary>
    public ChatPromptBuilder Prompts { get; }
    public MixtralClient Client { get; }

    static int ReadContextLength(string configFile)
    {
        if (!File.Exists(configFile)) throw new FileNotFoundException($"{configFile} not found", configFile);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(configFile));
        if (doc.RootElement.TryGetProperty("max_position_embeddings", out var n) && n.TryGetInt32(out var length) && length > 1)
            return length;
        throw new InvalidDataException($"{configFile} has no usable max_position_embeddings");
    }

    // ---- prompts ----

    /// <summary>
    /// Checks the roles: an optional system message first, then user and assistant alternating, ending with a user
    /// message (the reply is generated for it). Throws <see cref="MixtralRequestException"/>.
    /// </summary>
    public static void ValidateMessages(IReadOnlyList<ChatMessage> messages)
    {
        if (messages.Count == 0) throw new MixtralRequestException("messages must hold at least one user message", "messages", "invalid_messages");
        var first = messages[0].Role == ChatRole.System ? 1 : 0;
        if (first == messages.Count) throw new MixtralRequestException("a system message must be followed by a user message", "messages", "invalid_messages");
        for (var i = first; i < messages.Count; i++)
        {
            var expected = (i - first) % 2 == 0 ? ChatRole.User : ChatRole.Assistant;
            var role = messages[i].Role;
            if (role == ChatRole.System)
                throw new MixtralRequestException($"messages[{i}] is a system message; only the first message may be one", $"messages[{i}].role", "invalid_messages");
            if (role != expected)
                throw new MixtralRequestException(
                    $"roles out of order: after an optional system message, user and assistant messages must alternate starting with user; messages[{i}] is {Name(role)}, expected {Name(expected)}",
                    $"messages[{i}].role", "invalid_messages");
        }
        if (messages[^1].Role != ChatRole.User)
            throw new MixtralRequestException("the last message must be a user message", $"messages[{messages.Count - 1}].role", "invalid_messages");
    }

    static string Name(ChatRole role) => role.ToString().ToLowerInvariant();

    /// <summary>
    /// The prompt of a whole conversation sent in one request (Mixtral-Instruct template), fitted to the context by the one
    /// prompt builder (<see cref="ChatPromptBuilder"/>): the oldest turns go when the reply would lack room, as in a
    /// conversation the cluster keeps; <see cref="TurnPrompt.MaxTokens"/> is the reply's limit.
    /// <paramref name="maxTokens"/>: the request's (null: what the context leaves).
    /// </summary>
    public TurnPrompt EncodeChat(IReadOnlyList<ChatMessage> messages, int? maxTokens)
    {
        ValidateMessages(messages);
        try { return Prompts.ForMessages(messages, maxTokens); }
        catch (ChatTemplateException e) { throw new MixtralRequestException(e.Message, "messages", "invalid_messages"); }
        catch (ContextLengthExceededException e) { throw ContextLengthExceeded(e, "messages"); }
    }

    /// <summary>The prompt ids of a plain completion (BOS + the text), checked against the context.</summary>
    public int[] EncodeCompletion(string prompt)
    {
        var ids = Tokenizer.Encode(prompt, addBos: true);
        CheckPromptLength(ids.Length);
        return ids;
    }

    /// <summary>Throws <see cref="MixtralRequestException"/> (context_length_exceeded) when a prompt leaves no room for a reply.</summary>
    public void CheckPromptLength(int promptTokens)
    {
        try { Prompts.CheckPrompt(promptTokens); }
        catch (ContextLengthExceededException e) { throw ContextLengthExceeded(e, "messages"); }
    }

    static MixtralRequestException ContextLengthExceeded(ContextLengthExceededException e, string param) =>
        new(e.Message, param, CodeOf(ErrorKind.ContextLengthExceeded));

    /// <summary>
    /// The options as sent to the cluster, checked (<see cref="SamplingOptions.Check"/>, the one validation); for a
    /// stateless prompt, the reply's limit fitted to the context (a conversation's grain fits its own).
    /// </summary>
    SamplingOptions Checked(SamplingOptions o, int? promptTokens)
    {
        if (o.Check() is { } bad) throw new MixtralRequestException(bad.Message, bad.Param, "invalid_value");
        return promptTokens is { } n ? o with { MaxTokens = o.MaxTokensFor(n, ContextLength) } : o;
    }

    /// <summary>OpenAI's error code of a refusal, by its kind.</summary>
    static string CodeOf(ErrorKind kind) => kind == ErrorKind.ContextLengthExceeded ? "context_length_exceeded" : "invalid_request";

    // ---- stateless generation on an engine grain ----

    /// <summary>
    /// Generates a reply to <paramref name="prompt"/> (token ids from <see cref="EncodeChat"/> or <see cref="EncodeCompletion"/>)
    /// on the least loaded engine. Errors that come before any text are thrown from the first MoveNextAsync:
    /// <see cref="MixtralRequestException"/>, <see cref="MixtralOverloadedException"/>, <see cref="MixtralUnavailableException"/>;
    /// a failure after that ends the enumeration with <see cref="FinishReason.Error"/>.
    /// </summary>
    /// <param name="continuesPrompt">The reply continues the prompt's text (a completion: "The history of the city" → " is
    /// the most…", its leading space kept); false: a chat reply, which starts a text of its own.</param>
    public IAsyncEnumerable<GenerationUpdate> GenerateAsync(int[] prompt, SamplingOptions options, bool continuesPrompt = false,
        CancellationToken cancellationToken = default)
    {
        CheckPromptLength(prompt.Length);
        return GenerateAsync(prompt, options, continuesPrompt, droppedTurns: 0, cancellationToken);
    }

    /// <summary>
    /// Generates the reply to a chat prompt from <see cref="EncodeChat"/>, as <see cref="GenerateAsync(int[], SamplingOptions, bool, CancellationToken)"/>;
    /// the usage says how many of the history's oldest turns the prompt left out.
    /// </summary>
    public IAsyncEnumerable<GenerationUpdate> GenerateAsync(TurnPrompt prompt, SamplingOptions options, CancellationToken cancellationToken = default) =>
        GenerateAsync(prompt.Ids, options with { MaxTokens = prompt.MaxTokens }, continuesPrompt: false, prompt.Window.DroppedTurns, cancellationToken);

    async IAsyncEnumerable<GenerationUpdate> GenerateAsync(int[] prompt, SamplingOptions options, bool continuesPrompt, int droppedTurns,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var request = new EngineRequest
        {
            // Engine sequences are named (conversation, turn); a stateless request is a conversation of one turn.
            ConversationId = "stateless-" + Guid.NewGuid().ToString("N"),
            Turn = 0,
            PromptTokens = prompt,
            Options = Checked(options, prompt.Length),
            ContinuesPrompt = continuesPrompt,
            Stateless = true,
        };
        var (silo, chunks, first) = await OpenAsync(request, cancellationToken);
        var ended = false;
        try
        {
            var chunk = first;
            while (true)
            {
                if (chunk.End is { } end)
                {
                    ended = true;
                    if (droppedTurns > 0) end = end with { Usage = end.Usage with { DroppedTurns = droppedTurns } };
                    yield return new GenerationUpdate(chunk.Text, chunk.TokenIds.Length, end, chunk.Logprobs, chunk.PromptLogprobs);
                    yield break;
                }
                yield return new GenerationUpdate(chunk.Text, chunk.TokenIds.Length, null, chunk.Logprobs, chunk.PromptLogprobs);
                var (next, error) = await NextAsync(chunks, silo, cancellationToken);
                if (next is null)
                {
                    ended = true;
                    var cancelled = cancellationToken.IsCancellationRequested;
                    yield return new GenerationUpdate("", 0, new TurnEnd
                    {
                        Finish = cancelled ? FinishReason.Cancelled : FinishReason.Error,
                        Error = cancelled ? "cancelled by the caller" : $"the engine on {silo} was lost mid-reply: {error ?? "its stream ended without a result"}",
                        Silo = silo,
                    });
                    yield break;
                }
                chunk = next;
            }
        }
        finally
        {
            Release(silo);
            if (!ended) _ = CancelQuietlyAsync(silo, request.ConversationId);
            // Disposing tells the engine grain to drop the enumeration (it cancels the sequence); never wait long.
            _ = DisposeQuietlyAsync(chunks);
        }
    }

    async Task<(EngineChunk? Chunk, string? Error)> NextAsync(IAsyncEnumerator<EngineChunk> chunks, string silo, CancellationToken cancellationToken)
    {
        try { return await EngineWatchdog(silo).MoveNextAsync(chunks, cancellationToken) ? (chunks.Current, null) : (null, null); }
        catch (Exception e) { return (null, e.Message); }
    }

    /// <summary>
    /// The watchdog of a call to an engine (<see cref="CallWatchdog"/>): after each StallCheck of silence the engine's
    /// silo is asked for its load (one question per silo at a time, shared by its calls), and a silo that does not answer
    /// within ProbeTimeout fails the wait with <see cref="CallLostException"/> (a call in flight to a silo killed without
    /// goodbye would wait for Orleans' 30 s).
    /// </summary>
    CallWatchdog EngineWatchdog(string silo) => new(Watchdog,
        async _ => await EngineAnswersAsync(silo) ? Liveness.Alive : Liveness.Lost($"the engine on {silo} does not answer"),
        $"the engine on {silo} does not answer");

    readonly ConcurrentDictionary<string, (long Started, Task<bool> Answered)> _probes = new();

    /// <summary>Whether the engine of <paramref name="silo"/> answers a load query in time (one query per silo at a time, shared).</summary>
    Task<bool> EngineAnswersAsync(string silo)
    {
        var now = Environment.TickCount64;
        var fresh = StallCheck.TotalMilliseconds / 2;
        return _probes.AddOrUpdate(silo,
            _ => (now, ProbeAsync(silo, ProbeTimeout)),
            (_, old) => now - old.Started < fresh ? old : (now, ProbeAsync(silo, ProbeTimeout))).Answered;
    }

    async Task<bool> ProbeAsync(string silo, TimeSpan timeout)
    {
        try
        {
            await _cluster.GetGrain<IEngineGrain>(silo).GetLoad().WaitAsync(timeout);
            return true;
        }
        catch (Exception) { return false; }
    }

    /// <summary>
    /// Starts the request on the best engine and waits for its first chunk. Engines are tried least loaded first; all
    /// but the last are asked to refuse when busy, so that a request goes where it need not queue.
    /// </summary>
    async Task<(string Silo, IAsyncEnumerator<EngineChunk> Chunks, EngineChunk First)> OpenAsync(EngineRequest request, CancellationToken cancellationToken)
    {
        // Waiting on a cluster that does not answer (the engines' loads, engines whose silo is gone) costs a request at most
        // one stall check and probe in all: one that cannot start is refused in about that time, not in a multiple of it.
        var lostBudget = StallCheck + ProbeTimeout;
        var opened = System.Diagnostics.Stopwatch.GetTimestamp();
        List<string> candidates = [];
        try
        {
            // Cached loads answer at once; with none cached (the last refresh reached no engine) this waits on a refresh.
            candidates = await RankEnginesAsync().WaitAsync(lostBudget, cancellationToken);
            if (candidates.Count == 0)
                candidates = await RankEnginesAsync(fresh: true).WaitAsync(lostBudget - System.Diagnostics.Stopwatch.GetElapsedTime(opened), cancellationToken);
        }
        catch (TimeoutException) { }
        catch (ArgumentOutOfRangeException) { } // no time left
        if (candidates.Count == 0) throw new MixtralUnavailableException("no engine of the cluster answers");
        Exception? last = null;
        var busy = 0;
        var lost = System.Diagnostics.Stopwatch.GetElapsedTime(opened);
        for (var i = 0; i < candidates.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var window = lostBudget - lost;
            if (window < TimeSpan.FromMilliseconds(100)) break;
            var silo = candidates[i];
            var refuse = i < candidates.Count - 1;
            _inFlight.AddOrUpdate(silo, 1, (_, n) => n + 1);
            var chunks = _cluster.GetGrain<IEngineGrain>(silo)
                .Generate(request with { RefuseIfBusy = refuse }, cancellationToken).GetAsyncEnumerator(cancellationToken);
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            try
            {
                // After a silo that did not answer, the first stall check and probe together take at most what is left
                // of the budget (half each); once a probe is answered, the usual periods.
                if (await EngineWatchdog(silo).MoveNextAsync(chunks, cancellationToken, window < lostBudget ? new WatchdogTimes(window / 2, window / 2) : null))
                    return (silo, chunks, chunks.Current);
                last = new InvalidOperationException($"the engine on {silo} ended the stream without a result");
            }
            catch (InvalidTurnException e)
            {
                Release(silo);
                await DisposeQuietlyAsync(chunks);
                throw new MixtralRequestException(e.Message, null, CodeOf(e.Kind));
            }
            catch (EngineBusyException e) { last = e; busy++; }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                Release(silo);
                _ = CancelQuietlyAsync(silo, request.ConversationId);
                _ = DisposeQuietlyAsync(chunks);
                throw;
            }
            catch (TimeoutException e)
            {
                // Its silo does not answer: do not wait on disposing the call either.
                last = e;
                lost += System.Diagnostics.Stopwatch.GetElapsedTime(started);
                Release(silo);
                _ = DisposeQuietlyAsync(chunks);
                continue;
            }
            catch (Exception e) { last = e; }
            Release(silo);
            await DisposeQuietlyAsync(chunks);
        }
        if (busy > 0 && last is EngineBusyException)
            throw new MixtralOverloadedException("every engine's queue is full: " + last.Message);
        throw new MixtralUnavailableException("no engine could take the request: " + last?.Message, last);
    }

    void Release(string silo) => _inFlight.AddOrUpdate(silo, 0, (_, n) => Math.Max(0, n - 1));

    async Task CancelQuietlyAsync(string silo, string id)
    {
        try { await _cluster.GetGrain<IEngineGrain>(silo).Cancel(id, 0).WaitAsync(TimeSpan.FromMilliseconds(_options.EngineTimeoutMilliseconds)); }
        catch (Exception) { }
    }

    static async Task DisposeQuietlyAsync<T>(IAsyncEnumerator<T> enumerator)
    {
        try { await enumerator.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(5)); }
        catch (Exception) { }
    }

    /// <summary>Engines in the order a new stateless request should try them (<see cref="EngineSelection"/>, the conversations' policy).</summary>
    async Task<List<string>> RankEnginesAsync(bool fresh = false)
    {
        var loads = await GetEngineLoadsAsync(fresh);
        // the conversations' policy (EngineSelection); ties rotate, so equal engines share stateless requests
        var start = Interlocked.Increment(ref _roundRobin);
        var order = new Dictionary<string, long>();
        for (var i = 0; i < loads.Count; i++) order.TryAdd(loads[i].Silo, (i + start) % loads.Count);
        return [.. EngineSelection.Rank(loads, silo => _inFlight.GetValueOrDefault(silo), l => order[l.Silo]).Select(l => l.Silo)];
    }

    /// <summary>The loads of the engines of every active silo (cached for LoadCacheMilliseconds; one refresh at a time).</summary>
    public Task<IReadOnlyList<EngineLoad>> GetEngineLoadsAsync(bool fresh = false)
    {
        lock (_lock)
        {
            if (!fresh && Environment.TickCount64 - _loadsAt < _options.LoadCacheMilliseconds) return Task.FromResult(_loads);
            var refreshing = _refreshing ??= Task.Run(RefreshLoadsAsync);
            // Stale loads serve a request at once while they are refreshed: a silo that does not answer (the refresh waits
            // up to EngineTimeoutMilliseconds for it) must not hold up every request.
            return !fresh && _loads.Count > 0 ? Task.FromResult(_loads) : refreshing;
        }
    }

    /// <summary>The loads as last fetched, without asking the cluster (for gauges).</summary>
    public IReadOnlyList<EngineLoad> LastEngineLoads
    {
        get { lock (_lock) return _loads; }
    }

    async Task<IReadOnlyList<EngineLoad>> RefreshLoadsAsync()
    {
        try
        {
            var timeout = TimeSpan.FromMilliseconds(_options.EngineTimeoutMilliseconds);
            IReadOnlyList<EngineLoad> loads;
            try
            {
                List<string> silos;
                try { silos = [.. (await _cluster.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true).WaitAsync(timeout)).Keys.Select(s => s.ToParsableString())]; }
                catch (Exception)
                {
                    // The membership does not answer (its silo may be the one that failed): ask the engines known so far.
                    lock (_lock) silos = [.. _loads.Select(l => l.Silo)];
                }
                var answers = await Task.WhenAll(silos.Select(async silo =>
                {
                    try { return await _cluster.GetGrain<IEngineGrain>(silo).GetLoad().WaitAsync(timeout); }
                    catch (Exception) { return null; }
                }));
                loads = [.. answers.Where(l => l is not null && l.State == EngineState.Ready).Select(l => l!).OrderBy(l => l.Silo, StringComparer.Ordinal)];
            }
            catch (Exception) { loads = []; }
            lock (_lock)
            {
                _loads = loads;
                _loadsAt = Environment.TickCount64;
            }
            return loads;
        }
        finally
        {
            lock (_lock) _refreshing = null;
        }
    }

    // ---- conversations ----

    /// <summary>
    /// Works out the next turn of the conversation <paramref name="conversationKey"/> (a conversation grain key) from a
    /// request's messages, which may be either
    /// <list type="bullet">
    /// <item>the conversation's whole history as stored (system message included, if it has one) plus one new user message —
    /// what an OpenAI client that keeps its own history sends; or</item>
    /// <item>only the new user message, optionally after a system message (which sets the conversation's system message
    /// while it has no turns).</item>
    /// </list>
    /// Anything else is a <see cref="MixtralRequestException"/> (code conversation_mismatch). A conversation that does not
    /// exist is <see cref="ConversationNotFoundException"/>, unless <paramref name="create"/>: the turn then starts it.
    /// </summary>
    public async Task<ConversationTurn> PrepareTurnAsync(string conversationKey, IReadOnlyList<ChatMessage> messages, bool create = false)
    {
        ValidateMessages(messages);
        var found = await Client.FindConversationAsync(conversationKey);
        if (found is null && !create) throw new ConversationNotFoundException(conversationKey);
        var snapshot = found ?? new ConversationSnapshot { ConversationId = conversationKey };
        var stored = snapshot.Messages;
        var user = messages[^1].Content;
        var fullHistory = messages.Count - 1 == stored.Length;
        for (var i = 0; fullHistory && i < stored.Length; i++)
            fullHistory = stored[i] == messages[i];
        string? newSystem = null;
        if (!fullHistory)
        {
            var system = messages[0].Role == ChatRole.System ? messages[0].Content : null;
            if (messages.Count != (system is null ? 1 : 2))
                throw new MixtralRequestException(
                    $"the messages do not continue the conversation: send its whole history ({stored.Length} stored messages) followed by one new user message, or only the new user message",
                    "messages", "conversation_mismatch");
            var storedSystem = stored.Length > 0 && stored[0].Role == ChatRole.System ? stored[0].Content : null;
            if (system is not null && system != storedSystem)
            {
                if (snapshot.Turns > 0 || snapshot.TurnInProgress is not null)
                    throw new MixtralRequestException("the conversation already has turns; its system message cannot change", "messages[0]", "conversation_mismatch");
                newSystem = system;
            }
        }
        // The grain drops the oldest turns when the history outgrows the context (ConversationWindow), but the new message
        // must fit with the system message alone: the policy's own check, before a "new" conversation is stored.
        var effectiveSystem = newSystem ?? (stored.Length > 0 && stored[0].Role == ChatRole.System ? stored[0].Content : null);
        try { Prompts.CheckFits(effectiveSystem, user); }
        catch (ContextLengthExceededException e) { throw ContextLengthExceeded(e, "messages"); }
        return new ConversationTurn(conversationKey, user, newSystem, snapshot, Create: found is null);
    }

    /// <summary>
    /// Runs <paramref name="turn"/> through its conversation grain. Before any text: <see cref="MixtralRequestException"/>
    /// for a turn that can never run, <see cref="TurnInProgressException"/> while another turn of the conversation runs.
    /// Cancelling cancels the turn (the history stays as it was).
    /// </summary>
    public async IAsyncEnumerable<GenerationUpdate> SendTurnAsync(ConversationTurn turn, SamplingOptions options,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var grain = Client.Conversation(turn.ConversationKey);
        if (turn.NewSystemMessage is not null || turn.Create)
        {
            // Bounded like the turn's own silences: a silo gone under the call is a TimeoutException (503), not a 30 s wait.
            try { await grain.Start(turn.NewSystemMessage).WaitAsync(StallCheck + ProbeTimeout, cancellationToken); }
            catch (InvalidTurnException e) { throw new MixtralRequestException(e.Message, "messages[0]", "conversation_mismatch"); }
        }
        await using var chunks = Client.SendAsync(turn.ConversationKey, turn.UserMessage, Checked(options, null), cancellationToken)
            .GetAsyncEnumerator(cancellationToken);
        bool more;
        try { more = await chunks.MoveNextAsync(); }
        catch (InvalidTurnException e)
        {
            throw new MixtralRequestException(e.Message, "messages", CodeOf(e.Kind));
        }
        while (more)
        {
            var c = chunks.Current;
            yield return new GenerationUpdate(c.Text, c.TokenIds.Length, c.End, c.Logprobs);
            if (c.IsFinal) yield break;
            more = await chunks.MoveNextAsync();
        }
    }
}
