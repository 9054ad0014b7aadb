using System.Text.Json;

namespace OrleansMixtral.Gateway.Tests;

// Inside the namespace, so that its ChatMessage and ChatRole come before OrleansMixtral's.
using OpenAI.Chat;

/// <summary>
/// logprobs/top_logprobs (chat) and logprobs/echo (completions), whole and streamed, read with the official SDK and raw:
/// the values are the engine's log-softmax, checked against Hugging Face's logits of the tiny model and against a CPU
/// backend of the test's own.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class LogprobsTests(GatewayFixture fixture) : IDisposable
{
    readonly CpuReference _cpu = new();
    static Tokenization.MistralTokenizer Tokenizer => CpuReference.Tokenizer;

    public void Dispose() => _cpu.Dispose();

    // The silo's engine and the test's backend compute the same logits up to rounding; Hugging Face's differ by up to
    // 1e-4 of the largest logit (HuggingFaceParityTests): a few 1e-3 in logprobs.
    const double CpuTolerance = 1e-4, HfTolerance = 3e-3;

    [Fact(Timeout = 60_000)]
    public async Task The_SDK_reads_chat_logprobs_whole_and_streamed_and_they_are_the_log_softmax_of_each_step()
    {
        var chat = fixture.Chat();
        List<ChatMessage> messages = [new UserChatMessage("Tell me about the old city.")];
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 8, Temperature = 0, IncludeLogProbabilities = true, TopLogProbabilityCount = 3 };

        ChatCompletion whole = await chat.CompleteChatAsync(messages, options);
        var logprobs = whole.ContentTokenLogProbabilities;
        Assert.Equal(whole.Usage.OutputTokenCount, logprobs.Count);
        Assert.True(logprobs.Count > 0);

        var prompt = Tokenizer.EncodeChat([new OrleansMixtral.ChatMessage(OrleansMixtral.ChatRole.User, "Tell me about the old city.")]);
        var generated = _cpu.Greedy(prompt, logprobs.Count);
        for (var i = 0; i < logprobs.Count; i++)
        {
            var reference = _cpu.NextLogprobs([.. prompt, .. generated[..i]]);
            var lp = logprobs[i];
            Assert.Equal(Tokenizer.TokenText(generated[i]), lp.Token);
            Assert.Equal(Tokenizer.TokenBytes(generated[i]), lp.Utf8Bytes!.Value.ToArray());
            Assert.True(Math.Abs(reference[generated[i]] - lp.LogProbability) <= CpuTolerance, $"token {i}: {lp.LogProbability} vs {reference[generated[i]]}");
            var top = CpuReference.Top(reference, 3);
            Assert.Equal(3, lp.TopLogProbabilities.Count);
            for (var k = 0; k < 3; k++) Assert.True(Math.Abs(top[k] - lp.TopLogProbabilities[k].LogProbability) <= CpuTolerance);
            Assert.Equal(lp.Token, lp.TopLogProbabilities[0].Token); // greedy took the best
        }
        Assert.Equal(whole.Content[0].Text, Tokenizer.Decode(generated[..logprobs.Count]));

        var streamed = new List<ChatTokenLogProbabilityDetails>();
        await foreach (var u in chat.CompleteChatStreamingAsync(messages, options)) streamed.AddRange(u.ContentTokenLogProbabilities);
        Assert.Equal(logprobs.Select(l => (l.Token, l.LogProbability)), streamed.Select(l => (l.Token, l.LogProbability)));
        Assert.Equal(logprobs.Select(l => l.TopLogProbabilities.Count), streamed.Select(l => l.TopLogProbabilities.Count));
    }

    [Fact(Timeout = 60_000)]
    public async Task Chat_logprobs_are_the_log_softmax_of_the_Hugging_Face_logits()
    {
        // prompt 8 of the fixtures: a user turn under the chat template, whose next-token logits Hugging Face recorded
        var (ids, messages) = CpuReference.HfPrompt(8);
        Assert.Equal(ids, Tokenizer.EncodeChat([.. messages.Select(m => new OrleansMixtral.ChatMessage(m.Role == "system" ? OrleansMixtral.ChatRole.System : OrleansMixtral.ChatRole.User, m.Content))]));
        var body = JsonSerializer.Serialize(new
        {
            model = GatewayFixture.Model, max_tokens = 1, temperature = 0, logprobs = true, top_logprobs = 20, ignore_eos = true,
            messages = messages.Select(m => new { role = m.Role, content = m.Content }),
        });
        using var response = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", body));
        var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        var entry = json.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("content")[0];

        var reference = CpuReference.LogSoftmax(CpuReference.HfLastLogits(8));
        var best = Array.IndexOf(reference, reference.Max());
        Assert.Equal(Tokenizer.TokenText(best), entry.GetProperty("token").GetString());
        Assert.True(Math.Abs(reference[best] - entry.GetProperty("logprob").GetDouble()) <= HfTolerance);
        var top = entry.GetProperty("top_logprobs").EnumerateArray().Select(t => t.GetProperty("logprob").GetDouble()).ToArray();
        Assert.Equal(20, top.Length);
        var expected = CpuReference.Top(reference, 20);
        for (var k = 0; k < 20; k++) Assert.True(Math.Abs(expected[k] - top[k]) <= HfTolerance, $"rank {k}: {top[k]} vs Hugging Face {expected[k]}");
    }

    [Fact(Timeout = 60_000)]
    public async Task Completion_logprobs_are_the_log_softmax_of_the_Hugging_Face_logits()
    {
        var (ids, _) = CpuReference.HfPrompt(0);
        var body = $$"""{"model":"tiny-mixtral","prompt":[{{string.Join(',', ids)}}],"max_tokens":1,"temperature":0,"logprobs":5,"ignore_eos":true}""";
        using var response = await fixture.Http.SendAsync(fixture.Post("/v1/completions", body));
        var logprobs = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("logprobs");

        var reference = CpuReference.LogSoftmax(CpuReference.HfLastLogits(0));
        var best = Array.IndexOf(reference, reference.Max());
        Assert.Equal(Tokenizer.TokenText(best), logprobs.GetProperty("tokens")[0].GetString());
        Assert.True(Math.Abs(reference[best] - logprobs.GetProperty("token_logprobs")[0].GetDouble()) <= HfTolerance);
        var top = logprobs.GetProperty("top_logprobs")[0].EnumerateObject().ToList();
        var expected = CpuReference.Top(reference, 5);
        Assert.InRange(top.Count, 4, 5); // keyed by token text: two ids of one text would share a key
        foreach (var t in top)
        {
            // each alternative is one of the five likeliest, with its own value
            var id = Enumerable.Range(0, reference.Length).OrderByDescending(i => reference[i]).Take(5).First(i => Tokenizer.TokenText(i) == t.Name);
            Assert.True(Math.Abs(reference[id] - t.Value.GetDouble()) <= HfTolerance, $"{t.Name}: {t.Value} vs {reference[id]}");
        }
        Assert.Equal(0, logprobs.GetProperty("text_offset")[0].GetInt32());
    }

    [Fact(Timeout = 60_000)]
    public async Task Echo_with_logprobs_scores_the_prompt_too_whole_and_streamed()
    {
        const string prompt = "The history of the city";
        var body = $$"""{"model":"tiny-mixtral","prompt":"{{prompt}}","max_tokens":4,"temperature":0,"logprobs":2,"echo":true,"ignore_eos":true}""";
        using var response = await fixture.Http.SendAsync(fixture.Post("/v1/completions", body));
        var choice = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0];
        var text = choice.GetProperty("text").GetString()!;
        var logprobs = choice.GetProperty("logprobs");
        var tokens = logprobs.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!).ToArray();
        var values = logprobs.GetProperty("token_logprobs").EnumerateArray().ToArray();
        var tops = logprobs.GetProperty("top_logprobs").EnumerateArray().ToArray();
        var offsets = logprobs.GetProperty("text_offset").EnumerateArray().Select(o => o.GetInt32()).ToArray();

        var promptIds = Tokenizer.Encode(prompt);
        var generated = _cpu.Greedy(promptIds, 4);
        int[] all = [.. promptIds, .. generated];
        Assert.Equal(all.Select(Tokenizer.TokenText), tokens); // "<s>", " The", ... then the completion's
        Assert.Equal(prompt + Tokenizer.Decode(all)[Tokenizer.Decode(promptIds).Length..], text);
        Assert.Equal(JsonValueKind.Null, values[0].ValueKind); // nothing precedes the first token
        Assert.Equal(JsonValueKind.Null, tops[0].ValueKind);
        var reference = _cpu.AllLogprobs(all);
        for (var i = 1; i < all.Length; i++)
        {
            Assert.True(Math.Abs(reference[i - 1][all[i]] - values[i].GetDouble()) <= CpuTolerance, $"token {i}: {values[i]} vs {reference[i - 1][all[i]]}");
            var top = tops[i].EnumerateObject().Select(p => p.Value.GetDouble()).ToArray();
            var expected = CpuReference.Top(reference[i - 1], 2);
            Assert.Equal(expected.Length, top.Length);
            for (var k = 0; k < top.Length; k++) Assert.True(Math.Abs(expected[k] - top[k]) <= CpuTolerance);
        }
        // each token's text starts at its offset (the first word without the dummy prefix's space)
        Assert.Equal(prompt.Length, offsets[promptIds.Length]);
        for (var i = 1; i < all.Length; i++) Assert.StartsWith(i == 1 ? tokens[i].TrimStart() : tokens[i], text[offsets[i]..]);

        // streamed: the same text and, event by event, the same logprobs
        using var streamed = await fixture.Http.SendAsync(fixture.Post("/v1/completions", body.Replace("}", ""","stream":true}""")), HttpCompletionOption.ResponseHeadersRead);
        var sse = await GatewayFixture.ReadSse(streamed);
        Assert.True(sse.Done);
        Assert.Equal(text, sse.Text);
        var parts = sse.Events.Select(e => e.GetProperty("choices")).Where(c => c.GetArrayLength() > 0)
            .Select(c => c[0].GetProperty("logprobs")).Where(l => l.ValueKind == JsonValueKind.Object).ToList();
        Assert.Equal(tokens, parts.SelectMany(p => p.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!)));
        Assert.Equal(offsets, parts.SelectMany(p => p.GetProperty("text_offset").EnumerateArray().Select(o => o.GetInt32())));
        Assert.Equal(values.Select(v => v.ToString()), parts.SelectMany(p => p.GetProperty("token_logprobs").EnumerateArray().Select(v => v.ToString())));
    }

    [Theory(Timeout = 60_000)]
    [InlineData("/v1/chat/completions", "\"top_logprobs\":3", "top_logprobs")]                    // needs logprobs: true
    [InlineData("/v1/chat/completions", "\"logprobs\":true,\"top_logprobs\":21", "top_logprobs")]
    [InlineData("/v1/completions", "\"logprobs\":21", "logprobs")]
    [InlineData("/v1/completions", "\"logprobs\":-1", "logprobs")]
    public async Task Out_of_range_logprobs_are_400(string path, string field, string param)
    {
        var body = path.Contains("chat")
            ? $$"""{"model":"tiny-mixtral","messages":[{"role":"user","content":"hi"}],{{field}}}"""
            : $$"""{"model":"tiny-mixtral","prompt":"hi",{{field}}}""";
        using var response = await fixture.Http.SendAsync(fixture.Post(path, body));
        var error = await GatewayFixture.AssertError(response, 400, "invalid_value");
        Assert.Equal(param, error.GetProperty("param").GetString());
    }
}
