using System.Buffers;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using OrleansMixtral.Client.AI;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Gateway;

/// <summary>The HTTP endpoints. Each request runs inside <see cref="GuardAsync"/>, which turns every failure into OpenAI's error shape.</summary>
public sealed partial class GatewayEndpoints(
    GatewayOptions options,
    MixtralChatService service,
    GatewayAdmission admission,
    GatewayMetrics metrics,
    OpenAiRequests requests,
    IHostApplicationLifetime lifetime,
    HttpConnectionShaping shaping,
    ILogger<GatewayEndpoints> log)
{
    static readonly long StartedAt = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    public const string TenantItem = "mixtral.tenant";

    static Tenant TenantOf(HttpContext ctx) => (Tenant)ctx.Items[TenantItem]!;

    // ---- plumbing ----

    /// <summary>Runs a handler; maps what it throws to OpenAI's error JSON (unless the response has started).</summary>
    public async Task GuardAsync(HttpContext ctx, string endpoint, Func<Task> handler)
    {
        int status;
        string message, code;
        string? param = null;
        int? retry = null;
        try
        {
            await handler();
            return;
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested) { return; } // the client went away
        catch (GatewayException e) { (status, message, code, param) = (e.Status, e.Message, e.Code ?? "error", e.Param); }
        catch (MixtralRequestException e) { (status, message, code, param) = (400, e.Message, e.Code, e.Param); }
        catch (InvalidTurnException e) { (status, message, code) = (400, e.Message, e.Kind == ErrorKind.ContextLengthExceeded ? "context_length_exceeded" : "invalid_request"); }
        catch (TurnInProgressException) { (status, message, code) = (409, "the conversation is generating another turn; wait for it to end or cancel it", "conversation_busy"); }
        catch (ConversationNotFoundException)
        {
            // Started by this tenant once (its id checks out), but not in the cluster's storage: never an empty conversation.
            var e = NotFound(ctx.Request.RouteValues["id"] as string ?? ctx.Request.Headers[GatewayHost.ConversationHeader].ToString());
            (status, message, code, param) = (e.Status, e.Message, e.Code!, e.Param);
        }
        catch (MixtralOverloadedException e)
        {
            LogRefused(log, ctx.Request.Method, endpoint, 429, e.Message);
            (status, message, code, retry) = (429, "every engine's queue is full; retry later", "rate_limit_exceeded", admission.RetryAfterSeconds);
        }
        catch (MixtralUnavailableException e)
        {
            // Its message names silos and what Orleans said: for the log, not the client.
            LogRefused(log, ctx.Request.Method, endpoint, 503, e.Message);
            (status, message, code, retry) = (503, Unavailable, "service_unavailable", admission.RetryAfterSeconds);
        }
        catch (Exception e) when (IsClusterFault(e))
        {
            // A silo went away under the call (rejected, or no answer within the budget): the client may retry at once.
            LogClusterFault(log, ctx.Request.Method, endpoint, e);
            (status, message, code, retry) = (503, Unavailable, "service_unavailable", admission.RetryAfterSeconds);
        }
        catch (Exception e)
        {
            LogFailed(log, ctx.Request.Method, endpoint, e);
            (status, message, code) = (500, "the server failed to process the request", "internal_error");
        }
        if (status is 429 or 503 && retry is null) retry = admission.RetryAfterSeconds;
        metrics.Refused(status.ToString(System.Globalization.CultureInfo.InvariantCulture), Tags(ctx, endpoint, null));
        await OpenAiResponses.WriteErrorAsync(ctx, status, message, code, param, retryAfterSeconds: retry);
    }

    const string Unavailable = "the cluster cannot serve this request now (no engine could take it, or a silo failed); retry shortly";

    /// <summary>Failures of the cluster rather than of the request: Orleans' rejections and timeouts (a silo that died).</summary>
    static bool IsClusterFault(Exception e) => e switch
    {
        TimeoutException or Orleans.Runtime.OrleansException => true,
        AggregateException { InnerExceptions.Count: 1 } a => IsClusterFault(a.InnerExceptions[0]),
        _ => false,
    };

    /// <summary>
    /// One call to the cluster (a conversation's history, start, reset, cancel), bounded by
    /// <see cref="GatewayOptions.ClusterCallTimeoutMilliseconds"/>: a call rejected because a silo is gone is tried again
    /// (through another silo, once the client or the cluster knows) while the budget lasts; a call still unanswered at the
    /// end of it is a <see cref="TimeoutException"/> (503), not a wait for Orleans' 30 s response timeout. Only for calls
    /// that may run twice.
    /// </summary>
    async Task<T> ClusterAsync<T>(Func<Task<T>> call, CancellationToken cancellationToken)
    {
        var budget = TimeSpan.FromMilliseconds(options.ClusterCallTimeoutMilliseconds);
        var started = Stopwatch.GetTimestamp();
        while (true)
        {
            var left = budget - Stopwatch.GetElapsedTime(started);
            if (left <= TimeSpan.Zero) throw new TimeoutException($"the cluster did not answer within {budget.TotalMilliseconds:F0} ms");
            var task = call();
            try { return await task.WaitAsync(left, cancellationToken); }
            catch (TimeoutException) when (!task.IsCompleted)
            {
                _ = task.ContinueWith(t => _ = t.Exception, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously);
                throw new TimeoutException($"the cluster did not answer within {budget.TotalMilliseconds:F0} ms");
            }
            catch (Orleans.Runtime.OrleansMessageRejectionException) when (Stopwatch.GetElapsedTime(started) + RetryPause < budget)
            {
                await Task.Delay(RetryPause, cancellationToken);
            }
        }
    }

    async Task ClusterAsync(Func<Task> call, CancellationToken cancellationToken) =>
        await ClusterAsync(async () => { await call(); return true; }, cancellationToken);

    static readonly TimeSpan RetryPause = TimeSpan.FromMilliseconds(200);

    static KeyValuePair<string, object?>[] Tags(HttpContext ctx, string endpoint, string? mode) =>
    [
        new("endpoint", endpoint),
        new("tenant", ctx.Items.TryGetValue(TenantItem, out var t) ? ((Tenant)t!).Name : "none"),
        new("mode", mode ?? "none"),
    ];

    /// <summary>The request body, at most <see cref="GatewayOptions.MaxRequestBodyBytes"/> (413 beyond).</summary>
    async Task<byte[]> ReadBodyAsync(HttpContext ctx)
    {
        var limit = options.MaxRequestBodyBytes;
        if (ctx.Request.ContentLength is { } declared && declared > limit) throw TooLarge(limit);
        using var body = new MemoryStream();
        var buffer = ArrayPool<byte>.Shared.Rent(16 << 10);
        using var watch = shaping.WatchBody(ctx); // a client that half-closes in the middle of its body gets a 400
        try
        {
            while (true)
            {
                int n;
                try { n = await ctx.Request.Body.ReadAsync(buffer, ctx.RequestAborted); }
                catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge) { throw TooLarge(limit); }
                catch (BadHttpRequestException e) { throw new GatewayException(400, "the request body could not be read: " + e.Message, "invalid_body"); }
                catch (OperationCanceledException) when (watch.Ended && !ctx.RequestAborted.IsCancellationRequested)
                {
                    // Nothing more will come: answer, then close (the rest of this request can never be read). On starting:
                    // the error response clears the headers set before it.
                    ctx.Response.OnStarting(static c => { ((HttpContext)c).Response.Headers.Connection = "close"; return Task.CompletedTask; }, ctx);
                    throw new GatewayException(400, ctx.Request.ContentLength is { } length
                        ? $"the request body ended after {body.Length} of the {length} bytes its Content-Length declares (the client closed its side)"
                        : "the request body ended before its last chunk (the client closed its side)", "invalid_body");
                }
                if (n == 0) break;
                if (body.Length + n > limit) throw TooLarge(limit);
                body.Write(buffer, 0, n);
            }
            watch.Complete = true;
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
        return body.ToArray();
    }

    static GatewayException TooLarge(long limit) =>
        new(413, $"the request body is larger than this server's limit of {limit} bytes", "request_too_large");

    static GatewayException NotFound(string id) =>
        new(404, id.Length == 0 ? "conversation not found" : $"conversation '{(id.Length > 64 ? id[..64] + "..." : id)}' not found", "conversation_not_found", "conversation_id");

    // ---- /v1/chat/completions, /v1/completions ----

    public Task ChatCompletionsAsync(HttpContext ctx) => GuardAsync(ctx, "chat", async () =>
    {
        var arrived = Stopwatch.GetTimestamp();
        var tenant = TenantOf(ctx);
        var body = await ReadBodyAsync(ctx);
        ChatRequest request;
        using (var doc = OpenAiRequests.ParseJson(body)) request = requests.ReadChat(doc.RootElement);

        var header = ctx.Request.Headers[GatewayHost.ConversationHeader].ToString();
        var named = header.Length > 0 ? header : request.ConversationId;
        if (header.Length > 0 && request.ConversationId is { } fromMetadata && fromMetadata != header)
            throw new GatewayException(400, $"the {GatewayHost.ConversationHeader} header and metadata.conversation_id name different conversations", "conversation_mismatch", "metadata.conversation_id");

        var logprobs = request.Options.Logprobs is null ? null : ReplyLogprobs.ForChat(service.Tokenizer);
        if (named is null)
        {
            var prompt = service.EncodeChat(request.Messages, request.Options.MaxTokens);
            await RunAsync(ctx, "chat", "stateless", arrived, chat: true, request.Stream, request.IncludeUsage, null,
                ct => service.GenerateAsync(prompt, request.Options, ct), logprobs);
            return;
        }
        string publicId, key;
        if (named == "new")
        {
            publicId = ConversationIds.New(tenant);
            key = ConversationIds.GrainKey(tenant, publicId)!;
        }
        else
        {
            publicId = named;
            key = ConversationIds.GrainKey(tenant, named) ?? throw NotFound(named);
        }
        var turn = await ClusterAsync(() => service.PrepareTurnAsync(key, request.Messages, create: named == "new"), ctx.RequestAborted);
        await RunAsync(ctx, "chat", "conversation", arrived, chat: true, request.Stream, request.IncludeUsage, publicId,
            ct => service.SendTurnAsync(turn, request.Options, ct), logprobs);
    });

    public Task CompletionsAsync(HttpContext ctx) => GuardAsync(ctx, "completions", async () =>
    {
        var arrived = Stopwatch.GetTimestamp();
        var body = await ReadBodyAsync(ctx);
        CompletionRequest request;
        using (var doc = OpenAiRequests.ParseJson(body)) request = requests.ReadCompletion(doc.RootElement);
        var prompt = request.PromptTokens ?? service.EncodeCompletion(request.Prompt ?? "");
        service.CheckPromptLength(prompt.Length);
        // echo: the prompt as sent (token ids as decoded), then the completion, which continues its text
        var echo = request.Echo ? request.Prompt ?? service.Tokenizer.Decode(prompt) : null;
        var logprobs = request.Options.Logprobs is null ? null : ReplyLogprobs.ForCompletion(service.Tokenizer, prompt, echo?.Length ?? 0);
        await RunAsync(ctx, "completions", "stateless", arrived, chat: false, request.Stream, request.IncludeUsage, null,
            ct => service.GenerateAsync(prompt, request.Options, continuesPrompt: true, ct), logprobs, echo);
    });

    /// <summary>
    /// Takes a slot, starts the generation and waits for its first update (so that a refusal is still a plain error
    /// response), then answers: server-sent events, or one JSON body at the end. The generation is cancelled when the
    /// client goes away (the enumeration is disposed and its token cancelled). <paramref name="logprobs"/> collects the
    /// reply's logprobs when asked for; <paramref name="echo"/> is text the reply starts with (a completion's prompt).
    /// </summary>
    async Task RunAsync(HttpContext ctx, string endpoint, string mode, long arrived, bool chat, bool stream, bool includeUsage,
        string? conversationId, Func<CancellationToken, IAsyncEnumerable<GenerationUpdate>> start, ReplyLogprobs? logprobs = null, string? echo = null)
    {
        var tags = Tags(ctx, endpoint, mode);
        // the generation's span: admission, the cluster's reply (the grains' and the engine's spans below it), the outcome
        using var trace = GatewayTracing.Source.StartActivity(GatewayTracing.GenerationSpan);
        if (trace is not null)
        {
            foreach (var (key, value) in tags) trace.SetTag("mixtral." + key, value);
            trace.SetTag("gen_ai.request.model", service.ModelId);
            trace.SetTag("mixtral.stream", stream);
            if (conversationId is not null) trace.SetTag("mixtral.conversation_id", conversationId);
        }
        using var slot = await admission.EnterAsync(ctx.RequestAborted)
            ?? throw new GatewayException(429, $"this gateway is at its limit of {options.MaxConcurrentRequests} running and {options.MaxQueuedRequests} waiting requests; retry later",
                "rate_limit_exceeded");
        var reply = new OpenAiResponses.Reply(chat, (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N"),
            DateTimeOffset.UtcNow.ToUnixTimeSeconds(), service.ModelId, conversationId) { Logprobs = logprobs };
        await using var updates = start(ctx.RequestAborted).GetAsyncEnumerator(ctx.RequestAborted);
        if (!await updates.MoveNextAsync()) throw new GatewayException(503, "the generation ended without a result", "generation_failed");
        if (updates.Current is { End: { Succeeded: false } early, Text.Length: 0 })
        {
            // Failed before any text (a conversation whose turn found no engine able to take it, a silo lost at once):
            // still a plain error response, with Retry-After.
            if (early.Finish == FinishReason.Cancelled) throw new GatewayException(409, "the reply was cancelled before it began", "cancelled");
            if (early.Overloaded) throw new MixtralOverloadedException("every engine's queue is full: " + early.Error);
            throw new MixtralUnavailableException("the reply could not start: " + early.Error);
        }

        var sse = stream ? new OpenAiResponses.EventStream(ctx) : null;
        if (sse is not null)
        {
            sse.Start(conversationId);
            if (chat) await sse.WriteAsync(w => reply.WriteChunk(w, "", first: true, end: null, usageInline: false));
        }
        var text = sse is null ? new StringBuilder() : null;
        if (echo is not null)
        {
            // the prompt's logprobs came with the first update
            if (updates.Current.PromptLogprobs is { } scores) logprobs?.AddPrompt(scores);
            if (sse is not null) await sse.WriteAsync(w => reply.WriteChunk(w, echo, first: false, end: null, usageInline: false));
            else text!.Append(echo);
        }
        long firstTokenAt = 0, lastTokenAt = 0;
        TurnEnd end;
        var u = updates.Current;
        while (true)
        {
            if (u.Tokens > 0 || u.Text.Length > 0)
            {
                var now = Stopwatch.GetTimestamp();
                if (firstTokenAt == 0)
                {
                    firstTokenAt = now;
                    metrics.TimeToFirstToken(Stopwatch.GetElapsedTime(arrived, now).TotalSeconds, tags);
                    if (u.Tokens > 1) metrics.InterToken(0, u.Tokens - 1, tags);
                }
                else if (u.Tokens > 0) metrics.InterToken(Stopwatch.GetElapsedTime(lastTokenAt, now).TotalSeconds / u.Tokens, u.Tokens, tags);
                lastTokenAt = now;
            }
            if (u.Logprobs is { Count: > 0 } tokenLogprobs) logprobs?.Add(tokenLogprobs);
            if (u.Text.Length > 0 || logprobs is { HasNew: true })
            {
                if (sse is not null)
                {
                    var piece = u.Text;
                    await sse.WriteAsync(w => reply.WriteChunk(w, piece, first: false, end: null, usageInline: false));
                }
                else text!.Append(u.Text);
            }
            if (u.End is { } e)
            {
                end = e;
                break;
            }
            if (!await updates.MoveNextAsync())
            {
                end = new TurnEnd { Finish = FinishReason.Error, Error = "the generation ended without a result" };
                break;
            }
            u = updates.Current;
        }

        double? rate = null;
        if (end.Usage.CompletionTokens > 1 && lastTokenAt > firstTokenAt)
            rate = (end.Usage.CompletionTokens - 1) / Stopwatch.GetElapsedTime(firstTokenAt, lastTokenAt).TotalSeconds;
        var outcome = end.Succeeded ? "ok" : end.Finish == FinishReason.Cancelled ? "cancelled" : "error";
        metrics.Finished(outcome, end.Usage.PromptTokens, end.Usage.CompletionTokens, rate, tags);
        if (trace is not null)
        {
            trace.SetTag("mixtral.outcome", outcome);
            trace.SetTag("gen_ai.usage.input_tokens", end.Usage.PromptTokens);
            trace.SetTag("gen_ai.usage.output_tokens", end.Usage.CompletionTokens);
            if (firstTokenAt != 0) trace.SetTag("mixtral.time_to_first_token_ms", Math.Round(Stopwatch.GetElapsedTime(arrived, firstTokenAt).TotalMilliseconds, 2));
            if (outcome == "error") trace.SetStatus(ActivityStatusCode.Error, end.Error);
        }
        if (ctx.RequestAborted.IsCancellationRequested) return;

        if (sse is not null)
        {
            if (end.Succeeded)
            {
                await sse.WriteAsync(w => reply.WriteChunk(w, chat ? null : "", first: false, end, usageInline: !includeUsage));
                if (includeUsage) await sse.WriteAsync(w => reply.WriteChunk(w, null, first: false, end, usageInline: false, usageOnly: true));
                await sse.WriteDoneAsync();
            }
            else
            {
                // No [DONE]: the reply is incomplete. The client gets one short line; what failed (silos, Orleans' words) goes
                // to the log.
                if (end.Finish != FinishReason.Cancelled) LogReplyFailed(log, endpoint, mode, end.Error);
                await sse.WriteErrorAsync(end.Finish == FinishReason.Cancelled ? "the reply was cancelled" : ReplyFailed,
                    end.Finish == FinishReason.Cancelled ? "cancelled" : "generation_failed");
            }
            return;
        }
        if (!end.Succeeded)
        {
            if (end.Finish != FinishReason.Cancelled) LogReplyFailed(log, endpoint, mode, end.Error);
            throw end.Finish == FinishReason.Cancelled
                ? new GatewayException(409, "the reply was cancelled", "cancelled")
                : new GatewayException(503, ReplyFailed, "generation_failed");
        }
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "application/json";
        if (conversationId is not null) ctx.Response.Headers[GatewayHost.ConversationHeader] = conversationId;
        var buffer = new ArrayBufferWriter<byte>(text!.Length + 512);
        using (var w = new Utf8JsonWriter(buffer, OpenAiResponses.JsonOptions)) reply.WriteFull(w, text.ToString(), end);
        await ctx.Response.Body.WriteAsync(buffer.WrittenMemory, ctx.RequestAborted);
    }

    // ---- /v1/models ----

    public Task ModelsAsync(HttpContext ctx) => GuardAsync(ctx, "models", async () =>
    {
        await WriteJsonAsync(ctx, 200, w =>
        {
            w.WriteStartObject();
            w.WriteString("object", "list");
            w.WriteStartArray("data");
            WriteModel(w);
            w.WriteEndArray();
            w.WriteEndObject();
        });
    });

    public Task ModelAsync(HttpContext ctx, string model) => GuardAsync(ctx, "models", async () =>
    {
        if (model != service.ModelId && !options.ModelAliases.Contains(model))
            throw new GatewayException(404, $"the model '{(model.Length > 64 ? model[..64] : model)}' does not exist", "model_not_found", "model");
        await WriteJsonAsync(ctx, 200, WriteModel);
    });

    void WriteModel(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteString("id", service.ModelId);
        w.WriteString("object", "model");
        w.WriteNumber("created", StartedAt);
        w.WriteString("owned_by", "orleansmixtral");
        w.WriteNumber("max_model_len", service.ContextLength);
        w.WriteEndObject();
    }

    static async Task WriteJsonAsync(HttpContext ctx, int status, Action<Utf8JsonWriter> write, string? conversationId = null)
    {
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var w = new Utf8JsonWriter(buffer, OpenAiResponses.JsonOptions)) write(w);
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        if (conversationId is not null) ctx.Response.Headers[GatewayHost.ConversationHeader] = conversationId;
        await ctx.Response.Body.WriteAsync(buffer.WrittenMemory, ctx.RequestAborted);
    }

    // ---- /health ----

    /// <summary>
    /// /health's body (ASP.NET Core's health check middleware runs <see cref="EnginesHealthCheck"/> and sets the status: 200
    /// when an engine answers, else 503): the model, the gateway's slots and every engine's load.
    /// </summary>
    public async Task WriteHealthAsync(HttpContext ctx, HealthReport report)
    {
        var loads = report.Entries.TryGetValue(EnginesHealthCheck.Name, out var entry)
            && entry.Data.TryGetValue(EnginesHealthCheck.LoadsKey, out var data) && data is IReadOnlyList<EngineLoad> found ? found : [];
        await WriteJsonAsync(ctx, ctx.Response.StatusCode, w =>
        {
            w.WriteStartObject();
            w.WriteString("status", loads.Count > 0 ? "ok" : "unavailable");
            w.WriteString("model", service.ModelId);
            w.WriteNumber("context_length", service.ContextLength);
            w.WriteNumber("active_requests", admission.Active);
            w.WriteNumber("queued_requests", admission.Queued);
            w.WriteStartArray("engines");
            foreach (var l in loads)
            {
                w.WriteStartObject();
                w.WriteString("silo", l.Silo);
                w.WriteString("backend", l.Backend);
                // the engine's GPU (its index among those its silo sees, --Mixtral:Device), or null and "cpu"
                if (l.DeviceIndex is { } gpu) w.WriteNumber("device_index", gpu);
                else w.WriteNull("device_index");
                w.WriteString("device", l.DeviceName);
                w.WriteNumber("running", l.Running);
                w.WriteNumber("waiting", l.Waiting);
                w.WriteNumber("kv_blocks_used", l.KvBlocksUsed);
                w.WriteNumber("kv_blocks_total", l.KvBlocksTotal);
                w.WriteNumber("tokens_per_second", Math.Round(l.DecodeTokensPerSecond, 1));
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        });
    }

    // ---- /v1/conversations ----

    /// <summary>POST /v1/conversations {"system": "..."}: a new conversation of the caller's tenant.</summary>
    public Task CreateConversationAsync(HttpContext ctx) => GuardAsync(ctx, "conversations", async () =>
    {
        var tenant = TenantOf(ctx);
        string? system = null;
        var body = await ReadBodyAsync(ctx);
        if (body.Length > 0)
        {
            using var doc = OpenAiRequests.ParseJson(body);
            var root = doc.RootElement;
            foreach (var name in new[] { "system", "instructions" })
            {
                if (!root.TryGetProperty(name, out var s) || s.ValueKind == JsonValueKind.Null) continue;
                if (s.ValueKind != JsonValueKind.String) throw new MixtralRequestException($"{name} must be a string", name, "invalid_type");
                system = s.GetString();
            }
            if (root.TryGetProperty("items", out var items) && items.ValueKind is not (JsonValueKind.Array or JsonValueKind.Null))
                throw new MixtralRequestException("items must be an array", "items", "invalid_type");
            if (items.ValueKind == JsonValueKind.Array && items.GetArrayLength() > 0)
                throw new MixtralRequestException("items are not supported: send the first messages with /v1/chat/completions", "items", "unsupported_parameter");
        }
        var id = ConversationIds.New(tenant);
        var key = ConversationIds.GrainKey(tenant, id)!;
        if (!string.IsNullOrEmpty(system)) service.CheckPromptLength(service.Tokenizer.Encode(system).Length);
        await ClusterAsync(() => service.Client.Conversation(key).Start(system), ctx.RequestAborted); // stored now: from here on the id exists
        await WriteJsonAsync(ctx, 200, w =>
        {
            w.WriteStartObject();
            w.WriteString("id", id);
            w.WriteString("object", "conversation");
            w.WriteNumber("created_at", DateTimeOffset.UtcNow.ToUnixTimeSeconds());
            w.WriteStartObject("metadata");
            w.WriteEndObject();
            w.WriteEndObject();
        }, id);
    });

    /// <summary>GET /v1/conversations/{id}: its messages and counts.</summary>
    public Task GetConversationAsync(HttpContext ctx, string id) => GuardAsync(ctx, "conversations", async () =>
    {
        var key = ConversationIds.GrainKey(TenantOf(ctx), id) ?? throw NotFound(id);
        var s = await ClusterAsync(() => service.Client.GetHistoryAsync(key), ctx.RequestAborted);
        await WriteJsonAsync(ctx, 200, w =>
        {
            w.WriteStartObject();
            w.WriteString("id", id);
            w.WriteString("object", "conversation");
            w.WriteStartArray("messages");
            foreach (var m in s.Messages)
            {
                w.WriteStartObject();
                w.WriteString("role", m.Role.ToString().ToLowerInvariant());
                w.WriteString("content", m.Content);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNumber("turns", s.Turns);
            w.WriteNumber("dropped_turns", s.DroppedTurns);
            w.WriteNumber("tokens", s.TokenCount);
            w.WriteNumber("cached_tokens", s.KvTokens);
            w.WriteBoolean("turn_in_progress", s.TurnInProgress is not null);
            w.WriteEndObject();
        }, id);
    });

    /// <summary>DELETE /v1/conversations/{id}: forgets its history (its system message stays).</summary>
    public Task DeleteConversationAsync(HttpContext ctx, string id) => GuardAsync(ctx, "conversations", async () =>
    {
        var key = ConversationIds.GrainKey(TenantOf(ctx), id) ?? throw NotFound(id);
        await ClusterAsync(() => service.Client.Conversation(key).Reset(), ctx.RequestAborted);
        await WriteJsonAsync(ctx, 200, w =>
        {
            w.WriteStartObject();
            w.WriteString("id", id);
            w.WriteString("object", "conversation.deleted");
            w.WriteBoolean("deleted", true);
            w.WriteEndObject();
        }, id);
    });

    /// <summary>POST /v1/conversations/{id}/cancel: cancels its running turn, if any.</summary>
    public Task CancelConversationAsync(HttpContext ctx, string id) => GuardAsync(ctx, "conversations", async () =>
    {
        var key = ConversationIds.GrainKey(TenantOf(ctx), id) ?? throw NotFound(id);
        var cancelled = await ClusterAsync(() => service.Client.CancelAsync(key), ctx.RequestAborted);
        await WriteJsonAsync(ctx, 200, w =>
        {
            w.WriteStartObject();
            w.WriteString("id", id);
            w.WriteBoolean("cancelled", cancelled);
            w.WriteEndObject();
        }, id);
    });

    /// <summary>
    /// GET /v1/conversations/{id}/stream: server-sent events of every chunk of every turn of the conversation from now on
    /// (whoever sends the turns), until the client disconnects.
    /// </summary>
    public Task SubscribeAsync(HttpContext ctx, string id) => GuardAsync(ctx, "conversations", async () =>
    {
        var key = ConversationIds.GrainKey(TenantOf(ctx), id) ?? throw NotFound(id);
        _ = await ClusterAsync(() => service.Client.FindConversationAsync(key), ctx.RequestAborted) ?? throw NotFound(id);
        var chunks = Channel.CreateBounded<TokenChunk>(new BoundedChannelOptions(8192) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true });
        var subscribing = service.Client.SubscribeAsync(key, c =>
        {
            chunks.Writer.TryWrite(c);
            return Task.CompletedTask;
        });
        IAsyncDisposable subscribed;
        try { subscribed = await subscribing.WaitAsync(TimeSpan.FromMilliseconds(options.ClusterCallTimeoutMilliseconds), ctx.RequestAborted); }
        catch (Exception) when (!subscribing.IsCompleted)
        {
            // Given up on (503, or the client left): a subscription made after all must not outlive the request.
            _ = subscribing.ContinueWith(t => t.IsCompletedSuccessfully ? t.Result.DisposeAsync().AsTask() : Task.CompletedTask, TaskScheduler.Default);
            throw;
        }
        await using var subscription = subscribed;
        var sse = new OpenAiResponses.EventStream(ctx);
        sse.Start(id);
        await sse.WriteCommentAsync("subscribed to " + id);
        // Until the client goes away, or the gateway stops (which would otherwise wait for this request).
        using var until = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted, lifetime.ApplicationStopping);
        try
        {
            await foreach (var c in chunks.Reader.ReadAllAsync(until.Token))
            {
                await sse.WriteAsync(w =>
                {
                    w.WriteStartObject();
                    w.WriteString("object", "conversation.chunk");
                    w.WriteString("conversation_id", id);
                    w.WriteNumber("turn", c.Turn);
                    w.WriteNumber("sequence", c.Sequence);
                    w.WriteString("text", c.Text);
                    if (c.End is { } end)
                    {
                        w.WriteString("finish_reason", end.Finish switch
                        {
                            FinishReason.Stop => "stop",
                            FinishReason.Length => "length",
                            FinishReason.Cancelled => "cancelled",
                            _ => "error",
                        });
                        w.WriteNumber("completion_tokens", end.Usage.CompletionTokens);
                    }
                    else w.WriteNull("finish_reason");
                    w.WriteEndObject();
                });
            }
        }
        catch (OperationCanceledException) when (until.IsCancellationRequested) { }
    });

    const string ReplyFailed = "the reply was interrupted: the engine or silo generating it failed; retry the request";

    [LoggerMessage(Level = LogLevel.Error, Message = "{Method} {Endpoint} failed")]
    static partial void LogFailed(ILogger log, string method, string endpoint, Exception error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Method} {Endpoint}: the cluster failed under the request (503)")]
    static partial void LogClusterFault(ILogger log, string method, string endpoint, Exception error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Method} {Endpoint}: refused with {Status}: {Reason}")]
    static partial void LogRefused(ILogger log, string method, string endpoint, int status, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Endpoint} ({Mode}): the reply failed: {Reason}")]
    static partial void LogReplyFailed(ILogger log, string endpoint, string mode, string? reason);
}
