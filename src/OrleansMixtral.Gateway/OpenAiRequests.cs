using System.Text.Json;
using OrleansMixtral.Client.AI;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Gateway;

/// <summary>A parsed POST /v1/chat/completions.</summary>
public sealed record ChatRequest(
    string Model, List<ChatMessage> Messages, SamplingOptions Options, bool Stream, bool IncludeUsage, string? ConversationId);

/// <summary>A parsed POST /v1/completions: a text prompt, or token ids; <paramref name="Echo"/>: the reply's text starts with the prompt.</summary>
public sealed record CompletionRequest(string Model, string? Prompt, int[]? PromptTokens, SamplingOptions Options, bool Stream, bool IncludeUsage,
    bool Echo = false);

/// <summary>
/// Reads OpenAI request bodies field by field, so that every fault is named (OpenAI's "param") and typed: a wrong JSON
/// type, a number out of range, a feature this server does not have. Unknown fields are ignored, as most OpenAI-compatible
/// servers do. Everything throws <see cref="MixtralRequestException"/> (400).
/// </summary>
public sealed class OpenAiRequests(GatewayOptions options, int contextLength, int vocabSize, IReadOnlyCollection<string> modelNames)
{
    /// <summary>JSON nested deeper than this is refused (a chat request needs 4 levels).</summary>
    public const int MaxDepth = 32;

