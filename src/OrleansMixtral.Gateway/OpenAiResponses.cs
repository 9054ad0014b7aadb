using System.Buffers;
using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.AspNetCore.Http.Features;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Gateway;

/// <summary>An error answered in OpenAI's shape: <c>{"error": {"message", "type", "param", "code"}}</c>.</summary>
public sealed class GatewayException(int status, string message, string? code, string? param = null, string? type = null) : Exception(message)
{
    public int Status { get; } = status;
    public string? Code { get; } = code;
    public string? Param { get; } = param;
    public string Type { get; } = type ?? OpenAiResponses.ErrorType(status);
}

/// <summary>Writes OpenAI's response bodies: errors, chat completions and completions, whole or as server-sent events.</summary>
public static class OpenAiResponses
{
    /// <summary>
    /// How every JSON body of the gateway is written: UTF-8 as it is, escaping what JSON requires (\" and \\, control
    /// characters) but not what could matter inside HTML (the default writes ' as \u0027, " as \u0022, &lt; &gt; &amp; +
    /// and all non-ASCII as \u escapes): these bodies are for API clients, never embedded in a page.
    /// </summary>
    public static readonly JsonWriterOptions JsonOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static string ErrorType(int status) => status switch
    {
        429 => "rate_limit_error",
        >= 500 => "server_error",
        _ => "invalid_request_error",
    };

