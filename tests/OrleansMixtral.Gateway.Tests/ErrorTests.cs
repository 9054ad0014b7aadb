using System.ClientModel;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using OpenAI.Chat;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>Every refusal of the issue, in OpenAI's error shape, through the SDK where it can send it and over raw HTTP.</summary>
[Collection(GatewayCollection.Name)]
public sealed class ErrorTests(GatewayFixture fixture)
{
    async Task<JsonElement> PostError(string body, int status, string? code = null, string path = "/v1/chat/completions", string? key = GatewayFixture.KeyA)
    {
        using var response = await fixture.Http.SendAsync(fixture.Post(path, body, key));
        return await GatewayFixture.AssertError(response, status, code);
    }

    static async Task<ClientResultException> SdkFails(Func<Task> call, int status)
    {
        var e = await Assert.ThrowsAsync<ClientResultException>(call);
        Assert.Equal(status, e.Status);
        using var doc = JsonDocument.Parse(e.GetRawResponse()!.Content.ToString());
        Assert.False(string.IsNullOrEmpty(doc.RootElement.GetProperty("error").GetProperty("message").GetString()));
        return e;
    }

    [Fact(Timeout = 30_000)]
    public async Task Malformed_json_is_400()
    {
        await PostError("""{"model":"tiny-mixtral","messages":[{"role":"user","content":"hi"}""", 400, "invalid_json");
        await PostError("""{"model":"tiny-mixtral",}""", 400, "invalid_json");
        await PostError("", 400, "invalid_json");
        await PostError("[1,2,3]", 400, "invalid_json");
        await PostError("not json at all", 400, "invalid_json");
        // The SDK's protocol method sends any bytes.
        await SdkFails(() => fixture.Chat().CompleteChatAsync(BinaryContent.Create(BinaryData.FromString("""{"model":"tiny-mixtral","messages":[{"role":"user","content":"hi"}"""))), 400);
    }

    [Fact(Timeout = 30_000)]
    public async Task Unknown_model_is_400()
    {
        await SdkFails(() => fixture.Chat(model: "gpt-4o").CompleteChatAsync([new UserChatMessage("hi")]), 400);
        var error = await PostError("""{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}""", 400, "model_not_found");
        Assert.Equal("model", error.GetProperty("param").GetString());
        await PostError("""{"messages":[{"role":"user","content":"hi"}]}""", 400, "missing_parameter");
    }

    [Fact(Timeout = 30_000)]
    public async Task Missing_or_empty_messages_are_400()
    {
        // The SDK refuses an empty list itself; its protocol method sends the body as is.
        await SdkFails(() => fixture.Chat().CompleteChatAsync(BinaryContent.Create(BinaryData.FromString("""{"model":"tiny-mixtral","messages":[]}"""))), 400);
        await PostError("""{"model":"tiny-mixtral"}""", 400, "missing_parameter");
        await PostError("""{"model":"tiny-mixtral","messages":[]}""", 400, "invalid_messages");
        await PostError("""{"model":"tiny-mixtral","messages":null}""", 400, "missing_parameter");
        await PostError("""{"model":"tiny-mixtral","messages":[{"role":"user"}]}""", 400, "missing_parameter");
        await PostError("""{"model":"tiny-mixtral","messages":[{"content":"hi"}]}""", 400, "missing_parameter");
    }

    [Fact(Timeout = 30_000)]
    public async Task Roles_out_of_order_are_400()
    {
        var chat = fixture.Chat();
        await SdkFails(() => chat.CompleteChatAsync([new AssistantChatMessage("I start"), new UserChatMessage("hi")]), 400);
        await SdkFails(() => chat.CompleteChatAsync([new UserChatMessage("a"), new UserChatMessage("b")]), 400);
        await SdkFails(() => chat.CompleteChatAsync([new UserChatMessage("a"), new SystemChatMessage("late system")]), 400);
        await SdkFails(() => chat.CompleteChatAsync([new SystemChatMessage("only a system message")]), 400);
        await SdkFails(() => chat.CompleteChatAsync([new UserChatMessage("a"), new AssistantChatMessage("b")]), 400);
        var error = await PostError("""{"model":"tiny-mixtral","messages":[{"role":"user","content":"a"},{"role":"tool","content":"b"}]}""", 400);
        Assert.Equal("messages[1].role", error.GetProperty("param").GetString());
        await PostError("""{"model":"tiny-mixtral","messages":[{"role":"wizard","content":"a"}]}""", 400, "invalid_value");
    }

