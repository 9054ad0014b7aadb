using System.Text.Json;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// /v1/completions text continues the prompt's, its leading space kept (vLLM's incremental detokenization against the
/// prompt: "The history of the city" → " is the most…"), whole, streamed and echoed; chat replies start their own text.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class CompletionTextTests(GatewayFixture fixture) : IDisposable
{
    readonly CpuReference _cpu = new();
    static Tokenization.MistralTokenizer Tokenizer => CpuReference.Tokenizer;

    public void Dispose() => _cpu.Dispose();

    async Task<string> Complete(string body, bool stream)
    {
        if (stream)
        {
            using var streamed = await fixture.Http.SendAsync(fixture.Post("/v1/completions", body.Replace("}", ""","stream":true}""")), HttpCompletionOption.ResponseHeadersRead);
            var sse = await GatewayFixture.ReadSse(streamed);
            Assert.True(sse.Done);
            return sse.Text;
        }
        using var response = await fixture.Http.SendAsync(fixture.Post("/v1/completions", body));
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
    }

    [Theory(Timeout = 60_000)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_completion_reads_on_from_its_prompt(bool stream)
    {
        const string prompt = "The history of the city";
        var promptIds = Tokenizer.Encode(prompt);
        var generated = _cpu.Greedy(promptIds, 6);
        // what the ids add to the prompt's text (Decode is Hugging Face's, checked in the tokenizer's tests)
        var expected = Tokenizer.Decode([.. promptIds, .. generated])[Tokenizer.Decode(promptIds).Length..];
        Assert.StartsWith(" ", expected);

        var body = $$"""{"model":"tiny-mixtral","prompt":"{{prompt}}","max_tokens":6,"temperature":0,"ignore_eos":true}""";
        Assert.Equal(expected, await Complete(body, stream));
        Assert.Equal(prompt + expected, await Complete(body.Replace("}", ""","echo":true}"""), stream));
        // token ids as the prompt: the same text; echo gives the ids' text
        var byIds = body.Replace($"\"{prompt}\"", $"[{string.Join(',', promptIds)}]");
        Assert.Equal(expected, await Complete(byIds, stream));
        Assert.Equal(prompt + expected, await Complete(byIds.Replace("}", ""","echo":true}"""), stream));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_chat_reply_starts_its_own_text()
    {
        var prompt = Tokenizer.EncodeChat([new ChatMessage(ChatRole.User, "Tell me about the old city.")]);
        var generated = _cpu.Greedy(prompt, 6);
        using var response = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions",
            GatewayFixture.ChatBody("Tell me about the old city.", maxTokens: 6, extra: ""","ignore_eos":true""")));
        var reply = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();
        Assert.Equal(Tokenizer.Decode(generated), reply);
    }
}
