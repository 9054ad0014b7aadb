using OrleansMixtral.Client;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// A conversation that outgrows the tiny model's 1,024-token context (the policy: <see cref="ConversationWindow"/>):
/// its oldest whole turns are dropped with the system message kept, every reply keeps its room, the caller is told
/// (usage and snapshot), and the turns after a drop find their prefix in the engine's cache again.
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class ContextOverflowTests(ClusterFixture fixture)
{
    const int Context = 1024;
    const int Reply = 200;

    [Fact(Timeout = 180_000)]
    public async Task A_conversation_that_outgrows_the_context_drops_its_oldest_turns_keeps_room_for_each_reply_and_reuses_its_prefix_again()
    {
        const string system = "You are a storyteller who likes long sentences.";
        var client = fixture.Client;
        var id = (await client.StartConversationAsync(systemPrompt: system)).ConversationId;
        var results = new List<TurnResult>();
        for (var turn = 0; turn < 9; turn++)
        {
            // ignore_eos: every reply is exactly 200 tokens unless the context cuts it
            var r = await client.SendAndCollectAsync(id, Message(turn), ClusterFixture.Long(Reply));
            Assert.True(r.Succeeded, r.End.Error);
            var u = r.End.Usage;
            Assert.True(u.CompletionTokens == Reply, $"turn {turn}: the reply was cut to {u.CompletionTokens} tokens (prompt {u.PromptTokens})");
            Assert.True(u.PromptTokens + Reply <= Context, $"turn {turn}: prompt {u.PromptTokens}");
            results.Add(r);
        }

        var firstDrop = results.FindIndex(r => r.End.Usage.DroppedTurns > 0);
        Assert.InRange(firstDrop, 2, 6);
        var dropped = results[firstDrop].End.Usage.DroppedTurns;
        Assert.InRange(dropped, 1, firstDrop);
        // Dropped down to half of what a prompt may hold, so the next turns build on it without dropping again...
        Assert.True(results[firstDrop].End.Usage.PromptTokens <= (Context - Reply) / 2, $"prompt {results[firstDrop].End.Usage.PromptTokens} after the drop");
        var next = results[firstDrop + 1];
        Assert.Equal(dropped, next.End.Usage.DroppedTurns);
        // ...and find all of it in the engine's prefix cache: only the new message's ids (and EOS, and at most the last
        // generated token of the turn before, never fed back) are computed.
        Assert.Equal(results[firstDrop].End.Silo, next.End.Silo);
        var newIds = ClusterFixture.FollowUpIds(Message(firstDrop + 1)).Length;
        Assert.InRange(next.End.Usage.PromptTokens - next.End.Usage.CachedPromptTokens, newIds, newIds + 2);
        // The drop itself leaves most of its turns' prompt uncached once (the kept history starts anew after the system).
        Assert.True(results[firstDrop].End.Usage.CachedPromptTokens < results[firstDrop].End.Usage.PromptTokens / 2);

        // The snapshot says so too; the transcript keeps every turn; the model's ids start with the system message and the
        // first kept turn's user message.
        var h = await client.GetHistoryAsync(id);
        Assert.Equal(9, h.Turns);
        Assert.Equal(1 + 2 * 9, h.Messages.Length);
        Assert.Equal(results[^1].End.Usage.DroppedTurns, h.DroppedTurns);
        Assert.InRange(h.DroppedTurns, dropped, 8);
        var tokens = await client.Conversation(id).GetTokens();
        Assert.Equal(h.TokenCount, tokens.Length);
        var head = ClusterFixture.Tokenizer.EncodeChat([new(ChatRole.System, system), new(ChatRole.User, Message(h.DroppedTurns))]);
        Assert.Equal(head, tokens[..head.Length]);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_message_too_long_for_the_context_is_refused_and_leaves_the_conversation_as_it_was()
    {
        var client = fixture.Client;
        var id = (await client.StartConversationAsync()).ConversationId;
        Assert.True((await client.SendAndCollectAsync(id, "Hello", ClusterFixture.Short(4))).Succeeded);
        var huge = string.Join(" ", Enumerable.Repeat("river", 1100));
        var e = await Assert.ThrowsAsync<InvalidTurnException>(() => client.SendAndCollectAsync(id, huge, ClusterFixture.Short(4)));
        // the one prompt builder's refusal, word for word (the gateway, the IChatClient and the CLI give the same)
        Assert.Equal(Assert.Throws<ContextLengthExceededException>(() =>
            new ChatPromptBuilder(ClusterFixture.Tokenizer, 1024).CheckFits(null, huge)).Message, e.Message);
        Assert.Equal(ErrorKind.ContextLengthExceeded, e.Kind); // carried across the grain call as data
        var bad = await Assert.ThrowsAsync<InvalidTurnException>(() => client.SendAndCollectAsync(id, "Hello", new SamplingOptions { Temperature = 3 }));
        Assert.Equal(ErrorKind.InvalidRequest, bad.Kind);
        var h = await client.GetHistoryAsync(id);
        Assert.Equal(1, h.Turns);
        Assert.Equal(0, h.DroppedTurns);
    }

    static string Message(int turn) => $"Tell me more about the fox and the crow, part {turn}.";
}