    [Theory(Timeout = 30_000)]
    [InlineData("\"max_tokens\":-1", "max_tokens")]
    [InlineData("\"max_tokens\":0", "max_tokens")]
    [InlineData("\"max_tokens\":1000000000", "max_tokens")]
    [InlineData("\"max_tokens\":99999999999999999999999", "max_tokens")]
    [InlineData("\"max_tokens\":2.5", "max_tokens")]
    [InlineData("\"max_completion_tokens\":-5", "max_completion_tokens")]
    [InlineData("\"temperature\":-0.1", "temperature")]
    [InlineData("\"temperature\":2.5", "temperature")]
    [InlineData("\"temperature\":1e400", "temperature")]
    [InlineData("\"top_p\":1.5", "top_p")]
    [InlineData("\"top_p\":-1", "top_p")]
    [InlineData("\"n\":2", "n")]
    [InlineData("\"n\":-3", "n")]
    [InlineData("\"seed\":1.5", "seed")]
    [InlineData("\"seed\":1e30", "seed")]
    [InlineData("\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]", "stop")]
    [InlineData("\"stop\":\"\"", "stop")]
    [InlineData("\"stop\":42", "stop")]
    [InlineData("\"presence_penalty\":5", "presence_penalty")]
    [InlineData("\"frequency_penalty\":1", "frequency_penalty")]
    [InlineData("\"top_k\":-7", "top_k")]
    [InlineData("\"logprobs\":true,\"top_logprobs\":50", "top_logprobs")]
    [InlineData("\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]", "tools")]
    [InlineData("\"response_format\":{\"type\":\"json_object\"}", "response_format")]
    [InlineData("\"stream\":\"yes\"", "stream")]
    public async Task Negative_or_absurd_parameters_are_400(string field, string param)
    {
        var error = await PostError($$"""{"model":"tiny-mixtral","messages":[{"role":"user","content":"hi"}],{{field}}}""", 400);
        Assert.Equal(param, error.GetProperty("param").GetString());
    }

    [Fact(Timeout = 30_000)]
    public async Task Absurd_parameters_through_the_sdk_are_400()
    {
        var chat = fixture.Chat();
        await SdkFails(() => chat.CompleteChatAsync([new UserChatMessage("hi")], new ChatCompletionOptions { MaxOutputTokenCount = -1 }), 400);
        await SdkFails(() => chat.CompleteChatAsync([new UserChatMessage("hi")], new ChatCompletionOptions { Temperature = 7f }), 400);
        await SdkFails(() => chat.CompleteChatAsync([new UserChatMessage("hi")], new ChatCompletionOptions { TopP = 3f }), 400);
    }

    [Fact(Timeout = 30_000)]
    public async Task A_prompt_longer_than_the_context_is_400()
    {
        var longText = string.Join(' ', Enumerable.Repeat("the history of the old city and its river", 200)); // ≈ 1800 tokens > 1024
        var e = await SdkFails(() => fixture.Chat().CompleteChatAsync([new UserChatMessage(longText)]), 400);
        Assert.Contains("context_length_exceeded", e.GetRawResponse()!.Content.ToString());
        await PostError($$"""{"model":"tiny-mixtral","prompt":{{JsonSerializer.Serialize(longText)}}}""", 400, "context_length_exceeded", "/v1/completions");
        // The same through a conversation.
        await PostError(GatewayFixture.ChatBody(longText, extra: ""","metadata":{"conversation_id":"new"}"""), 400, "context_length_exceeded");
    }

    [Fact(Timeout = 30_000)]
    public async Task Missing_or_unknown_key_is_401()
    {
        await SdkFails(() => fixture.Chat(key: "sk-not-a-key-of-this-server").CompleteChatAsync([new UserChatMessage("hi")]), 401);
        await PostError(GatewayFixture.ChatBody("hi"), 401, "missing_api_key", key: null);
        await PostError(GatewayFixture.ChatBody("hi"), 401, "invalid_api_key", key: "sk-wrong");
        using var models = await fixture.Http.SendAsync(fixture.Get("/v1/models", key: null));
        await GatewayFixture.AssertError(models, 401, "missing_api_key");
        // /health and /metrics need no key.
        using var health = await fixture.Http.GetAsync("/health");
        Assert.Equal(200, (int)health.StatusCode);
    }

