
namespace OrleansMixtral.Cluster.Tests;

/// <summary>The engine grain does not serialize turns: concurrent conversations on a silo share the engine's batches.</summary>
[Collection(ClusterCollection.Name)]
public sealed class BatchingTests(ClusterFixture fixture)
{
    [Fact(Timeout = 60_000)]
    public async Task Concurrent_turns_on_a_silo_run_in_the_same_engine_steps()
    {
        var client = fixture.Client;
        var home = new Dictionary<string, string>();
        for (var i = 0; i < ClusterFixture.Silos * 2; i++)
        {
            var id = (await client.StartConversationAsync()).ConversationId;
            var r = await client.SendAndCollectAsync(id, $"Warm up {i}", ClusterFixture.Short(2));
            Assert.True(r.Succeeded, r.End.Error);
            home[id] = r.End.Silo!;
        }
        // Six conversations on three silos: some silo holds two or more of them.
        var perSilo = home.Values.GroupBy(s => s).ToDictionary(g => g.Key, g => g.Count());
        var engines = perSilo.Keys.ToDictionary(s => s, s => fixture.Engine(s).Engine);
        var maxRunning = perSilo.Keys.ToDictionary(s => s, _ => 0);
        var maxBatch = perSilo.Keys.ToDictionary(s => s, _ => 0);
        using var done = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!done.IsCancellationRequested)
            {
                foreach (var (silo, engine) in engines)
                {
                    var s = engine.GetStats();
                    maxRunning[silo] = Math.Max(maxRunning[silo], s.Running);
                    maxBatch[silo] = Math.Max(maxBatch[silo], s.LastBatchSize);
                }
                await Task.Delay(1);
            }
        });
        var results = await Task.WhenAll(home.Keys.Select(id => client.SendAndCollectAsync(id, "Now a longer answer", ClusterFixture.Long(150))));
        done.Cancel();
        await sampler;

        Assert.All(results, r =>
        {
            Assert.True(r.Succeeded, r.End.Error);
            Assert.Equal(home[r.ConversationId], r.End.Silo);
            Assert.Equal(150, r.End.Usage.CompletionTokens);
        });
        foreach (var (silo, count) in perSilo)
        {
            Assert.Equal(count, maxRunning[silo]); // all of the silo's turns were in its engine at once
            if (count >= 2) Assert.True(maxBatch[silo] >= 2, $"{silo}: the engine's steps carried at most {maxBatch[silo]} sequence(s)");
        }
        Assert.Contains(perSilo.Values, c => c >= 2);
    }
}
