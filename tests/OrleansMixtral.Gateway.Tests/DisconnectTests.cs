using System.Text.Json;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>A client that goes away cancels its generation: the engine stops the sequence and frees its KV blocks.</summary>
[Collection(GatewayCollection.Name)]
public sealed class DisconnectTests(GatewayFixture fixture)
{
    const string Long = ""","ignore_eos":true""";

    /// <summary>
    /// A client whose dispose drops the connection: by default HttpClient drains an unread response (up to 1 MB, 2 s)
    /// to reuse the connection, so the server would see no disconnect at all.
    /// </summary>
    HttpClient DroppingClient() => new(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = fixture.BaseUrl };

    /// <summary>Reads SSE lines until <paramref name="contentChunks"/> content deltas have come.</summary>
    static async Task ReadChunks(HttpResponseMessage response, int contentChunks)
    {
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var n = 0;
        while (n < contentChunks && await reader.ReadLineAsync() is { } line)
            if (line.StartsWith("data: {", StringComparison.Ordinal) && line.Contains("\"content\":\"", StringComparison.Ordinal) && !line.Contains("\"content\":\"\"", StringComparison.Ordinal)) n++;
        Assert.Equal(contentChunks, n);
    }

    [Fact(Timeout = 60_000)]
    public async Task Dropping_a_stateless_stream_frees_the_sequence()
    {
        await fixture.EngineIdle();
        var before = fixture.Engine.Engine.GetStats().TokensGenerated;
        using var http = DroppingClient();
        var response = await http.SendAsync(fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("Go on", 1000, stream: true, extra: Long)),
            HttpCompletionOption.ResponseHeadersRead);
        await ReadChunks(response, 3);
        Assert.Equal(1, fixture.Engine.Engine.GetStats().Running);
        Assert.True(fixture.Engine.Engine.GetStats().KvBlocksUsed > 0);
        response.Dispose(); // closes the connection mid-stream
        await fixture.EngineIdle();
        Assert.True(fixture.Engine.Engine.GetStats().TokensGenerated - before < 1000);
    }

    [Fact(Timeout = 60_000)]
    public async Task Dropping_a_conversation_stream_cancels_the_turn_and_keeps_the_history()
    {
        await fixture.EngineIdle();
        using var http = DroppingClient();
        var response = await http.SendAsync(fixture.Post("/v1/chat/completions",
            GatewayFixture.ChatBody("Go on", 1000, stream: true, extra: Long + ""","metadata":{"conversation_id":"new"}""")), HttpCompletionOption.ResponseHeadersRead);
        var id = response.Headers.GetValues("X-Conversation-Id").Single();
        await ReadChunks(response, 3);
        response.Dispose();
        await fixture.EngineIdle();
        await GatewayFixture.Eventually(() =>
        {
            using var read = fixture.Http.Send(fixture.Get($"/v1/conversations/{id}"));
            var c = JsonDocument.Parse(read.Content.ReadAsStream()).RootElement;
            return !c.GetProperty("turn_in_progress").GetBoolean() && c.GetProperty("turns").GetInt32() == 0;
        }, "the conversation to drop the cancelled turn");
        // The conversation goes on.
        using var next = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions",
            GatewayFixture.ChatBody("Short now", 3, extra: $$""","metadata":{"conversation_id":"{{id}}"}""")));
        Assert.Equal(200, (int)next.StatusCode);
    }

    [Fact(Timeout = 60_000)]
    public async Task Giving_up_on_a_whole_reply_frees_the_sequence()
    {
        await fixture.EngineIdle();
        var before = fixture.Engine.Engine.GetStats().TokensGenerated;
        using var http = DroppingClient();
        using var cts = new CancellationTokenSource();
        var call = http.SendAsync(fixture.Post("/v1/completions",
            """{"model":"tiny-mixtral","prompt":"Once upon a time","max_tokens":1000,"temperature":0,"ignore_eos":true}"""), cts.Token);
        await GatewayFixture.Eventually(() => fixture.Engine.Engine.GetStats().Running == 1, "the generation to start");
        await GatewayFixture.Eventually(() => fixture.Engine.Engine.GetStats().TokensGenerated - before >= 10, "some tokens");
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call);
        await fixture.EngineIdle();
        Assert.True(fixture.Engine.Engine.GetStats().TokensGenerated - before < 1000);
    }
}
