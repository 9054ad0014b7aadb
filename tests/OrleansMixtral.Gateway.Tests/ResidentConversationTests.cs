namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// An engine's resident conversations (its load's <c>ResidentConversations</c>, which routing and the dashboard read) are
/// conversations whose KV prefix it keeps for their next turn: a stateless request is none of them.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class ResidentConversationTests(GatewayFixture fixture)
{
    [Fact(Timeout = 60_000)]
    public async Task Stateless_requests_do_not_count_as_resident_conversations_and_conversation_turns_do()
    {
        var host = fixture.Engine;
        var before = host.ResidentConversations;
        for (var i = 0; i < 3; i++)
        {
            using var chat = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody($"Hello {i}", 4)));
            Assert.Equal(200, (int)chat.StatusCode);
        }
        using (var completion = await fixture.Http.SendAsync(fixture.Post("/v1/completions",
                   $$"""{"model":"{{GatewayFixture.Model}}","prompt":"The river","max_tokens":4,"temperature":0}""")))
            Assert.Equal(200, (int)completion.StatusCode);
        using (var streamed = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("Hi", 4, stream: true))))
            Assert.True((await GatewayFixture.ReadSse(streamed)).Done);
        Assert.Equal(before, host.ResidentConversations);
        Assert.Equal(before, host.GetLoad().ResidentConversations);

        var turn = fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("Hello", 4));
        turn.Headers.Add("X-Conversation-Id", "new");
        using (var response = await fixture.Http.SendAsync(turn)) Assert.Equal(200, (int)response.StatusCode);
        Assert.Equal(before + 1, host.ResidentConversations);
    }
}
