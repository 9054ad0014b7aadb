using System.Text;
using System.Text.Json;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// Every field the gateway reads, sent with each JSON type it does not take: 400 <c>invalid_type</c> naming the field,
/// never a 500 and never silently ignored. And invalid UTF-8 anywhere in a body, unknown keys included, is 400.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class RequestTypeTests(GatewayFixture fixture)
{
    const string Chat = "/v1/chat/completions", Completions = "/v1/completions";
    const string ChatBase = """{"model":"tiny-mixtral","messages":[{"role":"user","content":"hi"}],"max_tokens":1""";
    const string CompletionBase = """{"model":"tiny-mixtral","prompt":"Once","max_tokens":1""";

    /// <summary>A value of each JSON type, by the letter the field lists below use.</summary>
    static readonly Dictionary<char, string> Samples = new()
    {
        ['s'] = "\"x\"", ['n'] = "1", ['b'] = "true", ['a'] = "[]", ['o'] = "{}",
    };

    /// <summary>The fields both endpoints read, with the JSON types each takes (s string, n number, b boolean, a array, o object).</summary>
    static readonly (string Field, string Takes)[] Common =
    [
        ("stream", "b"), ("stream_options", "o"), ("n", "n"), ("max_tokens", "n"), ("temperature", "n"), ("top_p", "n"),
        ("top_k", "n"), ("presence_penalty", "n"), ("frequency_penalty", "n"), ("logit_bias", "o"), ("seed", "n"),
        ("stop", "sa"), ("ignore_eos", "b"), ("user", "s"),
    ];

    static readonly (string Field, string Takes)[] ChatOnly =
    [
        ("messages", "a"), ("metadata", "o"), ("max_completion_tokens", "n"), ("tools", "a"), ("functions", "a"),
        ("logprobs", "b"), ("top_logprobs", "n"), ("response_format", "o"), ("audio", "o"),
    ];

    static readonly (string Field, string Takes)[] CompletionOnly =
    [
        ("prompt", "sa"), ("suffix", "s"), ("echo", "b"), ("logprobs", "n"), ("best_of", "n"),
    ];

    /// <summary>Fields of a message and of a content part.</summary>
    static readonly (string Field, string Takes)[] MessageFields = [("role", "s"), ("content", "sa"), ("name", "s"), ("tool_calls", "a")];
    static readonly (string Field, string Takes)[] PartFields = [("type", "s"), ("text", "s")];

    static IEnumerable<(string Path, string Body, string Param)> Cases()
    {
        foreach (var (field, takes) in Common.Concat(ChatOnly))
            foreach (var (kind, value) in Samples)
                if (!takes.Contains(kind)) yield return (Chat, Set(ChatBase, field, value), field);
        foreach (var (field, takes) in Common.Concat(CompletionOnly))
            foreach (var (kind, value) in Samples)
                if (!takes.Contains(kind)) yield return (Completions, Set(CompletionBase, field, value), field);
        foreach (var (field, takes) in MessageFields)
            foreach (var (kind, value) in Samples)
            {
                if (takes.Contains(kind)) continue;
                var message = new Dictionary<string, string> { ["role"] = "\"user\"", ["content"] = "\"hi\"", [field] = value };
                var json = "{" + string.Join(',', message.Select(p => $"\"{p.Key}\":{p.Value}")) + "}";
                yield return (Chat, $$"""{"model":"tiny-mixtral","messages":[{{json}}],"max_tokens":1}""", $"messages[0].{field}");
            }
        foreach (var (field, takes) in PartFields)
            foreach (var (kind, value) in Samples)
            {
                if (takes.Contains(kind)) continue;
                var part = new Dictionary<string, string> { ["type"] = "\"text\"", ["text"] = "\"hi\"", [field] = value };
                var json = "{" + string.Join(',', part.Select(p => $"\"{p.Key}\":{p.Value}")) + "}";
                yield return (Chat, $$"""{"model":"tiny-mixtral","messages":[{"role":"user","content":[{{json}}]}],"max_tokens":1}""", $"messages[0].content[0].{field}");
            }
    }

    /// <summary><paramref name="body"/> (an object left open) with <paramref name="field"/> set, replacing a field of that name.</summary>
    static string Set(string body, string field, string value)
    {
        var key = $"\"{field}\":";
        var at = body.IndexOf(key, StringComparison.Ordinal);
        if (at < 0) return body + $",{key}{value}}}";
        // the bases hold only simple values: the old one ends at the next top-level ',' (or the end)
        var end = body.IndexOf(",\"", at + key.Length, StringComparison.Ordinal);
        if (field == "messages" || field == "prompt") end = body.IndexOf(",\"max_tokens\"", StringComparison.Ordinal);
        return body[..(at + key.Length)] + value + (end < 0 ? "" : body[end..]) + "}";
    }

    [Fact(Timeout = 60_000)]
    public async Task Every_field_of_the_wrong_JSON_type_is_400_invalid_type_naming_it()
    {
        var cases = Cases().ToList();
        var failures = new List<string>();
        foreach (var (path, body, param) in cases)
        {
            using var response = await fixture.Http.SendAsync(fixture.Post(path, body));
            var text = await response.Content.ReadAsStringAsync();
            string? code = null, named = null;
            try
            {
                using var doc = JsonDocument.Parse(text);
                var error = doc.RootElement.GetProperty("error");
                code = error.GetProperty("code").GetString();
                named = error.GetProperty("param").GetString();
            }
            catch (Exception) { }
            if ((int)response.StatusCode != 400 || code != "invalid_type" || named != param)
                failures.Add($"{path} {body}: {(int)response.StatusCode} code={code} param={named} (expected invalid_type, {param})");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {cases.Count}:\n" + string.Join('\n', failures));
    }

    [Fact(Timeout = 30_000)]
    public async Task The_right_types_still_work()
    {
        using var chat = await fixture.Http.SendAsync(fixture.Post(Chat,
            ChatBase + ""","top_logprobs":0,"logprobs":false,"tools":[],"logit_bias":{},"user":"u","stream_options":null}"""));
        Assert.Equal(200, (int)chat.StatusCode);
        using var completion = await fixture.Http.SendAsync(fixture.Post(Completions,
            CompletionBase + ""","best_of":1,"suffix":"","echo":false,"logprobs":0}"""));
        Assert.Equal(200, (int)completion.StatusCode);
        // A non-empty suffix is a feature this server does not have.
        using var suffix = await fixture.Http.SendAsync(fixture.Post(Completions, CompletionBase + ""","suffix":"the end"}"""));
        var error = await GatewayFixture.AssertError(suffix, 400, "unsupported_parameter");
        Assert.Equal("suffix", error.GetProperty("param").GetString());
    }

    [Fact(Timeout = 30_000)]
    public async Task Invalid_UTF8_in_an_unknown_key_or_its_value_is_400()
    {
        byte[][] invalid = [[0xC3, 0x28], [0xFF], [0xED, 0xA0, 0x80], [0xC0, 0xAF], [0x80]];
        foreach (var bytes in invalid)
        {
            byte[][] bodies =
            [
                [.. "{\"x"u8, .. bytes, .. "y\":1,"u8, .. Encoding.UTF8.GetBytes(ChatBase[1..]), .. "}"u8],           // an unknown key
                [.. Encoding.UTF8.GetBytes(ChatBase), .. ",\"x"u8, .. bytes, .. "\":1}"u8],                       // another unknown key
                [.. Encoding.UTF8.GetBytes(ChatBase), .. ",\"extra\":\"a"u8, .. bytes, .. "\"}"u8],               // an unknown key's value
                [.. Encoding.UTF8.GetBytes(ChatBase), .. ",\"extra\":{\"k"u8, .. bytes, .. "\":[\"v\"]}}"u8],     // a key nested in one
                [.. Encoding.UTF8.GetBytes(ChatBase), .. ",\"metadata\":{\"k"u8, .. bytes, .. "\":\"v\"}}"u8],    // a metadata key
            ];
            foreach (var body in bodies)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, Chat) { Content = new ByteArrayContent(body) };
                request.Content.Headers.ContentType = new("application/json");
                request.Headers.Authorization = new("Bearer", GatewayFixture.KeyA);
                using var response = await fixture.Http.SendAsync(request);
                await GatewayFixture.AssertError(response, 400, "invalid_json");
            }
        }
    }
}
