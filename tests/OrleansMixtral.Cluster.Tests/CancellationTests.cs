using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>Cancelling a turn stops the engine's sequence, frees its KV blocks, and leaves the history as it was.</summary>
[Collection(ClusterCollection.Name)]
public sealed class CancellationTests(ClusterFixture fixture)
{
    async Task<(string Id, string Silo)> ConversationWithOneTurn()
    {
        var c = await fixture.Client.StartConversationAsync();
        var r = await fixture.Client.SendAndCollectAsync(c.ConversationId, "Start", ClusterFixture.Short(4));
        Assert.True(r.Succeeded, r.End.Error);
        return (c.ConversationId, r.End.Silo!);
    }

    async Task AssertEngineIdle(string silo)
    {
        var host = fixture.Engine(silo);
        await ClusterFixture.Eventually(() =>
        {
            var s = host.Engine.GetStats();
            return s.Running == 0 && s.Waiting == 0 && s.KvBlocksUsed == 0 && host.RunningTurns == 0;
        }, "the engine to free the cancelled sequence");
    }

    [Fact(Timeout = 60_000)]
    public async Task Cancel_ends_the_turn_and_frees_the_sequence()
    {
        var client = fixture.Client;
        var (id, silo) = await ConversationWithOneTurn();
        var before = await client.GetHistoryAsync(id);

        var chunks = new List<TokenChunk>();
        await foreach (var chunk in client.SendAsync(id, "Go on and on", ClusterFixture.Long()))
        {
            chunks.Add(chunk);
            if (chunks.Count == 3)
            {
                var s = fixture.Engine(silo).Engine.GetStats();
                Assert.Equal(1, s.Running);
                Assert.True(await client.CancelAsync(id));
            }
        }
        var end = chunks[^1].End!;
        Assert.Equal(FinishReason.Cancelled, end.Finish);
        Assert.True(end.Usage.CompletionTokens < 900);
        Assert.Equal(Enumerable.Range(0, chunks.Count), chunks.Select(c => c.Sequence));
        await AssertEngineIdle(silo);

        var after = await client.GetHistoryAsync(id);
        Assert.Equal(before.Messages, after.Messages);
        Assert.Equal(before.TokenCount, after.TokenCount);
        Assert.False(await client.CancelAsync(id));
        Assert.True((await client.SendAndCollectAsync(id, "Short now", ClusterFixture.Short(4))).Succeeded);
    }

    [Fact(Timeout = 60_000)]
    public async Task Cancelling_the_callers_token_cancels_the_turn()
    {
        var client = fixture.Client;
        var (id, silo) = await ConversationWithOneTurn();
        using var cts = new CancellationTokenSource();
        var chunks = new List<TokenChunk>();
        await foreach (var chunk in client.SendAsync(id, "Keep going", ClusterFixture.Long(), cts.Token))
        {
            chunks.Add(chunk);
            if (chunks.Count == 3) cts.Cancel();
        }
        Assert.Equal(FinishReason.Cancelled, chunks[^1].End!.Finish);
        await AssertEngineIdle(silo);
        await ClusterFixture.Eventually(() => client.GetHistoryAsync(id).Result.TurnInProgress is null, "the conversation to drop the turn");
        Assert.Equal(1, (await client.GetHistoryAsync(id)).Turns);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_second_turn_while_one_runs_is_refused_and_the_first_goes_on()
    {
        var client = fixture.Client;
        var (id, _) = await ConversationWithOneTurn();
        var first = client.SendAndCollectAsync(id, "A long one", ClusterFixture.Long(300));
        await ClusterFixture.Eventually(() => client.GetHistoryAsync(id).Result.TurnInProgress is not null, "the first turn to start");
        await Assert.ThrowsAsync<TurnInProgressException>(() => client.SendAndCollectAsync(id, "Me too", ClusterFixture.Short()));
        var r = await first;
        Assert.True(r.Succeeded, r.End.Error);
        Assert.Equal(300, r.End.Usage.CompletionTokens);
        Assert.Equal(2, (await client.GetHistoryAsync(id)).Turns);
    }
}
