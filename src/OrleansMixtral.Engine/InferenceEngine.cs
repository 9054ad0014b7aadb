using System.Collections.Concurrent;
using System.Diagnostics;
using OrleansMixtral.Engine.Kv;
using OrleansMixtral.Engine.Sampling;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Engine;

public sealed record EngineOptions
{
    /// <summary>Requests waiting for admission beyond this are refused with <see cref="EngineOverloadedException"/>.</summary>
    public int MaxWaiting { get; init; } = 1024;
    /// <summary>Sequences decoded together in one step.</summary>
    public int MaxRunningSequences { get; init; } = 64;
    /// <summary>Told what the engine does as it runs (queue waits, first tokens, steps, prompt chunks), for metrics.</summary>
    public IEngineObserver? Observer { get; init; }
    /// <summary>
    /// The window of <see cref="EngineStats.DecodeTokensPerSecond"/>: tokens generated over the last this long, so that
    /// the figure falls to 0 when the engine has nothing to do.
    /// </summary>
    public TimeSpan ThroughputWindow { get; init; } = TimeSpan.FromSeconds(5);
    // Prompt tokens per step (chunked prefill) are the backend's IModelBackend.PrefillChunkTokens: its buffers are sized for them.
    /// <summary>
    /// The step budget for prompts while sequences decode: a step carries one token of every decoding sequence first,
    /// then at most this many prompt tokens (null: the backend's prefill chunk, the whole budget). Smaller keeps decode
    /// steps short (inter-token latency) at the cost of more steps per prompt (time to first token under load); a step
    /// with nothing decoding always takes a whole chunk. At least <see cref="PrefillChunk.MinTokens"/>.
    /// </summary>
    public int? PromptTokensWhileDecoding { get; init; }
    /// <summary>How KV memory is promised when a request is admitted (<see cref="KvAdmission"/>).</summary>
    public KvAdmission Admission { get; init; } = KvAdmission.MaxUtilization;
}

/// <summary>
/// When a waiting request may start, given the KV cache (the two policies of TensorRT-LLM's capacity scheduler).
/// </summary>
public enum KvAdmission
{
    /// <summary>
    /// Admit when the prompt's blocks fit (one block kept free per running sequence); blocks are taken as sequences
    /// grow, and when none is left the newest sequence is preempted and later resumes from its cached prefix. Most
    /// sequences at once; a preempted one recomputes what the prefix cache lost.
    /// </summary>
    MaxUtilization,
    /// <summary>
    /// Admit only when every running sequence and this one can grow to their full length (prompt + max tokens) in
    /// the blocks left: nobody is ever preempted; fewer sequences run when requests ask for long outputs.
    /// </summary>
    GuaranteedNoEvict,
}

/// <summary>
/// Continuous batching over one model backend. A single loop thread owns the backend: each step it admits
/// waiting requests whose KV blocks fit, then runs one forward over the next token of every decoding
/// sequence plus a chunk of one or more prompts, samples, streams tokens, and retires finished sequences.
/// Requests carry a conversation's whole history; the KV prefix cache makes follow-up turns compute only
/// their new tokens.
/// </summary>
public sealed class InferenceEngine : IAsyncDisposable
{
    sealed class Sequence(GenerationStream stream, GenerationRequest request, int[] tokens, int promptLength, int maxLength)
    {
        public GenerationStream Stream { get; } = stream;
        public GenerationRequest Request { get; } = request;
        public int[] Tokens { get; } = tokens;          // prompt, then sampled tokens
        public int Length { get; set; } = promptLength;  // tokens known
        public int PromptLength { get; } = promptLength;
        public int MaxLength { get; } = maxLength;
        public KvAllocation? Kv { get; set; }
        /// <summary>Prompt tokens the prefix cache gave at first admission (usage); -1 until admitted.</summary>
        public int CachedPromptTokens { get; set; } = -1;
        public StreamingDetokenizer Detokenizer { get; init; } = null!;
        public StopStringMatcher Stops { get; init; } = null!;
        public SplitMix64 Rng;
        public long SubmittedAt { get; } = Stopwatch.GetTimestamp();
        public long FirstTokenAt { get; set; }
        public int BatchSlot { get; set; } = -1;
        /// <summary>This step's logit row to sample from, or -1.</summary>
        public int LogitRow { get; set; } = -1;
        /// <summary>This step's first logit row: with prompt logprobs, one row per token of the chunk.</summary>
        public int FirstLogitRow { get; set; } = -1;
        /// <summary>With prompt logprobs: [i] scores prompt token i, filled as the chunks are computed.</summary>
        public TokenLogprobs?[]? PromptScores { get; init; }
        /// <summary>The request's span (<see cref="EngineTracing"/>), null when nobody listens.</summary>
        public Activity? Trace { get; set; }
        /// <summary>When its first decode step began (for the decode span), and how many it has had.</summary>
        public long DecodeStartedAt { get; set; }
        public int DecodeSteps { get; set; }
        public int Generated => Length - PromptLength;
        public IReadOnlyList<int> TokenList => new ArraySegment<int>(Tokens, 0, Length);
    }

