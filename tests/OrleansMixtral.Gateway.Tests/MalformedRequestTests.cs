using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// Hundreds of generated bad requests (broken JSON, wrong types, huge and negative numbers, invalid UTF-8, deep nesting,
/// oversized bodies, bad prompts), sent eight at a time: each gets a 400 or 413 in OpenAI's shape, never a 5xx, and the
/// server answers correctly afterwards.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class MalformedRequestTests(GatewayFixture fixture)
{
    sealed record Case(string Kind, string Path, byte[] Body, bool Chunked = false);

    const string ValidChat = """{"model":"tiny-mixtral","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there"}],"max_tokens":1,"temperature":0.5,"top_p":0.9,"n":1,"stop":["\n\n"],"seed":7,"stream":false,"metadata":{"conversation_id":"new"}}""";
    const string ValidCompletion = """{"model":"tiny-mixtral","prompt":"Once upon a time","max_tokens":1,"temperature":0}""";

    static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);

    /// <summary>Positions in <paramref name="json"/> outside string literals (where inserted junk is always a syntax error).</summary>
    static List<int> StructuralPositions(string json)
    {
        var list = new List<int>();
        var inString = false;
        for (var i = 0; i < json.Length; i++)
        {
            var c = json[i];
            if (inString)
            {
                if (c == '\\') i++;
                else if (c == '"') inString = false;
                continue;
            }
            if (c == '"') inString = true;
            else if (c is '{' or '}' or '[' or ']' or ':' or ',') list.Add(i);
        }
        return list;
    }

    static string Replace(string json, string field, string value)
    {
        var key = $"\"{field}\":";
        var start = json.IndexOf(key, StringComparison.Ordinal);
        Assert.True(start >= 0, field);
        start += key.Length;
        // the end of the value: depth-aware scan to the next top-level ',' or '}'
        int depth = 0, i = start;
        var inString = false;
        for (; i < json.Length; i++)
        {
            var c = json[i];
            if (inString)
            {
                if (c == '\\') i++;
                else if (c == '"') inString = false;
                continue;
            }
            if (c == '"') inString = true;
            else if (c is '{' or '[') depth++;
            else if (c is '}' or ']')
            {
                if (depth == 0) break;
                depth--;
            }
            else if (c == ',' && depth == 0) break;
        }
        return json[..start] + value + json[i..];
    }

    static List<Case> Generate()
    {
        var random = new Random(20261126);
        var cases = new List<Case>();
        void Chat(string kind, string json) => cases.Add(new(kind, "/v1/chat/completions", Utf8(json)));
        void Completion(string kind, string json) => cases.Add(new(kind, "/v1/completions", Utf8(json)));

        // Broken JSON: truncations, junk at structural positions, classic mistakes.
        for (var i = 0; i < 120; i++) Chat("truncated", ValidChat[..random.Next(0, ValidChat.Length - 1)]);
        var structural = StructuralPositions(ValidChat);
        var junk = new[] { "x", "'", "\"", ",", ":", "}", "]", "{", "[", "#", "\\", "NaN", "-", "..", "//", "/*" };
        for (var i = 0; i < 120; i++)
        {
            var at = structural[random.Next(structural.Count)];
            var piece = junk[random.Next(junk.Length)];
            var json = random.Next(2) == 0 ? ValidChat[..at] + piece + ValidChat[at..] : ValidChat[..at] + piece + ValidChat[(at + 1)..];
            if (json == ValidChat) json = ValidChat[..at] + "x" + ValidChat[at..];
            Chat("junk", json);
        }
        foreach (var bad in new[]
                 {
                     "", " ", "\n", "null", "true", "123", "\"text\"", "[]", "[{}]", "{", "}", "{}}", "{'model':'tiny-mixtral'}",
                     """{"model":"tiny-mixtral","messages":[],}""", """{"model":"tiny-mixtral" "messages":[]}""", """{"model":NaN}""",
                     """{"model":Infinity}""", """{"model":"tiny-mixtral",/* c */"messages":[]}""", """{"model":"tiny-mixtral"}// x""",
                     "\uFEFF" + "{\"model\":1}", """{"a":1}{"b":2}""", """{"model":"tiny-mixtral","messages":[{"role":"user","content":"a\u"}]}""",
                 })
            Chat("broken", bad);

        // Wrong types for every field.
        var wrong = new Dictionary<string, string[]>
        {
            ["model"] = ["1", "true", "[]", "{}", "[\"tiny-mixtral\"]", "\"\"", "\"gpt-4\""],
            ["messages"] = ["\"hi\"", "1", "true", "{}", "{\"role\":\"user\"}", "[1]", "[\"hi\"]", "[[]]", "[null]"],
            ["max_tokens"] = ["\"1\"", "true", "[]", "{}", "[1]"],
            ["temperature"] = ["\"0.5\"", "false", "[]", "{}"],
            ["top_p"] = ["\"1\"", "true", "[0.9]", "{}"],
            ["n"] = ["\"1\"", "true", "[1]", "1.5"],
            ["stop"] = ["1", "true", "{}", "[1]", "[\"a\",2]", "[[\"a\"]]", "[\"\"]", "[null]"],
            ["seed"] = ["\"7\"", "true", "[]", "{}", "7.5"],
            ["stream"] = ["\"true\"", "1", "[]", "{}"],
            ["metadata"] = ["\"x\"", "1", "[]", "{\"conversation_id\":1}", "{\"a\":{}}"],
        };
        foreach (var (field, values) in wrong)
            foreach (var v in values)
                Chat("type", Replace(ValidChat, field, v));
        var message = """{"model":"tiny-mixtral","messages":[MESSAGE],"max_tokens":1}""";
        foreach (var m in new[]
                 {
                     """{"role":1,"content":"a"}""", """{"role":"user","content":1}""", """{"role":"user","content":true}""",
                     """{"role":"user","content":{}}""", """{"role":"user","content":[1]}""", """{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}""",
                     """{"role":"user","content":[{"type":"text"}]}""", """{"role":"user","content":[{"text":"a"}]}""", """{"role":"user","content":[{"type":"text","text":5}]}""",
                     """{"role":"user","content":"a","name":5}""", """{"role":"tool","content":"a"}""", """{"role":"function","content":"a"}""",
                     """{"role":"","content":"a"}""", """{"role":"USER","content":"a"}""", """{"role":"assistant","content":"a"}""",
                     """{"role":"system","content":"a"}""", """{"role":"user"}""", """{"content":"a"}""", "[]", "\"user\"", "null",
                     """{"role":"user","content":"a"},{"role":"user","content":"b"}""", """{"role":"user","content":"a"},{"role":"assistant","content":"b"}""",
                     """{"role":"user","content":"a"},{"role":"system","content":"b"}""", """{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]},{"role":"user","content":"a"}""",
                 })
            Chat("message", message.Replace("MESSAGE", m));

        // Huge and negative numbers.
        var numbers = new Dictionary<string, string[]>
        {
            ["max_tokens"] = ["-1", "0", "-2147483649", "2147483648", "1e308", "1e400", "-1e400", "99999999999999999999999999", "1025", "100000", "1.0000001"],
            ["temperature"] = ["-1", "-0.0001", "2.0001", "1e308", "1e400", "-1e400", "99999999999999999999999999"],
            ["top_p"] = ["-0.5", "1.01", "1e308", "1e400", "-1e-300"],
            ["n"] = ["0", "-1", "2", "1000000", "1e400", "99999999999999999999"],
            ["seed"] = ["1e20", "-1e20", "9223372036854775808", "-9223372036854775809", "1e400"],
        };
        foreach (var (field, values) in numbers)
            foreach (var v in values)
                Chat("number", Replace(ValidChat, field, v));
        foreach (var (field, v) in new[]
                 {
                     ("presence_penalty", "3"), ("presence_penalty", "-2.5"), ("presence_penalty", "1e400"), ("frequency_penalty", "0.5"),
                     ("frequency_penalty", "-1e308"), ("top_k", "-2"), ("top_k", "1e12"), ("top_k", "32001"), ("max_completion_tokens", "-3"),
                     ("max_completion_tokens", "1e9"), ("top_logprobs", "5"), ("top_logprobs", "21"), ("logit_bias", "{\"1\":5}"),
                     ("tools", "[{}]"), ("functions", "[{}]"), ("response_format", "{\"type\":\"json_schema\"}"), ("response_format", "\"text\""),
                     ("stream_options", "1"), ("stream_options", "{\"include_usage\":\"yes\"}"), ("ignore_eos", "\"yes\""), ("user", "5"), ("audio", "{}"),
                 })
            Chat("extra", ValidChat[..^1] + $",\"{field}\":{v}}}");

        // Invalid UTF-8 inside strings and outside them.
        var invalid = new byte[][]
        {
            [0xC3, 0x28], [0xA0, 0xA1], [0xE2, 0x28, 0xA1], [0xE2, 0x82, 0x28], [0xF0, 0x28, 0x8C, 0xBC], [0xF0, 0x90, 0x28, 0xBC],
            [0xFF], [0xFE], [0xC0, 0xAF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0x80], [0xF8, 0x88, 0x80, 0x80, 0x80], [0xC3],
        };
        foreach (var bytes in invalid)
        {
            foreach (var anchor in new[] { "Hello", "tiny-", "user", "Be brief" })
            {
                var json = ValidChat.Replace("metadata\":{\"conversation_id\":\"new\"}", "metadata\":{}");
                var at = json.IndexOf(anchor, StringComparison.Ordinal) + 2;
                cases.Add(new("utf8", "/v1/chat/completions", [.. Utf8(json[..at]), .. bytes, .. Utf8(json[at..])]));
            }
            cases.Add(new("utf8", "/v1/chat/completions", [.. bytes, .. Utf8(ValidChat)]));
            cases.Add(new("utf8", "/v1/completions", [.. Utf8(ValidCompletion[..30]), .. bytes, .. Utf8(ValidCompletion[30..])]));
        }

        // Deep nesting, in known and unknown fields.
        foreach (var depth in new[] { 33, 64, 100, 1000, 10_000, 100_000 })
        {
            Chat("deep", $$"""{"model":"tiny-mixtral","messages":{{new string('[', depth)}}{{new string(']', depth)}}}""");
            Chat("deep", $$"""{"model":"tiny-mixtral","messages":[{"role":"user","content":{{new string('[', depth)}}"x"{{new string(']', depth)}}}]}""");
            Chat("deep", ValidChat[..^1] + ",\"x\":" + string.Concat(Enumerable.Repeat("{\"a\":", depth)) + "1" + new string('}', depth) + "}");
            Chat("deep", new string('[', depth) + new string(']', depth));
            Completion("deep", $$"""{"model":"tiny-mixtral","prompt":{{new string('[', depth)}}1{{new string(']', depth)}}}""");
        }
        // Unclosed deep nesting.
        Chat("deep", new string('{', 50_000));
        Chat("deep", new string('[', 200_000));

        // Oversized bodies, with and without Content-Length.
        for (var i = 0; i < 12; i++)
        {
            var size = GatewayFixture.BodyLimit + 1 + random.Next(0, 2 * GatewayFixture.BodyLimit);
            var body = GatewayFixture.ChatBody(new string('a', size));
            cases.Add(new("oversized", "/v1/chat/completions", Utf8(body), Chunked: i % 2 == 1));
            cases.Add(new("oversized", "/v1/completions", Utf8(new string(' ', size)), Chunked: i % 3 == 0));
        }
        Chat("many", "{\"model\":\"tiny-mixtral\",\"messages\":[" + string.Join(',', Enumerable.Repeat("{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\"}", 2100)) + ",{\"role\":\"user\",\"content\":\"c\"}]}");

        // Bad completions prompts.
        foreach (var p in new[]
                 {
                     "1", "true", "{}", "[]", "[[]]", "[\"a\",\"b\"]", "[1,\"a\"]", "[-1]", "[32000]", "[1e10]", "[1.5]", "[[1],[2]]", "[[\"a\"]]",
                     "[true]", "null", "[" + string.Join(',', Enumerable.Repeat("5", 1100)) + "]",
                 })
            Completion("prompt", ValidCompletion.Replace("\"Once upon a time\"", p));
        foreach (var (field, v) in new[] { ("suffix", "\"end\""), ("echo", "1"), ("logprobs", "21"), ("best_of", "3"), ("max_tokens", "-4"), ("model", "\"davinci\""), ("n", "4") })
            Completion("completion", ValidCompletion[..^1] + $",\"{field}\":{v}}}");

        return cases;
    }

    [Fact(Timeout = 180_000)]
    public async Task Hundreds_of_malformed_requests_get_4xx_in_openai_shape_and_the_server_still_answers()
    {
        // A reference answer before.
        var probe = GatewayFixture.ChatBody("Tell me about the old city.", 10);
        using var before = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", probe));
        var reference = JsonDocument.Parse(await before.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();

        var cases = Generate();
        Assert.True(cases.Count >= 500, $"{cases.Count} cases");
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        var statuses = new System.Collections.Concurrent.ConcurrentDictionary<int, int>();
        using var http = new HttpClient { BaseAddress = fixture.BaseUrl, Timeout = TimeSpan.FromSeconds(30) };
        await Parallel.ForEachAsync(cases.Select((c, i) => (c, i)), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (item, ct) =>
        {
            var (c, i) = item;
            var content = c.Chunked ? (HttpContent)new StreamContent(new MemoryStream(c.Body)) : new ByteArrayContent(c.Body);
            content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            using var request = new HttpRequestMessage(HttpMethod.Post, c.Path) { Content = content };
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", GatewayFixture.KeyA);
            if (c.Chunked) request.Headers.TransferEncodingChunked = true;
            try
            {
                using var response = await http.SendAsync(request, ct);
                var status = (int)response.StatusCode;
                statuses.AddOrUpdate(status, 1, (_, n) => n + 1);
                var text = await response.Content.ReadAsStringAsync(ct);
                var expected = c.Body.Length > GatewayFixture.BodyLimit ? 413 : 400;
                if (c.Kind == "oversized") Assert.True(expected == 413);
                if (status != expected)
                {
                    failures.Add($"#{i} {c.Kind} {c.Path}: {status} {Clip(text)} for {Clip(Encoding.UTF8.GetString(c.Body))}");
                    return;
                }
                using var doc = JsonDocument.Parse(text);
                var error = doc.RootElement.GetProperty("error");
                if (error.GetProperty("message").GetString() is not { Length: > 0 } || error.GetProperty("type").GetString() != "invalid_request_error")
                    failures.Add($"#{i} {c.Kind}: bad error shape {Clip(text)}");
            }
            catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
            {
                failures.Add($"#{i} {c.Kind} {c.Path}: {e.GetType().Name} {e.Message}");
            }
        });
        Assert.True(failures.IsEmpty, $"{failures.Count} of {cases.Count} failed:\n" + string.Join("\n", failures.Take(30)));
        TestContext.Current.SendDiagnosticMessage($"{cases.Count} malformed requests: " + string.Join(", ", statuses.OrderBy(s => s.Key).Select(s => $"{s.Value}x{s.Key}")));

        // Still answering, and the same.
        using var after = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", probe));
        Assert.Equal(200, (int)after.StatusCode);
        Assert.Equal(reference, JsonDocument.Parse(await after.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        using var streamed = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("Tell me about the old city.", 10, stream: true)),
            HttpCompletionOption.ResponseHeadersRead);
        var sse = await GatewayFixture.ReadSse(streamed);
        Assert.True(sse.Done);
        Assert.Equal(reference, sse.Text);
        using var health = await fixture.Http.GetAsync("/health");
        Assert.Equal(200, (int)health.StatusCode);
        await fixture.EngineIdle();
        var metrics = await fixture.Http.GetStringAsync("/metrics");
        Assert.DoesNotContain("outcome=\"500\"", metrics);
    }

    static string Clip(string s) => s.Length > 160 ? s[..160] + "..." : s;
}
