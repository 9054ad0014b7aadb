using System.ClientModel.Primitives;
using System.Text;
using System.Text.Json;

namespace OrleansMixtral.Gateway.Tests;

// Inside the namespace, so that its ChatMessage and ChatRole come before OrleansMixtral's.
using OpenAI.Chat;

/// <summary>The official OpenAI .NET SDK against the running gateway: chat (whole and streamed), conversations, models.</summary>
[Collection(GatewayCollection.Name)]
public sealed class OpenAiSdkTests(GatewayFixture fixture)
{
    static ChatCompletionOptions Greedy(int maxTokens) => new() { MaxOutputTokenCount = maxTokens, Temperature = 0 };

    [Fact(Timeout = 60_000)]
    public async Task Chat_completion_whole_and_streamed_give_the_same_greedy_reply()
    {
        var chat = fixture.Chat();
        List<ChatMessage> messages = [new SystemChatMessage("You are terse."), new UserChatMessage("Tell me about the old city.")];

        ChatCompletion whole = await chat.CompleteChatAsync(messages, Greedy(12));
        Assert.Equal(ChatMessageRole.Assistant, whole.Role);
        Assert.Equal(GatewayFixture.Model, whole.Model);
        Assert.StartsWith("chatcmpl-", whole.Id);
        var text = whole.Content[0].Text;
        Assert.False(string.IsNullOrEmpty(text));
        Assert.Contains(whole.FinishReason, new[] { ChatFinishReason.Stop, ChatFinishReason.Length });
        Assert.True(whole.Usage.InputTokenCount > 5);
        Assert.InRange(whole.Usage.OutputTokenCount, 1, 12);
        Assert.Equal(whole.Usage.InputTokenCount + whole.Usage.OutputTokenCount, whole.Usage.TotalTokenCount);

        var streamed = new StringBuilder();
        ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        var updates = 0;
        await foreach (var u in chat.CompleteChatStreamingAsync(messages, Greedy(12)))
        {
            updates++;
            foreach (var part in u.ContentUpdate) streamed.Append(part.Text);
            finish ??= u.FinishReason;
            usage ??= u.Usage;
        }
        Assert.True(updates >= 3, $"{updates} updates");
        Assert.Equal(text, streamed.ToString());
        Assert.Equal(whole.FinishReason, finish);
        Assert.NotNull(usage);
        Assert.Equal(whole.Usage.OutputTokenCount, usage.OutputTokenCount);
    }