    readonly IModelBackend _backend;
    readonly MistralTokenizer _tokenizer;
    readonly EngineOptions _options;
    readonly int _prefillChunk;
    readonly int _promptTokensWhileDecoding; // EngineOptions.PromptTokensWhileDecoding, at most a chunk
    readonly KvCacheManager _kv;
    readonly ForwardBatch _batch;
    readonly float[] _logits;
    readonly int _logitRows;  // rows of _logits: one per sequence of a step, or a prompt chunk's to score
    readonly Sampler _sampler;
    readonly IDeviceSampling? _deviceSampling;
    readonly float[] _temperatures;  // per logit row, for device sampling
    readonly double[] _uniforms;
    readonly int[] _sampled;
    static readonly bool[] DecodeThenPrompts = [true, false];
    readonly HashSet<int> _eos;
    readonly ConcurrentQueue<Sequence> _submitted = new();
    readonly LinkedList<Sequence> _waiting = new();
    readonly List<Sequence> _running = [];
    readonly List<Sequence> _inBatch = [];
    readonly List<(Sequence Sequence, int Position, int Tokens)> _tracedChunks = []; // this step's prompt chunks of traced requests
    readonly SemaphoreSlim _wake = new(0);
    readonly Thread _loop;
    readonly CancellationTokenSource _stop = new();
    long _nextId;
    int _waitingCount;

    // statistics (written by the loop thread, read by anyone)
    long _tokensGenerated, _promptComputed, _promptReused, _preemptions;
    readonly RateWindow _generatedRate;
    readonly RecentValues _recentTtftMs = new(1024); // the last 1,024 requests' times to first token
    readonly IEngineObserver? _observer;
    int _lastBatch;

