using System.Collections.Concurrent;
using OrleansMixtral.Grains;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>The conversation's Orleans stream: any number of subscribers get every chunk, in order, as the caller does.</summary>
[Collection(ClusterCollection.Name)]
public sealed class TokenStreamTests(ClusterFixture fixture)
{
    sealed class Subscriber
    {
        public ConcurrentQueue<TokenChunk> Chunks { get; } = new();
        public TaskCompletionSource Finals { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Expected { get; init; } = 1;
        int _finals;

        public Task On(TokenChunk chunk)
        {
            Chunks.Enqueue(chunk);
            if (chunk.IsFinal && Interlocked.Increment(ref _finals) == Expected) Finals.TrySetResult();
            return Task.CompletedTask;
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Two_subscribers_get_every_chunk_of_every_turn_in_order()
    {
        var client = fixture.Client;
        var c = await client.StartConversationAsync();
        var a = new Subscriber { Expected = 2 };
        var b = new Subscriber { Expected = 2 };
        await using var subA = await client.SubscribeAsync(c.ConversationId, a.On);
        await using var subB = await client.SubscribeAsync(c.ConversationId, b.On);

        var direct = new List<TokenChunk>();
        direct.AddRange(await ClusterFixture.ReadAll(client.SendAsync(c.ConversationId, "Write about rivers", ClusterFixture.Long(60))));
        direct.AddRange(await ClusterFixture.ReadAll(client.SendAsync(c.ConversationId, "And lakes", ClusterFixture.Short(20))));
        Assert.All(direct.Where(ch => ch.IsFinal), ch => Assert.True(ch.End!.Succeeded, ch.End.Error));

        await Task.WhenAll(a.Finals.Task, b.Finals.Task).WaitAsync(TimeSpan.FromSeconds(20));
        foreach (var s in new[] { a, b })
        {
            var got = s.Chunks.ToList();
            Assert.Equal(direct.Select(ch => (ch.Turn, ch.Sequence, ch.Text, ch.IsFinal)), got.Select(ch => (ch.Turn, ch.Sequence, ch.Text, ch.IsFinal)));
            foreach (var turn in got.GroupBy(ch => ch.Turn))
                Assert.Equal(Enumerable.Range(0, turn.Count()), turn.Select(ch => ch.Sequence));
        }
        Assert.Equal(60, direct.Where(ch => ch.Turn == 0).Sum(ch => ch.TokenIds.Length));
    }

    [Fact(Timeout = 60_000)]
    public async Task Unsubscribed_watchers_get_nothing_more()
    {
        var client = fixture.Client;
        var c = await client.StartConversationAsync();
        var a = new Subscriber();
        var sub = await client.SubscribeAsync(c.ConversationId, a.On);
        Assert.True((await client.SendAndCollectAsync(c.ConversationId, "One", ClusterFixture.Short(5))).Succeeded);
        await a.Finals.Task.WaitAsync(TimeSpan.FromSeconds(20));
        await sub.DisposeAsync();
        var count = a.Chunks.Count;
        Assert.True((await client.SendAndCollectAsync(c.ConversationId, "Two", ClusterFixture.Short(5))).Succeeded);
        await Task.Delay(500);
        Assert.Equal(count, a.Chunks.Count);
    }
}
