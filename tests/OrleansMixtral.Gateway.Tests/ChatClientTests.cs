using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Orleans;
using OrleansMixtral.Client.AI;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Gateway.Tests;

// Inside the namespace, so that its ChatMessage and ChatRole come before OrleansMixtral's.
using Microsoft.Extensions.AI;

/// <summary>The Microsoft.Extensions.AI IChatClient over the Orleans client, from dependency injection.</summary>
[Collection(GatewayCollection.Name)]
public sealed class ChatClientTests(GatewayFixture fixture)
{
    ServiceProvider Services(string? prefix = null) => Services(fixture, prefix);

    /// <summary>An IChatClient over the fixture's cluster, from dependency injection.</summary>
    internal static ServiceProvider Services(GatewayFixture fixture, string? prefix = null)
    {
        var services = new ServiceCollection();
        services.AddSingleton<IClusterClient>(fixture.Cluster.Client);
        services.AddLogging();
        services.AddMixtralChatClient(o => o.Model = RepoPaths.TinyModel, new MixtralChatClientOptions { ConversationPrefix = prefix }).UseLogging();
        return services.BuildServiceProvider();
    }

    static ChatOptions Greedy(int maxTokens, string? conversation = null) => new() { MaxOutputTokens = maxTokens, Temperature = 0, ConversationId = conversation };

    [Fact(Timeout = 60_000)]
    public async Task Whole_and_streamed_replies_match_the_gateways()
    {
        await using var services = Services();
        var chat = services.GetRequiredService<IChatClient>();
        Assert.Equal("tiny-mixtral", chat.GetService<ChatClientMetadata>()?.DefaultModelId);
        List<ChatMessage> messages = [new(ChatRole.System, "You are terse."), new(ChatRole.User, "Tell me about the old city.")];

        var response = await chat.GetResponseAsync(messages, Greedy(12));
        Assert.False(string.IsNullOrEmpty(response.Text));
        Assert.NotNull(response.FinishReason);
        Assert.InRange(response.Usage!.OutputTokenCount!.Value, 1, 12);
        Assert.True(response.Usage.InputTokenCount > 5);

        var streamed = new StringBuilder();
        ChatFinishReason? finish = null;
        UsageDetails? usage = null;
        await foreach (var u in chat.GetStreamingResponseAsync(messages, Greedy(12)))
        {
            streamed.Append(u.Text);
            finish ??= u.FinishReason;
            usage ??= u.Contents.OfType<UsageContent>().FirstOrDefault()?.Details;
        }
        Assert.Equal(response.Text, streamed.ToString());
        Assert.Equal(response.FinishReason, finish);
        Assert.Equal(response.Usage.OutputTokenCount, usage?.OutputTokenCount);

        // The same request through the HTTP gateway gives the same greedy reply.
        using var http = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions",
            """{"model":"tiny-mixtral","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Tell me about the old city."}],"max_tokens":12,"temperature":0}"""));
        var content = JsonDocument.Parse(await http.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();
        Assert.Equal(response.Text, content);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_conversation_id_keeps_the_history_in_the_cluster()
    {
        await using var services = Services(prefix: "di-tests/");
        var chat = services.GetRequiredService<IChatClient>();
        var id = Guid.NewGuid().ToString("N");
        var first = await chat.GetResponseAsync([new(ChatRole.System, "Be brief."), new(ChatRole.User, "Hi there")], Greedy(6, id));
        Assert.Equal(id, first.ConversationId);
        var second = new StringBuilder();
        await foreach (var u in chat.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "What next?")], Greedy(6, id)))
        {
            Assert.Equal(id, u.ConversationId);
            second.Append(u.Text);
        }
        var history = await services.GetRequiredService<MixtralChatService>().Client.GetHistoryAsync("di-tests/" + id);
        Assert.Equal(2, history.Turns);
        Assert.Equal(["Be brief.", "Hi there", first.Text, "What next?", second.ToString()], history.Messages.Select(m => m.Content));
    }

    [Fact(Timeout = 30_000)]
    public async Task Bad_requests_throw_before_anything_runs()
    {
        await using var services = Services();
        var chat = services.GetRequiredService<IChatClient>();
        await Assert.ThrowsAsync<MixtralRequestException>(() => chat.GetResponseAsync([new ChatMessage(ChatRole.Assistant, "me first")]));
        await Assert.ThrowsAsync<MixtralRequestException>(() => chat.GetResponseAsync([new ChatMessage(ChatRole.User, string.Join(' ', Enumerable.Repeat("word and more words", 400)))]));
        await Assert.ThrowsAsync<NotSupportedException>(() => chat.GetResponseAsync([new ChatMessage(ChatRole.Tool, "x")]));
    }

    [Fact(Timeout = 60_000)]
    public async Task Cancelling_the_token_stops_the_generation_and_frees_its_kv()
    {
        await using var services = Services();
        var chat = services.GetRequiredService<IChatClient>();
        using var cts = new CancellationTokenSource();
        var updates = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in chat.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "Go on and on")],
                               new ChatOptions { MaxOutputTokens = 900, Temperature = 0, AdditionalProperties = new() { ["ignore_eos"] = true } }, cts.Token))
            {
                if (++updates == 3) cts.Cancel();
            }
        });
        await fixture.EngineIdle();
    }
}