    [Fact(Timeout = 30_000)]
    public async Task A_body_over_the_limit_is_413()
    {
        var big = GatewayFixture.ChatBody(new string('a', GatewayFixture.BodyLimit + 1000));
        await PostError(big, 413, "request_too_large");
        await SdkFails(() => fixture.Chat().CompleteChatAsync([new UserChatMessage(new string('a', GatewayFixture.BodyLimit + 1000))]), 413);
        // Without Content-Length (chunked), the limit holds while reading.
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(big))),
        };
        request.Headers.TransferEncodingChunked = true;
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", GatewayFixture.KeyA);
        using var response = await fixture.Http.SendAsync(request);
        await GatewayFixture.AssertError(response, 413, "request_too_large");
        // And the next request on the server is fine.
        using var ok = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("hi", 2)));
        Assert.Equal(200, (int)ok.StatusCode);
    }

    [Fact(Timeout = 30_000)]
    public async Task Unknown_routes_and_methods_answer_in_the_same_shape()
    {
        using var notFound = await fixture.Http.SendAsync(fixture.Get("/v1/engines"));
        await GatewayFixture.AssertError(notFound, 404);
        using var wrongMethod = await fixture.Http.SendAsync(fixture.Get("/v1/chat/completions"));
        await GatewayFixture.AssertError(wrongMethod, 405);
    }

    [Fact(Timeout = 90_000)]
    public async Task A_full_gateway_answers_429_with_Retry_After()
    {
        var (_, url) = await fixture.StartExtraGatewayAsync(new()
        {
            ["Gateway:ApiKeys:0"] = GatewayFixture.KeyA,
            ["Gateway:MaxConcurrentRequests"] = "1",
            ["Gateway:MaxQueuedRequests"] = "0",
            ["Gateway:RetryAfterSeconds"] = "2",
        });
        // Disposing a response drops its connection (no draining), as a client that goes away does.
        using var http = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = url };
        using var cts = new CancellationTokenSource();
        // One long stream holds the only slot.
        using var holder = await http.SendAsync(fixture.Post("/v1/chat/completions",
            GatewayFixture.ChatBody("Go on", 900, stream: true, extra: ""","ignore_eos":true""")), HttpCompletionOption.ResponseHeadersRead, cts.Token);
        Assert.Equal(200, (int)holder.StatusCode);

        using var refused = await http.SendAsync(fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("me too", 2)));
        await GatewayFixture.AssertError(refused, 429, "rate_limit_exceeded");
        Assert.Equal(TimeSpan.FromSeconds(2), refused.Headers.RetryAfter?.Delta);
        var sdk = new ChatClient(GatewayFixture.Model, new ApiKeyCredential(GatewayFixture.KeyA), GatewayFixture.SdkOptions(url));
        await SdkFails(() => sdk.CompleteChatAsync([new UserChatMessage("and me")]), 429);

        // The slot comes back when the stream's client goes away.
        cts.Cancel();
        holder.Dispose();
        await fixture.EngineIdle();
        await GatewayFixture.Eventually(() =>
        {
            using var health = http.Send(new HttpRequestMessage(HttpMethod.Get, "/health"));
            return JsonDocument.Parse(health.Content.ReadAsStream()).RootElement.GetProperty("active_requests").GetInt32() == 0;
        }, "the gateway to give the slot back");
        using var after = await http.SendAsync(fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("now", 2)));
        Assert.Equal(200, (int)after.StatusCode);
    }

    [Fact(Timeout = 30_000)]
    public async Task Unknown_conversation_is_404_and_a_busy_one_409()
    {
        await PostError(GatewayFixture.ChatBody("hi", extra: ""","metadata":{"conversation_id":"conv_0000"}"""), 404, "conversation_not_found");
        var request = fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("hi"));
        request.Headers.Add("X-Conversation-Id", "conv_" + new string('a', 44));
        using var response = await fixture.Http.SendAsync(request);
        await GatewayFixture.AssertError(response, 404, "conversation_not_found");

        // A second turn while the first still runs.
        using var created = await fixture.Http.SendAsync(fixture.Post("/v1/conversations", "{}"));
        var id = JsonDocument.Parse(await created.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!;
        var meta = $$""","metadata":{"conversation_id":"{{id}}"}""";
        using var first = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions",
            GatewayFixture.ChatBody("long", 600, stream: true, extra: meta + ""","ignore_eos":true""")), HttpCompletionOption.ResponseHeadersRead);
        await PostError(GatewayFixture.ChatBody("again", extra: meta), 409, "conversation_busy");
        using var cancel = await fixture.Http.SendAsync(fixture.Post($"/v1/conversations/{id}/cancel", ""));
        Assert.Equal(200, (int)cancel.StatusCode);
        var sse = await GatewayFixture.ReadSse(first);
        Assert.False(sse.Done); // a cancelled reply ends with an error event, not [DONE]
        Assert.True(sse.Events[^1].TryGetProperty("error", out var e) && e.GetProperty("code").GetString() == "cancelled");
        await fixture.EngineIdle();
    }

    [Fact(Timeout = 30_000)]
    public async Task Conflicting_conversation_names_are_400()
    {
        var request = fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("hi", extra: ""","metadata":{"conversation_id":"new"}"""));
        request.Headers.Add("X-Conversation-Id", "conv_other");
        using var response = await fixture.Http.SendAsync(request);
        await GatewayFixture.AssertError(response, 400, "conversation_mismatch");
    }
}
