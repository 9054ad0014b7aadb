using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans.Hosting;
using Orleans.TestingHost;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Hosting;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// An engine whose queue is full (<see cref="MixtralSiloOptions.MaxWaiting"/>, the silo's <c>Mixtral:MaxWaiting</c>) makes
/// every new generation a 429 with Retry-After: stateless requests and conversation turns alike.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class EngineQueueTests(GatewayFixture fixture)
{
    [Fact(Timeout = 90_000)]
    public async Task A_full_engine_queue_is_429_with_Retry_After_for_stateless_requests_and_conversation_turns()
    {
        var builder = new InProcessTestClusterBuilder(1);
        builder.ConfigureSilo((_, silo) =>
        {
            var options = GatewayFixture.SiloOptions();
            options.Threads = 1;
            options.KvCacheMegabytes = 16;
            options.MaxRunningSequences = 1; // one sequence runs,
            options.MaxWaiting = 2;          // two wait, the next is refused;
            options.RedirectWhenWaiting = 1; // a conversation's engine asks it to go elsewhere when one waits (there is nowhere else)
            silo.AddMixtral(options);
        });
        builder.ConfigureSiloHost((_, host) => host.Services.PostConfigure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(5)));
        builder.ConfigureClient(client => client.AddMemoryStreams(TokenStreams.Provider));
        var cluster = builder.Build();
        fixture.DisposeLater(cluster);
        await cluster.DeployAsync();
        var (_, url) = await fixture.StartGatewayOverAsync(cluster.Client, new() { ["Gateway:RetryAfterSeconds"] = "3" });
        using var http = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = url, Timeout = TimeSpan.FromSeconds(60) };
        var engine = cluster.GetSiloServiceProvider(cluster.Silos[0].SiloAddress).GetRequiredService<SiloEngineHost>().Engine;

        // Two conversations with a turn each (their KV on the only engine), before the engine fills.
        var ids = new List<string>();
        for (var i = 0; i < 2; i++)
        {
            using var first = await http.SendAsync(Post(GatewayFixture.ChatBody("Hello", 2), "new"));
            Assert.Equal(200, (int)first.StatusCode);
            ids.Add(first.Headers.GetValues("X-Conversation-Id").Single());
        }
        var id = ids[1];

        // One long reply runs, another waits.
        var running = await http.SendAsync(Post(GatewayFixture.ChatBody("Go on", 1000, stream: true, extra: ""","ignore_eos":true"""), null),
            HttpCompletionOption.ResponseHeadersRead);
        await GatewayFixture.Eventually(() => engine.GetStats().Running == 1, "the first reply to run");
        var waiting = http.SendAsync(Post(GatewayFixture.ChatBody("Me next", 1000, stream: true, extra: ""","ignore_eos":true"""), null),
            HttpCompletionOption.ResponseHeadersRead);
        await GatewayFixture.Eventually(() => engine.GetStats().Waiting == 1, "the second reply to wait");
        // A conversation's turn queues on its engine, although that engine is over its redirect threshold: no other can
        // take it. The queue is full now.
        var queuedTurn = http.SendAsync(Post(GatewayFixture.ChatBody("Queue me", 4), ids[0]));
        await GatewayFixture.Eventually(() => engine.GetStats().Waiting == 2 || queuedTurn.IsCompleted, "the conversation's turn to wait");
        if (queuedTurn.IsCompleted)
        {
            using var early = await queuedTurn;
            Assert.Fail($"the conversation's turn did not queue: {(int)early.StatusCode} {await early.Content.ReadAsStringAsync()}");
        }

        foreach (var (what, request) in new (string, HttpRequestMessage)[]
                 {
                     ("stateless", Post(GatewayFixture.ChatBody("And me", 4), null)),
                     ("stateless stream", Post(GatewayFixture.ChatBody("And me", 4, stream: true), null)),
                     ("a new conversation", Post(GatewayFixture.ChatBody("Hi", 4), "new")),
                     ("a conversation's next turn", Post(GatewayFixture.ChatBody("Again", 4), id)),
                     ("a conversation's next turn, streamed", Post(GatewayFixture.ChatBody("Again", 4, stream: true), id)),
                 })
        {
            using var response = await http.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True((int)response.StatusCode == 429, $"{what}: {(int)response.StatusCode} {text}");
            Assert.Equal("rate_limit_exceeded", JsonDocument.Parse(text).RootElement.GetProperty("error").GetProperty("code").GetString());
            Assert.Equal(TimeSpan.FromSeconds(3), response.Headers.RetryAfter?.Delta);
        }

        // The refused turns left the conversation as it was, and it goes on once the engine has room.
        running.Dispose();
        (await waiting).Dispose();
        using (var queued = await queuedTurn) Assert.Equal(200, (int)queued.StatusCode);
        await GatewayFixture.Eventually(() => engine.GetStats() is { Running: 0, Waiting: 0 }, "the engine to be idle");
        using var again = await http.SendAsync(Post(GatewayFixture.ChatBody("Again", 4), id));
        Assert.Equal(200, (int)again.StatusCode);
        using var read = await http.GetAsync($"/v1/conversations/{id}");
        Assert.Equal(2, JsonDocument.Parse(await read.Content.ReadAsStringAsync()).RootElement.GetProperty("turns").GetInt32());
    }

    static HttpRequestMessage Post(string json, string? conversation)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(json, System.Text.Encoding.UTF8, "application/json") };
        if (conversation is not null) request.Headers.Add("X-Conversation-Id", conversation);
        return request;
    }
}
