using OrleansMixtral.Client;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>A conversation exists once started; the client library says so with a type, never with an empty history.</summary>
[Collection(ClusterCollection.Name)]
public sealed class ConversationExistenceTests(ClusterFixture fixture)
{
    [Fact(Timeout = 60_000)]
    public async Task An_id_never_started_is_a_typed_error_and_stays_unstarted()
    {
        var client = fixture.Client;
        var id = "never-started-" + Guid.NewGuid().ToString("N");
        var stored = SharedGrainStorage.Count;

        Assert.Null(await client.FindConversationAsync(id));
        var e = await Assert.ThrowsAsync<ConversationNotFoundException>(() => client.GetHistoryAsync(id));
        Assert.Equal(id, e.ConversationId);
        Assert.Equal(id, (await Assert.ThrowsAsync<ConversationNotFoundException>(() => client.SendAndCollectAsync(id, "Hello?", ClusterFixture.Short(4)))).ConversationId);
        await Assert.ThrowsAsync<ConversationNotFoundException>(async () =>
        {
            await foreach (var _ in client.SendAsync(id, "Hello?", ClusterFixture.Short(4))) { }
        });
        await Assert.ThrowsAsync<ConversationNotFoundException>(() => client.CancelAsync(id));
        await Assert.ThrowsAsync<ConversationNotFoundException>(() => client.Conversation(id).Reset());
        var snapshot = await client.Conversation(id).GetSnapshot();
        Assert.False(snapshot.Exists);
        Assert.Equal((0, 0), (snapshot.Turns, snapshot.Messages.Length));
        Assert.Equal(stored, SharedGrainStorage.Count); // nothing was written for it

        // The console chat refuses to resume it, in one line.
        var error = new StringWriter();
        var chat = new ClusterChat(client, new StringReader("Hello\n"), new StringWriter(), error);
        Assert.Equal(ClusterChat.ExitError, await chat.RunAsync(id));
        Assert.Contains($"conversation {id} does not exist", error.ToString());
        Assert.Null(await client.FindConversationAsync(id));

        // Started, it exists (empty), takes turns, and a second start changes nothing.
        var started = await client.StartConversationAsync(id);
        Assert.True(started.Exists);
        Assert.Equal(0, started.Turns);
        Assert.Equal(stored + 1, SharedGrainStorage.Count);
        Assert.True((await client.SendAndCollectAsync(id, "Hello", ClusterFixture.Short(4))).Succeeded);
        Assert.False(await client.CancelAsync(id));
        var again = await client.StartConversationAsync(id);
        Assert.Equal(1, again.Turns);
        Assert.Equal(1, (await client.GetHistoryAsync(id)).Turns);
    }
}