    public InferenceEngine(IModelBackend backend, MistralTokenizer tokenizer, EngineOptions? options = null)
    {
        _backend = backend;
        _tokenizer = tokenizer;
        _options = options ?? new EngineOptions();
        var c = backend.Config;
        if (tokenizer.VocabSize != c.VocabSize)
            throw new ArgumentException($"tokenizer has {tokenizer.VocabSize} tokens, the model {c.VocabSize}");
        _kv = new KvCacheManager(backend.KvBlockCount, backend.KvBlockSize, backend.CopyKvBlock);
        _prefillChunk = backend.PrefillChunkTokens;
        if (_prefillChunk < 1 || _prefillChunk > backend.MaxBatchTokens)
            throw new ArgumentException($"the backend's prefill chunk of {_prefillChunk} tokens does not fit its forward size of {backend.MaxBatchTokens}");
        if (_options.PromptTokensWhileDecoding is < PrefillChunk.MinTokens)
            throw new ArgumentException($"the prompt budget while decoding must be at least {PrefillChunk.MinTokens} tokens, got {_options.PromptTokensWhileDecoding}");
        _promptTokensWhileDecoding = Math.Min(_options.PromptTokensWhileDecoding ?? _prefillChunk, _prefillChunk);
        // one logit row per sequence of a step
        var maxSeqs = Math.Min(Math.Min(_options.MaxRunningSequences, backend.MaxSequences), Math.Min(backend.MaxBatchTokens, backend.MaxLogitRows));
        _batch = new ForwardBatch(backend.MaxBatchTokens, maxSeqs, (c.MaxPositionEmbeddings + backend.KvBlockSize - 1) / backend.KvBlockSize);
        _logitRows = maxSeqs;
        _logits = new float[(long)_logitRows * c.VocabSize];
        _sampler = new Sampler(c.VocabSize);
        _deviceSampling = backend as IDeviceSampling;
        _temperatures = new float[maxSeqs];
        _uniforms = new double[maxSeqs];
        _sampled = new int[maxSeqs];
        _eos = [.. c.EosTokenIds];
        _observer = _options.Observer;
        _generatedRate = new RateWindow(_options.ThroughputWindow > TimeSpan.Zero ? _options.ThroughputWindow : TimeSpan.FromSeconds(5));
        Info = new EngineInfo(backend.Name, "", c.MaxPositionEmbeddings, c.VocabSize, backend.KvBlockSize, backend.KvBlockCount);
        _loop = new Thread(Loop) { IsBackground = true, Name = "engine-loop" };
        _loop.Start();
    }

    public EngineInfo Info { get; }
    public IModelBackend Backend => _backend;
    public MistralTokenizer Tokenizer => _tokenizer;

    /// <summary>
    /// Queues a generation. Throws <see cref="InvalidRequestException"/> for requests that can never run and
    /// <see cref="EngineOverloadedException"/> when the queue is full; everything else reaches the stream.
    /// </summary>
    public GenerationStream Submit(GenerationRequest request, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_stop.IsCancellationRequested, this);
        if (request.Sampling.Check() is { } bad) throw new InvalidRequestException(bad.Message);
        request = request with { Sampling = request.Sampling.Normalized() };
        var c = _backend.Config;
        var prompt = request.PromptTokens;
        if (prompt.Count == 0) throw new InvalidRequestException("the prompt has no tokens");
        foreach (var t in prompt)
            if ((uint)t >= (uint)c.VocabSize) throw new InvalidRequestException($"token id {t} is outside the vocabulary of {c.VocabSize}");
        if (prompt.Count >= c.MaxPositionEmbeddings)
            throw new InvalidRequestException($"the prompt has {prompt.Count} tokens; the context holds {c.MaxPositionEmbeddings} (prompt plus at least one generated token)",
                ErrorKind.ContextLengthExceeded);
        var maxLength = (int)Math.Min((long)prompt.Count + (request.Sampling.MaxTokens ?? c.MaxPositionEmbeddings), c.MaxPositionEmbeddings);
        if (maxLength > _kv.CapacityTokens)
            throw new KvCapacityException($"the request needs {maxLength} tokens of KV cache; the engine holds {_kv.CapacityTokens}");
        if (Interlocked.Increment(ref _waitingCount) > _options.MaxWaiting)
        {
            Interlocked.Decrement(ref _waitingCount);
            throw new EngineOverloadedException($"{_options.MaxWaiting} requests are already waiting");
        }