    public static JsonDocument ParseJson(ReadOnlyMemory<byte> body)
    {
        if (body.Length == 0) throw new MixtralRequestException("the request body is empty; send a JSON object", null, "invalid_json");
        // JSON text is UTF-8 throughout (RFC 8259). The parser checks only the strings it is asked to decode, so bytes in a
        // key or value this server never reads would pass: check the whole body once.
        if (!System.Text.Unicode.Utf8.IsValid(body.Span))
            throw new MixtralRequestException("the request body is not valid UTF-8", null, "invalid_json");
        try
        {
            var doc = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = MaxDepth, CommentHandling = JsonCommentHandling.Disallow, AllowTrailingCommas = false });
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                doc.Dispose();
                throw new MixtralRequestException("the request body must be a JSON object", null, "invalid_json");
            }
            return doc;
        }
        catch (JsonException e)
        {
            throw new MixtralRequestException($"the request body is not valid JSON ({Trim(e.Message)})", null, "invalid_json");
        }
    }

    static string Trim(string message) => message.Length > 200 ? message[..200] : message;

    public ChatRequest ReadChat(JsonElement root)
    {
        CheckTypes(root, "", ChatFields);
        var model = ReadModel(root);
        var messages = ReadMessages(root);
        RefuseChatFeatures(root);
        var (generation, stream, includeUsage) = ReadCommon(root, chat: true);
        // logprobs: true for the sampled tokens' logprobs, top_logprobs for that many alternatives at each (OpenAI: 0-20)
        var logprobs = Prop(root, "logprobs") is { } lp && ReadBool(lp, "logprobs");
        var top = Prop(root, "top_logprobs") is { } t ? ReadInt(t, "top_logprobs", 0, SamplingOptions.MaxLogprobs) : 0;
        if (top > 0 && !logprobs) throw new MixtralRequestException("top_logprobs needs logprobs: true", "top_logprobs", "invalid_value");
        if (logprobs) generation = generation with { Logprobs = top };
        string? conversation = null;
        if (Prop(root, "metadata") is { } metadata)
        {
            if (metadata.ValueKind != JsonValueKind.Object) throw Type("metadata", "an object of strings");
            foreach (var p in metadata.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String) throw Type($"metadata.{p.Name}", "a string");
                if (p.Name == "conversation_id") conversation = p.Value.GetString();
            }
        }
        return new ChatRequest(model, messages, generation, stream, includeUsage, conversation);
    }

    public CompletionRequest ReadCompletion(JsonElement root)
    {
        CheckTypes(root, "", CompletionFields);
        var model = ReadModel(root);
        if (Prop(root, "suffix") is { } suffix && GetString(suffix, "suffix").Length > 0) throw Unsupported("suffix");
        var echo = Prop(root, "echo") is { } e && ReadBool(e, "echo");
        // logprobs: N gives each token's logprob and its N likeliest alternatives (OpenAI: 0-5; here, as vLLM, up to 20); with
        // echo the prompt's tokens get theirs too
        int? logprobs = Prop(root, "logprobs") is { } lp ? ReadInt(lp, "logprobs", 0, SamplingOptions.MaxLogprobs) : null;
        if (Prop(root, "best_of") is { } bestOf && ReadInt(bestOf, "best_of", 1, 128) != 1)
            throw new MixtralRequestException("best_of must be 1", "best_of", "unsupported_parameter");
        string? text = null;
        int[]? tokens = null;
        if (Prop(root, "prompt") is not { } prompt) throw new MixtralRequestException("prompt is required", "prompt", "missing_parameter");
        switch (prompt.ValueKind)
        {
            case JsonValueKind.String:
                text = GetString(prompt, "prompt");
                break;
            case JsonValueKind.Array:
                var n = prompt.GetArrayLength();
                if (n == 0) throw new MixtralRequestException("prompt must not be an empty array", "prompt", "invalid_prompt");
                var first = prompt[0];
                if (first.ValueKind == JsonValueKind.String)
                {
                    if (n != 1) throw new MixtralRequestException("one prompt per request (n = 1): send a string or an array of one string", "prompt", "unsupported_parameter");
                    text = GetString(first, "prompt[0]");
                }
                else if (first.ValueKind == JsonValueKind.Number) tokens = ReadTokenIds(prompt, "prompt");
                else if (first.ValueKind == JsonValueKind.Array)
                {
                    if (n != 1) throw new MixtralRequestException("one prompt per request (n = 1)", "prompt", "unsupported_parameter");
                    tokens = ReadTokenIds(first, "prompt[0]");
                }
                else throw Type("prompt", "a string, an array of one string, or an array of token ids");
                break;
            default:
                throw Type("prompt", "a string, an array of one string, or an array of token ids");
        }
        var (generation, stream, includeUsage) = ReadCommon(root, chat: false);
        generation = generation with { Logprobs = logprobs, PromptLogprobs = echo ? logprobs : null };
        return new CompletionRequest(model, text, tokens, generation, stream, includeUsage, echo);
    }

    int[] ReadTokenIds(JsonElement array, string name)
    {
        var n = array.GetArrayLength();
        if (n == 0) throw new MixtralRequestException($"{name} must not be empty", name, "invalid_prompt");
        if (n >= contextLength)
            throw new MixtralRequestException($"this model's maximum context length is {contextLength} tokens; the prompt has {n}", name, "context_length_exceeded");
        var ids = new int[n];
        var i = 0;
        foreach (var e in array.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out var id)) throw Type($"{name}[{i}]", "an integer token id");
            if (id < 0 || id >= vocabSize) throw new MixtralRequestException($"{name}[{i}] = {id} is outside the vocabulary (0..{vocabSize - 1})", $"{name}[{i}]", "invalid_prompt");
            ids[i++] = id;
        }
        return ids;
    }

    string ReadModel(JsonElement root)
    {
        if (Prop(root, "model") is not { } m) throw new MixtralRequestException("model is required", "model", "missing_parameter");
        var model = GetString(m, "model");
        if (!modelNames.Contains(model))
            throw new MixtralRequestException($"the model '{Clip(model)}' does not exist; this server has {string.Join(", ", modelNames.Select(n => $"'{n}'"))}", "model", "model_not_found");
        return model;
    }

    static string Clip(string s) => s.Length > 64 ? s[..64] + "..." : s;

    List<ChatMessage> ReadMessages(JsonElement root)
    {
        if (Prop(root, "messages") is not { } messages) throw new MixtralRequestException("messages is required", "messages", "missing_parameter");
        if (messages.ValueKind != JsonValueKind.Array) throw Type("messages", "an array of messages");
        var n = messages.GetArrayLength();
        if (n == 0) throw new MixtralRequestException("messages must not be empty", "messages", "invalid_messages");
        if (n > options.MaxMessages) throw new MixtralRequestException($"at most {options.MaxMessages} messages per request", "messages", "invalid_messages");
        var list = new List<ChatMessage>(n);
        var i = 0;
        foreach (var m in messages.EnumerateArray())
        {
            var at = $"messages[{i}]";
            if (m.ValueKind != JsonValueKind.Object) throw Type(at, "an object");
            CheckTypes(m, at + ".", MessageFields);
            if (Prop(m, "role") is not { } roleElement) throw new MixtralRequestException($"{at}.role is required", $"{at}.role", "missing_parameter");
            var roleName = GetString(roleElement, $"{at}.role");
            ChatRole role = roleName switch
            {
                "system" or "developer" => ChatRole.System,
                "user" => ChatRole.User,
                "assistant" => ChatRole.Assistant,
                "tool" or "function" => throw new MixtralRequestException($"{at}: tool messages are not supported (this server has no tools)", $"{at}.role", "unsupported_parameter"),
                _ => throw new MixtralRequestException($"{at}.role must be system, developer, user or assistant, not '{Clip(roleName)}'", $"{at}.role", "invalid_value"),
            };
            if (Prop(m, "tool_calls") is { ValueKind: JsonValueKind.Array } calls && calls.GetArrayLength() > 0)
                throw new MixtralRequestException($"{at}: tool calls are not supported", $"{at}.tool_calls", "unsupported_parameter");
            if (Prop(m, "name") is { } name && name.ValueKind != JsonValueKind.String) throw Type($"{at}.name", "a string");
            list.Add(new ChatMessage(role, ReadContent(m, at)));
            i++;
        }
        return list;
    }

    static string ReadContent(JsonElement message, string at)
    {
        if (Prop(message, "content") is not { } content) throw new MixtralRequestException($"{at}.content is required", $"{at}.content", "missing_parameter");
        switch (content.ValueKind)
        {
            case JsonValueKind.String:
                return GetString(content, $"{at}.content");
            case JsonValueKind.Array:
                var text = new System.Text.StringBuilder();
                var j = 0;
                foreach (var part in content.EnumerateArray())
                {
                    var p = $"{at}.content[{j++}]";
                    if (part.ValueKind != JsonValueKind.Object) throw Type(p, "a content part object");
                    CheckTypes(part, p + ".", PartFields);
                    var type = Prop(part, "type") is { } t ? GetString(t, $"{p}.type") : throw new MixtralRequestException($"{p}.type is required", $"{p}.type", "missing_parameter");
                    if (type is not ("text" or "input_text"))
                        throw new MixtralRequestException($"{p}: content parts of type '{Clip(type)}' are not supported (text only)", $"{p}.type", "unsupported_parameter");
                    text.Append(Prop(part, "text") is { } tx ? GetString(tx, $"{p}.text") : throw new MixtralRequestException($"{p}.text is required", $"{p}.text", "missing_parameter"));
                }
                return text.ToString();
            default:
                throw Type($"{at}.content", "a string or an array of text parts");
        }
    }

    static void RefuseChatFeatures(JsonElement root)
    {
        foreach (var name in new[] { "tools", "functions" })
            if (Prop(root, name) is { } tools && (tools.ValueKind != JsonValueKind.Array || tools.GetArrayLength() > 0)) throw Unsupported(name);
        if (Prop(root, "response_format") is { } format)
        {
            if (format.ValueKind != JsonValueKind.Object) throw Type("response_format", "an object");
            if (Prop(format, "type") is not { ValueKind: JsonValueKind.String } type || type.GetString() != "text")
                throw new MixtralRequestException("only response_format {\"type\": \"text\"} is supported", "response_format", "unsupported_parameter");
        }
        if (Prop(root, "audio") is not null) throw Unsupported("audio");
    }

    (SamplingOptions Options, bool Stream, bool IncludeUsage) ReadCommon(JsonElement root, bool chat)
    {
        var stream = Prop(root, "stream") is { } s && ReadBool(s, "stream");
        var includeUsage = false;
        if (Prop(root, "stream_options") is { } so)
        {
            if (so.ValueKind != JsonValueKind.Object) throw Type("stream_options", "an object");
            if (Prop(so, "include_usage") is { } iu) includeUsage = ReadBool(iu, "stream_options.include_usage");
        }
        if (Prop(root, "n") is { } nElement)
        {
            var n = ReadInt(nElement, "n", 1, 128);
            if (n != 1) throw new MixtralRequestException("n must be 1 (one choice per request)", "n", "unsupported_parameter");
        }
        int? maxTokens = null;
        foreach (var name in chat ? new[] { "max_completion_tokens", "max_tokens" } : ["max_tokens"])
        {
            if (maxTokens is null && Prop(root, name) is { } mt) maxTokens = ReadInt(mt, name, 1, contextLength);
        }
        // unset fields keep SamplingOptions' defaults; its Check is the one validation of the ranges (top_p 0: greedy)
        var defaults = new SamplingOptions();
        var temperature = Prop(root, "temperature") is { } t ? ReadFloat(t, "temperature", 0, SamplingOptions.MaxTemperature) : defaults.Temperature;
        var topP = Prop(root, "top_p") is { } p ? ReadFloat(p, "top_p", 0, 1) : defaults.TopP;
        var topK = Prop(root, "top_k") is { } k ? ReadInt(k, "top_k", -1, vocabSize) : 0;
        if (topK < 0) topK = 0; // vLLM's "-1 = off"
        foreach (var name in new[] { "presence_penalty", "frequency_penalty" })
        {
            if (Prop(root, name) is { } penalty && ReadFloat(penalty, name, -2, 2) != 0)
                throw new MixtralRequestException($"{name} is not supported (only 0)", name, "unsupported_parameter");
        }
        if (Prop(root, "logit_bias") is { } bias && (bias.ValueKind != JsonValueKind.Object || bias.EnumerateObject().Any())) throw Unsupported("logit_bias");
        ulong? seed = null;
        if (Prop(root, "seed") is { } seedElement)
        {
            if (seedElement.ValueKind != JsonValueKind.Number || !seedElement.TryGetInt64(out var sv)) throw Type("seed", "an integer (64-bit)");
            seed = unchecked((ulong)sv);
        }
        var stop = ReadStop(root);
        var ignoreEos = Prop(root, "ignore_eos") is { } ie && ReadBool(ie, "ignore_eos");
        if (Prop(root, "user") is { } user && user.ValueKind != JsonValueKind.String) throw Type("user", "a string");
        var sampling = defaults with
        {
            MaxTokens = maxTokens,
            Temperature = temperature,
            TopP = topP,
            TopK = topK,
            Seed = seed,
            StopStrings = stop,
            IgnoreEos = ignoreEos,
        };
        if (sampling.Check() is { } bad) throw new MixtralRequestException(bad.Message, bad.Param, "invalid_value");
        return (sampling, stream, includeUsage);
    }

    List<string> ReadStop(JsonElement root)
    {
        if (Prop(root, "stop") is not { } stop) return [];
        var list = new List<string>();
        if (stop.ValueKind == JsonValueKind.String) list.Add(GetString(stop, "stop"));
        else if (stop.ValueKind == JsonValueKind.Array)
        {
            if (stop.GetArrayLength() > options.MaxStopStrings)
                throw new MixtralRequestException($"at most {options.MaxStopStrings} stop strings", "stop", "invalid_value");
            var i = 0;
            foreach (var e in stop.EnumerateArray()) list.Add(GetString(e, $"stop[{i++}]"));
        }
        else throw Type("stop", "a string or an array of strings");
        foreach (var s in list)
        {
            if (s.Length == 0) throw new MixtralRequestException("stop strings must not be empty", "stop", "invalid_value");
            if (s.Length > options.MaxStopLength) throw new MixtralRequestException($"stop strings are at most {options.MaxStopLength} characters", "stop", "invalid_value");
        }
        return list;
    }

    // ---- the JSON type of every field read, checked in one place before any is read ----

    [Flags]
    enum Kinds { String = 1, Number = 2, Bool = 4, Array = 8, Object = 16 }

    /// <summary>A field's JSON types and how an error names them.</summary>
    readonly record struct FieldType(Kinds Kinds, string Expected);

    static readonly FieldType AString = new(Kinds.String, "a string"), ANumber = new(Kinds.Number, "a number"),
        AnInteger = new(Kinds.Number, "an integer"), ABool = new(Kinds.Bool, "a boolean"), AnObject = new(Kinds.Object, "an object"),
        AnArray = new(Kinds.Array, "an array");

    /// <summary>Fields both endpoints read.</summary>
    static readonly Dictionary<string, FieldType> CommonFields = new()
    {
        ["model"] = AString,
        ["stream"] = ABool,
        ["stream_options"] = AnObject,
        ["n"] = AnInteger,
        ["max_tokens"] = AnInteger,
        ["temperature"] = ANumber,
        ["top_p"] = ANumber,
        ["top_k"] = AnInteger,
        ["presence_penalty"] = ANumber,
        ["frequency_penalty"] = ANumber,
        ["logit_bias"] = new(Kinds.Object, "an object of token ids to biases"),
        ["seed"] = new(Kinds.Number, "an integer (64-bit)"),
        ["stop"] = new(Kinds.String | Kinds.Array, "a string or an array of strings"),
        ["ignore_eos"] = ABool,
        ["user"] = AString,
    };

    static readonly Dictionary<string, FieldType> ChatFields = new(CommonFields)
    {
        ["messages"] = new(Kinds.Array, "an array of messages"),
        ["metadata"] = new(Kinds.Object, "an object of strings"),
        ["max_completion_tokens"] = AnInteger,
        ["tools"] = AnArray,
        ["functions"] = AnArray,
        ["logprobs"] = ABool,
        ["top_logprobs"] = AnInteger,
        ["response_format"] = AnObject,
        ["audio"] = AnObject,
    };

    static readonly Dictionary<string, FieldType> CompletionFields = new(CommonFields)
    {
        ["prompt"] = new(Kinds.String | Kinds.Array, "a string, an array of one string, or an array of token ids"),
        ["suffix"] = AString,
        ["echo"] = ABool,
        ["logprobs"] = AnInteger,
        ["best_of"] = AnInteger,
    };

    static readonly Dictionary<string, FieldType> MessageFields = new()
    {
        ["role"] = AString,
        ["content"] = new(Kinds.String | Kinds.Array, "a string or an array of text parts"),
        ["name"] = AString,
        ["tool_calls"] = AnArray,
    };

    static readonly Dictionary<string, FieldType> PartFields = new()
    {
        ["type"] = AString,
        ["text"] = AString,
    };

    /// <summary>
    /// Throws invalid_type (param = <paramref name="prefix"/> + the field) for the first field of <paramref name="fields"/>
    /// whose JSON type is not one it takes; null counts as not given, and fields not listed are not read at all.
    /// </summary>
    static void CheckTypes(JsonElement obj, string prefix, Dictionary<string, FieldType> fields)
    {
        foreach (var (name, type) in fields)
        {
            if (!obj.TryGetProperty(name, out var value)) continue;
            var kind = value.ValueKind switch
            {
                JsonValueKind.Null => (Kinds)0,
                JsonValueKind.String => Kinds.String,
                JsonValueKind.Number => Kinds.Number,
                JsonValueKind.True or JsonValueKind.False => Kinds.Bool,
                JsonValueKind.Array => Kinds.Array,
                _ => Kinds.Object,
            };
            if (kind != 0 && (type.Kinds & kind) == 0) throw Type(prefix + name, type.Expected);
        }
    }

    /// <summary>A property, or null when it is missing or JSON null (OpenAI treats null as "not given").</summary>
    static JsonElement? Prop(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var value) && value.ValueKind != JsonValueKind.Null ? value : null;

    static string GetString(JsonElement e, string name)
    {
        if (e.ValueKind != JsonValueKind.String) throw Type(name, "a string");
        try { return e.GetString()!; }
        catch (InvalidOperationException) { throw new MixtralRequestException($"{name} is not valid UTF-8", name, "invalid_json"); }
    }

    static bool ReadBool(JsonElement e, string name) => e.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => throw Type(name, "a boolean"),
    };

    static int ReadInt(JsonElement e, string name, int min, int max)
    {
        if (e.ValueKind != JsonValueKind.Number) throw Type(name, "an integer");
        if (!e.TryGetInt64(out var v))
        {
            // 1e3 is an integer too; 1.5 and 1e400 are not.
            if (!e.TryGetDouble(out var d) || !double.IsFinite(d) || d != Math.Floor(d) || Math.Abs(d) > long.MaxValue)
                throw new MixtralRequestException($"{name} must be an integer in [{min}, {max}]", name, "invalid_value");
            v = (long)d;
        }
        if (v < min || v > max) throw new MixtralRequestException($"{name} must be in [{min}, {max}], got {v}", name, "invalid_value");
        return (int)v;
    }

    static float ReadFloat(JsonElement e, string name, double min, double max)
    {
        if (e.ValueKind != JsonValueKind.Number) throw Type(name, "a number");
        if (!e.TryGetDouble(out var d) || !double.IsFinite(d) || d < min || d > max)
            throw new MixtralRequestException($"{name} must be a number in [{min}, {max}]", name, "invalid_value");
        return (float)d;
    }

    static MixtralRequestException Type(string name, string expected) => new($"{name} must be {expected}", name, "invalid_type");

    static MixtralRequestException Unsupported(string name) => new($"{name} is not supported by this server", name, "unsupported_parameter");
}
