using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>The conversation's history across turns: messages, and the exact token ids the next turn builds on.</summary>
[Collection(ClusterCollection.Name)]
public sealed class HistoryTests(ClusterFixture fixture)
{
    [Fact(Timeout = 60_000)]
    public async Task Messages_accumulate_across_turns_with_the_system_message_first()
    {
        var client = fixture.Client;
        var c = await client.StartConversationAsync(systemPrompt: "You answer briefly.");
        var replies = new List<string>();
        foreach (var message in new[] { "Hello there", "Tell me about the sea", "And the mountains?" })
        {
            var r = await client.SendAndCollectAsync(c.ConversationId, message, ClusterFixture.Short());
            Assert.True(r.Succeeded, r.End.Error);
            Assert.Equal(r.End.Text, r.Text);
            replies.Add(r.Text);
        }
        var h = await client.GetHistoryAsync(c.ConversationId);
        Assert.Equal(3, h.Turns);
        Assert.Null(h.TurnInProgress);
        Assert.Equal(
            new[]
            {
                new ChatMessage(ChatRole.System, "You answer briefly."),
                new ChatMessage(ChatRole.User, "Hello there"), new ChatMessage(ChatRole.Assistant, replies[0]),
                new ChatMessage(ChatRole.User, "Tell me about the sea"), new ChatMessage(ChatRole.Assistant, replies[1]),
                new ChatMessage(ChatRole.User, "And the mountains?"), new ChatMessage(ChatRole.Assistant, replies[2]),
            },
            h.Messages);
    }

    [Fact(Timeout = 60_000)]
    public async Task Stored_tokens_are_each_prompt_plus_the_generated_ids_plus_EOS()
    {
        var client = fixture.Client;
        var c = await client.StartConversationAsync();
        var first = await ClusterFixture.ReadAll(client.SendAsync(c.ConversationId, "Once upon a time", ClusterFixture.Short(10)));
        var second = await ClusterFixture.ReadAll(client.SendAsync(c.ConversationId, "What happened next?", ClusterFixture.Short(10)));
        Assert.True(first[^1].End!.Succeeded && second[^1].End!.Succeeded);

        var tok = ClusterFixture.Tokenizer;
        int[] expected =
        [
            .. tok.EncodeChat([new ChatMessage(ChatRole.User, "Once upon a time")]),
            .. first.SelectMany(ch => ch.TokenIds), tok.EosId,
            .. ClusterFixture.FollowUpIds("What happened next?"),
            .. second.SelectMany(ch => ch.TokenIds), tok.EosId,
        ];
        Assert.Equal(expected, await client.Conversation(c.ConversationId).GetTokens());
        Assert.Equal(first[^1].End!.Usage.CompletionTokens, first.SelectMany(ch => ch.TokenIds).Count());
        Assert.Equal(expected.Length - second.SelectMany(ch => ch.TokenIds).Count() - 1, second[^1].End!.Usage.PromptTokens);
    }

    [Fact(Timeout = 60_000)]
    public async Task Reset_forgets_the_turns_and_keeps_the_system_message()
    {
        var client = fixture.Client;
        var c = await client.StartConversationAsync(systemPrompt: "Be kind.");
        Assert.True((await client.SendAndCollectAsync(c.ConversationId, "Hi", ClusterFixture.Short(4))).Succeeded);
        await client.Conversation(c.ConversationId).Reset();
        var h = await client.GetHistoryAsync(c.ConversationId);
        Assert.Equal([new ChatMessage(ChatRole.System, "Be kind.")], h.Messages);
        Assert.Equal(0, h.Turns);
        Assert.Equal(0, h.TokenCount);
    }

    [Fact(Timeout = 60_000)]
    public async Task Bad_requests_are_refused_without_touching_the_history()
    {
        var client = fixture.Client;
        var c = await client.StartConversationAsync();
        await Assert.ThrowsAsync<InvalidTurnException>(() => client.SendAndCollectAsync(c.ConversationId, "  ", ClusterFixture.Short()));
        await Assert.ThrowsAsync<InvalidTurnException>(() =>
            client.SendAndCollectAsync(c.ConversationId, "Hi", new SamplingOptions { Temperature = 0, MaxTokens = 0 }));
        var tooLong = string.Join(' ', Enumerable.Repeat("word", 2000));
        await Assert.ThrowsAsync<InvalidTurnException>(() => client.SendAndCollectAsync(c.ConversationId, tooLong, ClusterFixture.Short()));
        var h = await client.GetHistoryAsync(c.ConversationId);
        Assert.Empty(h.Messages);
        Assert.True((await client.SendAndCollectAsync(c.ConversationId, "Hi", ClusterFixture.Short(4))).Succeeded);
    }
}
