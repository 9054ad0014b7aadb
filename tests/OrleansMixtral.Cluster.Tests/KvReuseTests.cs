
namespace OrleansMixtral.Cluster.Tests;

/// <summary>A follow-up turn goes to the engine that holds the conversation's KV prefix, which computes only the new tokens.</summary>
[Collection(ClusterCollection.Name)]
public sealed class KvReuseTests(ClusterFixture fixture)
{
    [Fact(Timeout = 60_000)]
    public async Task Second_turn_prefills_only_the_new_tokens_on_the_same_engine()
    {
        var client = fixture.Client;
        var c = await client.StartConversationAsync(systemPrompt: "You are a storyteller who likes long sentences.");
        var first = await client.SendAndCollectAsync(c.ConversationId, "Tell me a story about a fox and a crow.", ClusterFixture.Short(24));
        Assert.True(first.Succeeded, first.End.Error);
        var afterFirst = (await client.Conversation(c.ConversationId).GetTokens()).Length;
        var silo = first.End.Silo!;
        var engine = fixture.Engine(silo).Engine;
        var before = engine.GetStats();

        const string followUp = "Why did the crow drop the cheese?";
        var second = await client.SendAndCollectAsync(c.ConversationId, followUp, ClusterFixture.Short(8));
        Assert.True(second.Succeeded, second.End.Error);
        var after = engine.GetStats();

        Assert.Equal(silo, second.End.Silo);
        var newIds = ClusterFixture.FollowUpIds(followUp).Length;
        var u = second.End.Usage;
        Assert.Equal(afterFirst + newIds, u.PromptTokens);
        var computed = u.PromptTokens - u.CachedPromptTokens;
        // New: the follow-up's ids, EOS, and at most the last generated token of turn 1 (sampled, never fed back).
        Assert.InRange(computed, newIds, newIds + 2);
        Assert.Equal(computed, after.PromptTokensComputed - before.PromptTokensComputed);
        Assert.Equal(u.CachedPromptTokens, after.PromptTokensReused - before.PromptTokensReused);

        var h = await client.GetHistoryAsync(c.ConversationId);
        Assert.Equal(silo, h.KvSilo);
        Assert.Equal(u.PromptTokens + u.CompletionTokens, h.KvTokens);
    }
}