    [Fact(Timeout = 60_000)]
    public async Task Max_tokens_ends_with_length_and_ignore_eos_fills_it()
    {
        var body = GatewayFixture.ChatBody("Count for me", maxTokens: 20, extra: ""","ignore_eos":true""");
        using var response = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", body));
        var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal("length", json.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(20, json.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal("chat.completion", json.GetProperty("object").GetString());
    }

    [Fact(Timeout = 60_000)]
    public async Task Seed_makes_sampling_repeatable_and_stop_cuts_the_reply()
    {
        var chat = fixture.Chat();
        List<ChatMessage> messages = [new UserChatMessage("Write about the river and the town.")];
        ChatCompletionOptions Seeded(long seed) => new() { MaxOutputTokenCount = 24, Temperature = 1f, TopP = 0.95f, Seed = seed };
        var a = (await chat.CompleteChatAsync(messages, Seeded(1234))).Value.Content[0].Text;
        var b = (await chat.CompleteChatAsync(messages, Seeded(1234))).Value.Content[0].Text;
        Assert.Equal(a, b);
        // The same seed streamed gives the same text too (the same draws whatever the path)...
        var streamed = new System.Text.StringBuilder();
        await foreach (var update in chat.CompleteChatStreamingAsync(messages, Seeded(1234)))
            foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
        Assert.Equal(a, streamed.ToString());
        // ...and the seed is what makes it so: this is sampling, not the greedy reply, and another seed samples otherwise.
        var other = (await chat.CompleteChatAsync(messages, Seeded(4321))).Value.Content[0].Text;
        Assert.NotEqual(a, other);
        var greedy = (await chat.CompleteChatAsync(messages, new ChatCompletionOptions { MaxOutputTokenCount = 24, Temperature = 0f })).Value.Content[0].Text;
        Assert.NotEqual(a, greedy);

        // A stop string taken from the middle of the reply ends it right before.
        var words = a.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(words.Length >= 3, a);
        var stop = " " + words[2];
        var options = Seeded(1234);
        options.StopSequences.Add(stop);
        var cut = (await chat.CompleteChatAsync(messages, options)).Value;
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);
        Assert.Equal(a[..a.IndexOf(stop, StringComparison.Ordinal)], cut.Content[0].Text);
    }

    [Fact(Timeout = 90_000)]
    public async Task A_conversation_named_in_metadata_keeps_its_history_and_reuses_its_kv()
    {
        // A conversation of tenant A, made over HTTP.
        using var created = await fixture.Http.SendAsync(fixture.Post("/v1/conversations", """{"system":"Answer briefly."}"""));
        Assert.Equal(200, (int)created.StatusCode);
        var id = JsonDocument.Parse(await created.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!;
        Assert.StartsWith("conv_", id);

        var chat = fixture.Chat();
        ChatCompletionOptions Turn()
        {
            var o = Greedy(8);
            o.Metadata["conversation_id"] = id;
            return o;
        }
        // First turn: only the new user message (the system message is the conversation's).
        var first = (await chat.CompleteChatAsync([new UserChatMessage("Hello, who are you?")], Turn())).Value;
        var reply1 = first.Content[0].Text;

        // Second turn: the whole history as an OpenAI client keeps it, plus the new message.
        List<ChatMessage> history =
        [
            new SystemChatMessage("Answer briefly."),
            new UserChatMessage("Hello, who are you?"),
            new AssistantChatMessage(reply1),
            new UserChatMessage("And where do you live?"),
        ];
        var second = (await chat.CompleteChatAsync(history, Turn())).Value;
        Assert.True(second.Usage.InputTokenCount > first.Usage.InputTokenCount + first.Usage.OutputTokenCount);
        // The engine found the first turn's tokens in its KV cache.
        Assert.True(second.Usage.InputTokenDetails.CachedTokenCount >= first.Usage.InputTokenCount,
            $"cached {second.Usage.InputTokenDetails.CachedTokenCount} of {second.Usage.InputTokenCount}");

        // Third turn, streamed, with only the new message.
        var streamOptions = Turn();
        var third = new StringBuilder();
        await foreach (var u in chat.CompleteChatStreamingAsync([new UserChatMessage("Thanks!")], streamOptions))
            foreach (var part in u.ContentUpdate) third.Append(part.Text);

        using var read = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{id}"));
        var conversation = JsonDocument.Parse(await read.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(3, conversation.GetProperty("turns").GetInt32());
        var stored = conversation.GetProperty("messages").EnumerateArray()
            .Select(m => (m.GetProperty("role").GetString(), m.GetProperty("content").GetString())).ToList();
        Assert.Equal(
        [
            ("system", "Answer briefly."), ("user", "Hello, who are you?"), ("assistant", reply1),
            ("user", "And where do you live?"), ("assistant", second.Content[0].Text), ("user", "Thanks!"), ("assistant", third.ToString()),
        ], stored);

        // History that does not match the stored one is refused.
        var wrong = await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() =>
            chat.CompleteChatAsync([new UserChatMessage("Hello"), new AssistantChatMessage("not what was said"), new UserChatMessage("Hm?")], Turn()));
        Assert.Equal(400, wrong.Status);
    }

    /// <summary>Adds a header to every request (the SDK has no per-call headers).</summary>
    sealed class HeaderPolicy(string name, Func<string> value) : PipelinePolicy
    {
        public string? LastResponseValue { get; private set; }

        public override void Process(PipelineMessage message, IReadOnlyList<PipelinePolicy> pipeline, int currentIndex)
        {
            message.Request.Headers.Set(name, value());
            ProcessNext(message, pipeline, currentIndex);
            if (message.Response?.Headers.TryGetValue(name, out var v) == true) LastResponseValue = v;
        }

        public override async ValueTask ProcessAsync(PipelineMessage message, IReadOnlyList<PipelinePolicy> pipeline, int currentIndex)
        {
            message.Request.Headers.Set(name, value());
            await ProcessNextAsync(message, pipeline, currentIndex);
            if (message.Response?.Headers.TryGetValue(name, out var v) == true) LastResponseValue = v;
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task X_Conversation_Id_new_starts_a_conversation_whose_id_comes_back_in_the_header()
    {
        var current = "new";
        var policy = new HeaderPolicy("X-Conversation-Id", () => current);
        var chat = fixture.Chat(policy: policy);
        var first = (await chat.CompleteChatAsync([new UserChatMessage("Good morning")], Greedy(6))).Value;
        var id = policy.LastResponseValue;
        Assert.NotNull(id);
        Assert.StartsWith("conv_", id);
        current = id;
        var chunks = 0;
        await foreach (var u in chat.CompleteChatStreamingAsync([new UserChatMessage("Good evening")], Greedy(6))) chunks++;
        Assert.True(chunks > 0);
        Assert.Equal(id, policy.LastResponseValue);
        using var read = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{id}"));
        var conversation = JsonDocument.Parse(await read.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(2, conversation.GetProperty("turns").GetInt32());
        Assert.Equal(first.Content[0].Text, conversation.GetProperty("messages")[1].GetProperty("content").GetString());
    }

    [Fact(Timeout = 30_000)]
    public async Task Models_lists_the_served_model()
    {
        var models = (await fixture.OpenAI().GetOpenAIModelClient().GetModelsAsync()).Value;
        var model = Assert.Single(models);
        Assert.Equal(GatewayFixture.Model, model.Id);
        Assert.Equal(GatewayFixture.Model, (await fixture.OpenAI().GetOpenAIModelClient().GetModelAsync(GatewayFixture.Model)).Value.Id);
        using var missing = await fixture.Http.SendAsync(fixture.Get("/v1/models/gpt-4"));
        await GatewayFixture.AssertError(missing, 404, "model_not_found");
    }

    [Fact(Timeout = 60_000)]
    public async Task Completions_whole_and_streamed()
    {
        var body = """{"model":"tiny-mixtral","prompt":"The history of the city","max_tokens":16,"temperature":0}""";
        using var whole = await fixture.Http.SendAsync(fixture.Post("/v1/completions", body));
        Assert.Equal(200, (int)whole.StatusCode);
        var json = JsonDocument.Parse(await whole.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal("text_completion", json.GetProperty("object").GetString());
        var text = json.GetProperty("choices")[0].GetProperty("text").GetString()!;
        Assert.True(text.Length > 10, text);
        Assert.Equal(6, json.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());

        using var streamed = await fixture.Http.SendAsync(fixture.Post("/v1/completions", body.Replace("}", ""","stream":true}""")),
            HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", streamed.Content.Headers.ContentType?.MediaType);
        var sse = await GatewayFixture.ReadSse(streamed);
        Assert.True(sse.Done);
        Assert.Equal(text, sse.Text);
        Assert.NotNull(sse.FinishReason);
        Assert.Equal(json.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), sse.Usage!.Value.GetProperty("completion_tokens").GetInt32());

        // Token ids as the prompt: the same ids give the same text.
        var ids = "[1, 415, 3340, 302, 272, 2990]";
        using var byIds = await fixture.Http.SendAsync(fixture.Post("/v1/completions", $$"""{"model":"tiny-mixtral","prompt":{{ids}},"max_tokens":4,"temperature":0}"""));
        Assert.Equal(200, (int)byIds.StatusCode);
    }

    [Fact(Timeout = 60_000)]
    public async Task Stream_options_include_usage_sends_a_last_chunk_without_choices()
    {
        using var response = await fixture.Http.SendAsync(
            fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("Hi", 5, stream: true, extra: ""","stream_options":{"include_usage":true}""")),
            HttpCompletionOption.ResponseHeadersRead);
        var sse = await GatewayFixture.ReadSse(response);
        Assert.True(sse.Done);
        var first = sse.Events[0].GetProperty("choices")[0].GetProperty("delta");
        Assert.Equal("assistant", first.GetProperty("role").GetString());
        var last = sse.Events[^1];
        Assert.Equal(0, last.GetProperty("choices").GetArrayLength());
        Assert.True(last.GetProperty("usage").GetProperty("total_tokens").GetInt32() > 0);
        Assert.All(sse.Events, e => Assert.Equal("chat.completion.chunk", e.GetProperty("object").GetString()));
        Assert.Single(sse.Events.Select(e => e.GetProperty("id").GetString()).Distinct());
    }
}