        var tokens = new int[maxLength];
        for (var i = 0; i < prompt.Count; i++) tokens[i] = prompt[i];
        var stream = new GenerationStream(Interlocked.Increment(ref _nextId));
        var seq = new Sequence(stream, request, tokens, prompt.Count, maxLength)
        {
            Detokenizer = request.ContinuesPrompt
                ? _tokenizer.CreateContinuationDetokenizer(tokens.AsSpan(0, prompt.Count))
                : _tokenizer.CreateStreamingDetokenizer(),
            PromptScores = request.Sampling.PromptLogprobs is null ? null : new TokenLogprobs?[prompt.Count],
            Stops = new StopStringMatcher(request.Sampling.StopStrings),
            Rng = new SplitMix64(request.Sampling.Seed ?? (ulong)Random.Shared.NextInt64()),
            Trace = EngineTracing.StartSequence(prompt.Count, maxLength - prompt.Count), // the reply's limit: max_tokens, or what the context leaves
        };
        if (cancellationToken.CanBeCanceled) cancellationToken.Register(stream.Cancel);
        stream.CancellationToken.Register(() => _wake.Release());
        _submitted.Enqueue(seq);
        _wake.Release();
        return stream;
    }

    public EngineStats GetStats()
    {
        var ttft = _recentTtftMs.Percentiles(50, 99);
        return new(
            _backend.Name, Volatile.Read(ref _waitingCount), _running.Count, _kv.BlocksInUse, _kv.BlockCount, _kv.BlocksCached,
            Interlocked.Read(ref _tokensGenerated), Interlocked.Read(ref _promptComputed), Interlocked.Read(ref _promptReused),
            Math.Round(_generatedRate.PerSecond(Stopwatch.GetTimestamp()), 1), Volatile.Read(ref _lastBatch), Interlocked.Read(ref _preemptions),
            ttft[0], ttft[1]);
    }

    void Loop()
    {
        Activity.Current = null; // the thread inherited its creator's context: the engine's loop belongs to no trace
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                Admit();
                if (_running.Count == 0)
                {
                    _wake.Wait(200);
                    continue;
                }
                Step();
            }
            catch (Exception e) when (!_stop.IsCancellationRequested)
            {
                // A failed step ends the sequences it carried; the engine itself goes on.
                foreach (var s in _inBatch.Count > 0 ? _inBatch.ToList() : _running.ToList()) Finish(s, FinishReason.Error, e.Message);
                _inBatch.Clear();
            }
        }
        foreach (var s in _running.ToList()) Finish(s, FinishReason.Cancelled, "the engine stopped");
        while (_submitted.TryDequeue(out var s)) s.Stream.Complete(Result(s, FinishReason.Cancelled, "the engine stopped"));
        foreach (var s in _waiting) s.Stream.Complete(Result(s, FinishReason.Cancelled, "the engine stopped"));
    }

    void Admit()
    {
        while (_submitted.TryDequeue(out var s)) _waiting.AddLast(s);
        for (var node = _waiting.First; node is not null;)
        {
            var next = node.Next;
            if (node.Value.Stream.IsCancelled)
            {
                _waiting.Remove(node);
                Interlocked.Decrement(ref _waitingCount);
                node.Value.Stream.Complete(Result(node.Value, FinishReason.Cancelled, null));
            }
            node = next;
        }
        foreach (var s in _running.Where(s => s.Stream.IsCancelled).ToList()) Finish(s, FinishReason.Cancelled, null);

        var maxRunning = _batch.BlockTables.Length;
        while (_waiting.First is { } first && _running.Count < maxRunning)
        {
            var s = first.Value;
            KvAllocation? kv;
            // blocks for the prompt (or a preempted sequence's tokens so far) now, one block a running sequence kept free
            // so decodes can grow before anyone is preempted; prompt logprobs need the logits of every prompt position,
            // so such a prompt is computed whole
            try { kv = _kv.TryAllocate(s.TokenList, s.MaxLength, reusePrefix: s.PromptScores is null, reserveBlocks: ReserveBlocks(s)); }
            catch (KvCapacityException e)
            {
                _waiting.RemoveFirst();
                Interlocked.Decrement(ref _waitingCount);
                EndTrace(s, FinishReason.Error, e.Message, 0);
                s.Stream.Fail(e);
                continue;
            }
            if (kv is null) break; // first come, first served: wait until running sequences free blocks
            _waiting.RemoveFirst();
            Interlocked.Decrement(ref _waitingCount);
            s.Kv = kv;
            if (s.CachedPromptTokens < 0)
            {
                // the first admission (a preempted sequence comes back later)
                s.CachedPromptTokens = Math.Min(kv.CachedTokens, s.PromptLength);
                _observer?.Admitted(Stopwatch.GetElapsedTime(s.SubmittedAt));
                if (s.Trace is { } trace)
                    EngineTracing.Interval(trace, EngineTracing.QueueSpan, s.SubmittedAt, Stopwatch.GetTimestamp(), ("mixtral.cached_prompt_tokens", s.CachedPromptTokens));
            }
            Interlocked.Add(ref _promptReused, kv.CachedTokens);
            _running.Add(s);
        }
    }

    /// <summary>
    /// Blocks that must stay free beyond s's prompt for s to be admitted (<see cref="EngineOptions.Admission"/>): one per
    /// running sequence, or everything the running sequences and s may still grow into.
    /// </summary>
    int ReserveBlocks(Sequence s)
    {
        if (_options.Admission == KvAdmission.MaxUtilization) return _running.Count;
        int Blocks(int tokens) => (tokens + _kv.BlockSize - 1) / _kv.BlockSize;
        var growth = Blocks(s.MaxLength) - Blocks(s.Length);
        foreach (var r in _running) growth += Math.Max(0, Blocks(r.MaxLength) - r.Kv!.Blocks.Count);
        return growth;
    }

    /// <summary>
    /// Every decoding sequence gets room for the token it feeds this step, oldest first. Where no block is left, the
    /// most recently admitted sequence is preempted (vLLM's policy: recompute): its blocks go back to the prefix cache
    /// and it waits at the front of the queue with every token it has, so it resumes from its cached prefix and loses
    /// nothing of its stream.
    /// </summary>
    void Grow()
    {
        for (var i = 0; i < _running.Count; i++)
        {
            var s = _running[i];
            if (s.Length - s.Kv!.ComputedTokens != 1) continue; // prompts got their blocks at admission
            while (!_kv.TryGrow(s.Kv, s.Length))
            {
                var victim = _running[^1];
                Preempt(victim);
                if (victim == s) break;
            }
        }
    }

    void Preempt(Sequence s)
    {
        _running.Remove(s);
        _kv.Free(s.Kv!, s.TokenList);
        s.Kv = null;
        _waiting.AddFirst(s);
        Interlocked.Increment(ref _waitingCount);
        Interlocked.Increment(ref _preemptions);
    }

    void Step()
    {
        Grow();
        var started = Stopwatch.GetTimestamp();
        _batch.Clear();
        _inBatch.Clear();
        var budget = _batch.MaxTokens;
        // decodes first (one token each), then prompt chunks with what is left of the token budget, at most
        // PromptTokensWhileDecoding of them when the step carries decodes
        var promptBudget = int.MaxValue;
        foreach (var pass in DecodeThenPrompts)
        {
            if (!pass && _batch.TokenCount > 0) promptBudget = _promptTokensWhileDecoding;
            foreach (var s in _running)
            {
                var pending = s.Length - s.Kv!.ComputedTokens;
                if ((pending == 1) != pass || budget == 0 || promptBudget == 0) continue;
                var n = Math.Min(pending, Math.Min(budget, pass ? 1 : Math.Min(_prefillChunk, promptBudget)));
                var start = s.Kv.ComputedTokens;
                var scoring = s.PromptScores is not null && start < s.PromptLength - 1;
                if (scoring)
                {
                    // a row per token of the chunk, leaving one for every running sequence not yet in the batch
                    n = Math.Min(n, _logitRows - _batch.LogitCount - (_running.Count - _inBatch.Count - 1));
                    if (n < 1) continue;
                }
                s.BatchSlot = _batch.AddSequence(s.Kv.Blocks);
                s.FirstLogitRow = _batch.LogitCount;
                for (var i = 0; i < n; i++)
                    _batch.AddToken(s.BatchSlot, s.Tokens[start + i], start + i, wantLogits: scoring || start + i == s.Length - 1);
                s.LogitRow = start + n == s.Length ? _batch.LogitCount - 1 : -1;
                budget -= n;
                if (!pass)
                {
                    promptBudget -= n;
                    Interlocked.Add(ref _promptComputed, n);
                    _observer?.PromptChunk(n);
                    if (s.Trace is not null) _tracedChunks.Add((s, start, n));
                }
                else if (s.Trace is not null && s.DecodeSteps++ == 0) s.DecodeStartedAt = started;
                _inBatch.Add(s);
            }
        }
        if (_batch.TokenCount == 0) return;

        // where the backend can, the next tokens are chosen next to the logits and only their ids come back; the
        // draws are the engine's (one per sampled row, as the host sampler takes), so a seed gives the same text
        // (not when a request wants logprobs: they are computed here, from the logits)
        var onDevice = _deviceSampling is not null;
        foreach (var s in _inBatch)
            if (s.Request.Sampling.NeedsLogits || (s.LogitRow >= 0 && !Sampler.OnDevice(s.Request.Sampling))) onDevice = false;
        if (onDevice)
        {
            foreach (var s in _inBatch)
            {
                if (s.LogitRow < 0) continue;
                var t = s.Request.Sampling.Temperature;
                _temperatures[s.LogitRow] = t;
                _uniforms[s.LogitRow] = t == 0f ? 0 : s.Rng.NextDouble();
            }
            var rows = _batch.LogitCount;
            _deviceSampling!.ForwardAndSample(_batch, _temperatures.AsSpan(0, rows), _uniforms.AsSpan(0, rows), _sampled.AsSpan(0, rows));
        }
        else _backend.Forward(_batch, _logits);

        var vocab = _backend.Config.VocabSize;
        foreach (var s in _inBatch)
        {
            var before = s.Kv!.ComputedTokens;
            var computed = before + CountTokens(s);
            _kv.Advance(s.Kv, s.TokenList, computed);
            if (s.PromptScores is { } scores && s.Stream.PromptLogprobs is null)
            {
                // the logits at position p score prompt token p + 1
                var top = s.Request.Sampling.PromptLogprobs!.Value;
                for (var p = before; p < Math.Min(computed, s.PromptLength - 1); p++)
                    scores[p + 1] = LogSoftmax.Of(new ReadOnlySpan<float>(_logits, (s.FirstLogitRow + p - before) * vocab, vocab), s.Tokens[p + 1], top);
                if (computed >= s.PromptLength - 1) s.Stream.PromptLogprobs = scores;
            }
            if (s.LogitRow < 0) continue;
            var logits = onDevice ? default : new ReadOnlySpan<float>(_logits, s.LogitRow * vocab, vocab);
            var token = onDevice ? _sampled[s.LogitRow] : _sampler.Sample(logits, s.Request.Sampling, ref s.Rng);
            Accept(s, token, s.Request.Sampling.Logprobs is { } k ? LogSoftmax.Of(logits, token, k) : null);
        }
        _inBatch.Clear();

        Volatile.Write(ref _lastBatch, _batch.SequenceCount);
        _observer?.StepCompleted(Stopwatch.GetElapsedTime(started), _batch.TokenCount, _batch.SequenceCount);
        if (_tracedChunks.Count > 0)
        {
            var ended = Stopwatch.GetTimestamp();
            foreach (var (s, position, tokens) in _tracedChunks)
                EngineTracing.Interval(s.Trace!, EngineTracing.PromptChunkSpan, started, ended,
                    ("mixtral.prompt.position", position), ("mixtral.prompt.chunk_tokens", tokens),
                    ("mixtral.step.sequences", _batch.SequenceCount), ("mixtral.step.tokens", _batch.TokenCount));
            _tracedChunks.Clear();
        }
    }

    int CountTokens(Sequence s)
    {
        var n = 0;
        for (var t = 0; t < _batch.TokenCount; t++) if (_batch.SequenceOfToken[t] == s.BatchSlot) n++;
        return n;
    }

    void Accept(Sequence s, int token, TokenLogprobs? logprobs)
    {
        var p = s.Request.Sampling;
        Interlocked.Increment(ref _tokensGenerated);
        var now = Stopwatch.GetTimestamp();
        _generatedRate.Add(now, 1);
        if (s.FirstTokenAt == 0)
        {
            s.FirstTokenAt = now;
            var ttft = Stopwatch.GetElapsedTime(s.SubmittedAt, now);
            _observer?.FirstToken(ttft);
            _recentTtftMs.Add(ttft.TotalMilliseconds);
        }
        if ((!p.IgnoreEos && _eos.Contains(token)) || p.StopTokens.Contains(token))
        {
            Finish(s, FinishReason.Stop, null);
            return;
        }
        s.Tokens[s.Length++] = token;
        var text = s.Stops.Append(s.Detokenizer.Push(token));
        s.Stream.Emit(new GeneratedToken(s.Generated - 1, token, text, logprobs));
        if (s.Stops.Stopped) Finish(s, FinishReason.Stop, null);
        else if (p.MaxTokens is { } max && s.Generated >= max || s.Length >= s.MaxLength) Finish(s, FinishReason.Length, null);
    }

    void Finish(Sequence s, FinishReason reason, string? error)
    {
        if (!_running.Remove(s)) return;
        if (s.Kv is not null) _kv.Free(s.Kv, s.TokenList);
        if (reason is FinishReason.Stop or FinishReason.Length)
        {
            var tail = s.Stops.Append(s.Detokenizer.Flush()) + s.Stops.Flush();
            if (tail.Length > 0) s.Stream.Emit(new GeneratedToken(-1, -1, tail));
        }
        s.Stream.Complete(Result(s, reason, error));
    }

    GenerationResult Result(Sequence s, FinishReason reason, string? error)
    {
        var now = Stopwatch.GetTimestamp();
        var output = s.Tokens.AsSpan(s.PromptLength, s.Generated).ToArray();
        EndTrace(s, reason, error, output.Length);
        return new GenerationResult(
            reason,
            new TokenUsage(s.PromptLength, Math.Max(0, s.CachedPromptTokens), output.Length),
            output,
            s.Stops.Text,
            s.FirstTokenAt == 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(s.SubmittedAt, s.FirstTokenAt),
            Stopwatch.GetElapsedTime(s.SubmittedAt, now),
            error);
    }

    /// <summary>Ends the request's span (and its decode span) with its outcome.</summary>
    void EndTrace(Sequence s, FinishReason reason, string? error, int completionTokens)
    {
        if (s.Trace is not { } trace) return;
        s.Trace = null;
        var now = Stopwatch.GetTimestamp();
        if (s.DecodeSteps > 0)
            EngineTracing.Interval(trace, EngineTracing.DecodeSpan, s.DecodeStartedAt, now, ("mixtral.decode.steps", s.DecodeSteps));
        trace.SetTag("gen_ai.usage.output_tokens", completionTokens);
        trace.SetTag("mixtral.cached_prompt_tokens", Math.Max(0, s.CachedPromptTokens));
        trace.SetTag("gen_ai.response.finish_reasons", reason.ToString().ToLowerInvariant());
        if (s.FirstTokenAt != 0) trace.SetTag("mixtral.time_to_first_token_ms", Math.Round(Stopwatch.GetElapsedTime(s.SubmittedAt, s.FirstTokenAt).TotalMilliseconds, 2));
        if (reason == FinishReason.Error) trace.SetStatus(ActivityStatusCode.Error, error);
        trace.Stop();
        Activity.Current = null;
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _wake.Release();
        await Task.Run(() => _loop.Join());
        _backend.Dispose();
    }
}