    public static async Task WriteErrorAsync(HttpContext ctx, int status, string message, string? code, string? param = null, string? type = null,
        int? retryAfterSeconds = null)
    {
        if (ctx.Response.HasStarted) return;
        ctx.Response.Clear();
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        if (retryAfterSeconds is { } retry) ctx.Response.Headers.RetryAfter = retry.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buffer, JsonOptions))
        {
            w.WriteStartObject();
            WriteError(w, message, type ?? ErrorType(status), param, code);
            w.WriteEndObject();
        }
        ctx.Response.ContentLength = buffer.WrittenCount; // whole, not chunked: also for a client that reads only to Content-Length
        try { await ctx.Response.Body.WriteAsync(buffer.WrittenMemory, ctx.RequestAborted); }
        catch (OperationCanceledException) { }
    }

    static void WriteError(Utf8JsonWriter w, string message, string type, string? param, string? code)
    {
        w.WriteStartObject("error");
        w.WriteString("message", message);
        w.WriteString("type", type);
        if (param is null) w.WriteNull("param"); else w.WriteString("param", param);
        if (code is null) w.WriteNull("code"); else w.WriteString("code", code);
        w.WriteEndObject();
    }

    public static string FinishReason(OrleansMixtral.FinishReason finish) => finish == OrleansMixtral.FinishReason.Length ? "length" : "stop";

    /// <summary>The one mapping of <see cref="TokenUsage"/> to OpenAI's <c>usage</c> object (replies, chunks, completions).</summary>
    /// <param name="chat">A chat reply (a conversation's turn or a whole history): the usage also says how many of its
    /// oldest turns the prompt left out.</param>
    static void WriteUsage(Utf8JsonWriter w, TokenUsage usage, bool chat)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", usage.PromptTokens);
        w.WriteNumber("completion_tokens", usage.CompletionTokens);
        w.WriteNumber("total_tokens", usage.TotalTokens);
        w.WriteStartObject("prompt_tokens_details");
        w.WriteNumber("cached_tokens", usage.CachedPromptTokens);
        w.WriteEndObject();
        if (chat) w.WriteNumber("dropped_turns", usage.DroppedTurns);
        w.WriteEndObject();
    }

    /// <summary>What one reply's JSON looks like: a chat completion or a (legacy) text completion.</summary>
    public sealed class Reply(bool chat, string id, long created, string model, string? conversationId)
    {
        public bool Chat { get; } = chat;
        /// <summary>The reply's logprobs when the request asked for them (written with its text), else null.</summary>
        public ReplyLogprobs? Logprobs { get; init; }

        void Header(Utf8JsonWriter w, bool chunk)
        {
            w.WriteString("id", id);
            w.WriteString("object", Chat ? chunk ? "chat.completion.chunk" : "chat.completion" : "text_completion");
            w.WriteNumber("created", created);
            w.WriteString("model", model);
            w.WriteString("system_fingerprint", "orleansmixtral");
            if (conversationId is not null) w.WriteString("conversation_id", conversationId);
        }

        /// <summary>The whole reply (stream = false).</summary>
        public void WriteFull(Utf8JsonWriter w, string text, TurnEnd end)
        {
            w.WriteStartObject();
            Header(w, chunk: false);
            w.WriteStartArray("choices");
            w.WriteStartObject();
            w.WriteNumber("index", 0);
            if (Chat)
            {
                w.WriteStartObject("message");
                w.WriteString("role", "assistant");
                w.WriteString("content", text);
                w.WriteNull("refusal");
                w.WriteEndObject();
            }
            else w.WriteString("text", text);
            if (Logprobs is { } logprobs) logprobs.WriteAll(w, "logprobs");
            else w.WriteNull("logprobs");
            w.WriteString("finish_reason", FinishReason(end.Finish));
            w.WriteEndObject();
            w.WriteEndArray();
            WriteUsage(w, end.Usage, Chat);
            w.WriteEndObject();
        }

        /// <summary>
        /// One event of a streamed reply: the first carries the assistant role (chat), the last the finish reason (and the
        /// usage unless a separate usage event follows), and a usage event has no choices (stream_options.include_usage).
        /// </summary>
        public void WriteChunk(Utf8JsonWriter w, string? text, bool first, TurnEnd? end, bool usageInline, bool usageOnly = false)
        {
            w.WriteStartObject();
            Header(w, chunk: true);
            w.WriteStartArray("choices");
            if (!usageOnly)
            {
                w.WriteStartObject();
                w.WriteNumber("index", 0);
                if (Chat)
                {
                    w.WriteStartObject("delta");
                    if (first) w.WriteString("role", "assistant");
                    if (text is not null) w.WriteString("content", text);
                    w.WriteEndObject();
                }
                else w.WriteString("text", text ?? "");
                if (Logprobs is { } logprobs) logprobs.WriteNew(w, "logprobs");
                else w.WriteNull("logprobs");
                if (end is null) w.WriteNull("finish_reason"); else w.WriteString("finish_reason", FinishReason(end.Finish));
                w.WriteEndObject();
            }
            w.WriteEndArray();
            if (end is not null && (usageInline || usageOnly)) WriteUsage(w, end.Usage, Chat);
            w.WriteEndObject();
        }
    }

    /// <summary>Server-sent events: "data: JSON" blocks, flushed one by one.</summary>
    public sealed class EventStream(HttpContext ctx)
    {
        static readonly byte[] Data = "data: "u8.ToArray();
        static readonly byte[] End = "\n\n"u8.ToArray();
        readonly ArrayBufferWriter<byte> _buffer = new(1024);

        public void Start(string? conversationId)
        {
            ctx.Response.StatusCode = 200;
            ctx.Response.ContentType = "text/event-stream; charset=utf-8";
            ctx.Response.Headers.CacheControl = "no-cache";
            ctx.Response.Headers["X-Accel-Buffering"] = "no";
            if (conversationId is not null) ctx.Response.Headers[GatewayHost.ConversationHeader] = conversationId;
            ctx.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        }

        public async Task WriteAsync(Action<Utf8JsonWriter> write)
        {
            _buffer.ResetWrittenCount();
            _buffer.Write(Data);
            using (var w = new Utf8JsonWriter(_buffer, JsonOptions)) write(w);
            _buffer.Write(End);
            await ctx.Response.Body.WriteAsync(_buffer.WrittenMemory, ctx.RequestAborted);
            await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
        }

        public Task WriteErrorAsync(string message, string code) => WriteAsync(w =>
        {
            w.WriteStartObject();
            WriteError(w, message, "server_error", null, code);
            w.WriteEndObject();
        });

        public async Task WriteDoneAsync()
        {
            await ctx.Response.Body.WriteAsync("data: [DONE]\n\n"u8.ToArray(), ctx.RequestAborted);
            await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
        }

        public async Task WriteCommentAsync(string comment)
        {
            await ctx.Response.Body.WriteAsync(System.Text.Encoding.UTF8.GetBytes(": " + comment + "\n\n"), ctx.RequestAborted);
            await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
        }
    }
}
