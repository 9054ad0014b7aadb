using System.Collections.Concurrent;
using Orleans.Runtime;
using OrleansMixtral.Grains.Contracts;

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
            Assert.Equal([0, 1], got.Select(ch => ch.Turn).Distinct());
            foreach (var turn in got.GroupBy(ch => ch.Turn))
            {
                // Every chunk, in order: sequence numbers without gaps, the final chunk last, the whole output.
                var mine = direct.Where(ch => ch.Turn == turn.Key).ToList();
                Assert.Equal(Enumerable.Range(0, turn.Count()), turn.Select(ch => ch.Sequence));
                Assert.True(turn.Last().IsFinal);
                Assert.Single(turn, ch => ch.IsFinal);
                Assert.Equal(string.Concat(mine.Select(ch => ch.Text)), string.Concat(turn.Select(ch => ch.Text)));
                Assert.Equal(mine.SelectMany(ch => ch.TokenIds), turn.SelectMany(ch => ch.TokenIds));
                Assert.Equal(mine[^1].End, turn.Last().End);
            }
        }
        Assert.Equal(60, direct.Where(ch => ch.Turn == 0).Sum(ch => ch.TokenIds.Length));
    }

    [Fact(Timeout = 60_000)]
    public async Task A_watcher_who_joins_mid_turn_gets_the_running_turn_from_its_first_chunk_then_every_later_turn()
    {
        var client = fixture.Client;
        var c = await client.StartConversationAsync();
        var direct = new ConcurrentQueue<TokenChunk>();
        var underway = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var turn = Task.Run(async () =>
        {
            await foreach (var chunk in client.SendAsync(c.ConversationId, "Write about rivers", ClusterFixture.Long(600)))
            {
                direct.Enqueue(chunk);
                if (direct.Count >= 8) underway.TrySetResult();
            }
        });
        await underway.Task.WaitAsync(TimeSpan.FromSeconds(20));
        // Well into the turn: the stream has published several events that a plain subscription would never see.
        var grain = client.Conversation(c.ConversationId);
        var until = DateTime.UtcNow.AddSeconds(10);
        while ((await grain.GetPublishedTurn()).Length < 3)
        {
            Assert.True(DateTime.UtcNow < until, "the stream published no events");
            await Task.Delay(10);
        }

        var late = new Subscriber { Expected = 2 };
        await using var subscription = await client.SubscribeAsync(c.ConversationId, late.On);
        Assert.False(turn.IsCompleted, "the turn ended before the watcher joined: nothing was tested");
        await turn;
        var next = await ClusterFixture.ReadAll(client.SendAsync(c.ConversationId, "And lakes", ClusterFixture.Short(20)));
        await late.Finals.Task.WaitAsync(TimeSpan.FromSeconds(20));

        var all = direct.Concat(next).ToList();
        Assert.All(all.Where(ch => ch.IsFinal), ch => Assert.True(ch.End!.Succeeded, ch.End.Error));
        var got = late.Chunks.ToList();
        Assert.Equal([0, 1], got.Select(ch => ch.Turn).Distinct());
        foreach (var watched in got.GroupBy(ch => ch.Turn))
        {
            var mine = all.Where(ch => ch.Turn == watched.Key).ToList();
            Assert.Equal(Enumerable.Range(0, watched.Count()), watched.Select(ch => ch.Sequence));
            Assert.Single(watched, ch => ch.IsFinal);
            Assert.True(watched.Last().IsFinal);
            Assert.Equal(string.Concat(mine.Select(ch => ch.Text)), string.Concat(watched.Select(ch => ch.Text)));
            Assert.Equal(mine.SelectMany(ch => ch.TokenIds), watched.SelectMany(ch => ch.TokenIds));
        }
        Assert.Equal(600, got.Where(ch => ch.Turn == 0).Sum(ch => ch.TokenIds.Length));
    }

    /// <summary>
    /// The streams' pub-sub records are in the conversations' storage (one per streamed conversation), none in silo memory
    /// (Orleans' memory storage kept one per conversation for the life of the process), and a watcher's subscription
    /// lives through the deactivation of every idle grain: its record is read back from that storage.
    /// </summary>
    [Fact(Timeout = 60_000)]
    public async Task Pub_sub_records_are_in_the_conversation_storage_and_a_watcher_outlives_the_deactivation_of_idle_grains()
    {
        var client = fixture.Client;
        var ids = new List<string>();
        for (var i = 0; i < 3; i++) ids.Add((await client.StartConversationAsync()).ConversationId);
        var watcher = new Subscriber { Expected = 2 };
        await using var subscription = await client.SubscribeAsync(ids[0], watcher.On);
        foreach (var id in ids) Assert.True((await client.SendAndCollectAsync(id, "One", ClusterFixture.Short(5))).Succeeded);

        // The stream agent registers a stream when it first reads its events from the queue (a poll after the turn's
        // first chunk, maybe after the turn's end).
        static bool Recorded(string id) => SharedGrainStorage.Keys.Count(k =>
            k.StartsWith("PubSubRendezvousGrain/", StringComparison.Ordinal) && k.EndsWith("/" + id, StringComparison.Ordinal)) == 1;
        var until = DateTime.UtcNow.AddSeconds(10);
        while (!ids.All(Recorded) && DateTime.UtcNow < until) await Task.Delay(20);
        Assert.All(ids, id => Assert.True(Recorded(id), $"no pub-sub record of {id} in the conversation storage"));
        var management = fixture.Cluster.Client.GetGrain<IManagementGrain>(0);
        Assert.DoesNotContain(await management.GetSimpleGrainStatistics(), s => s.GrainType.Contains("MemoryStorage", StringComparison.Ordinal));

        // Every idle grain of the cluster goes (the conversations', the pub-sub grains'); the next turn's events reach the watcher.
        var pubSubBefore = await PubSubActivations(management);
        Assert.True(pubSubBefore >= ids.Count, $"{pubSubBefore} pub-sub grains are active");
        await management.ForceActivationCollection(TimeSpan.Zero);
        Assert.True(await PubSubActivations(management) < pubSubBefore, "no pub-sub grain was deactivated: nothing was tested");
        Assert.True((await client.SendAndCollectAsync(ids[0], "Two", ClusterFixture.Short(5))).Succeeded);
        await watcher.Finals.Task.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal([0, 1], watcher.Chunks.Select(ch => ch.Turn).Distinct());
    }

    static async Task<int> PubSubActivations(IManagementGrain management) =>
        (await management.GetSimpleGrainStatistics()).Where(s => s.GrainType.Contains("PubSubRendezvous", StringComparison.Ordinal)).Sum(s => s.ActivationCount);

    [Fact(Timeout = 60_000)]
    public async Task A_watcher_who_joins_after_a_turn_ended_gets_none_of_it()
    {
        var client = fixture.Client;
        var c = await client.StartConversationAsync();
        Assert.True((await client.SendAndCollectAsync(c.ConversationId, "One", ClusterFixture.Short(8))).Succeeded);
        var grain = client.Conversation(c.ConversationId);
        var until = DateTime.UtcNow.AddSeconds(10);
        while ((await grain.GetPublishedTurn()) is not [.., { IsFinal: true }])
        {
            Assert.True(DateTime.UtcNow < until, "the turn's final event was not published");
            await Task.Delay(10);
        }
        var late = new Subscriber();
        await using var subscription = await client.SubscribeAsync(c.ConversationId, late.On);
        await Task.Delay(300);
        Assert.Empty(late.Chunks);
        Assert.True((await client.SendAndCollectAsync(c.ConversationId, "Two", ClusterFixture.Short(8))).Succeeded);
        await late.Finals.Task.WaitAsync(TimeSpan.FromSeconds(20));
        var got = late.Chunks.ToList();
        Assert.All(got, ch => Assert.Equal(1, ch.Turn));
        Assert.Equal(Enumerable.Range(0, got.Count), got.Select(ch => ch.Sequence));
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
