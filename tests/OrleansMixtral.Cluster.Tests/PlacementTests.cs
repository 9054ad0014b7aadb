using Orleans.Runtime;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Hosting;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>One engine grain per silo, on that silo; conversations spread over the engines and keep to theirs.</summary>
[Collection(ClusterCollection.Name)]
public sealed class PlacementTests(ClusterFixture fixture)
{
    [Fact(Timeout = 60_000)]
    public async Task Each_silo_has_its_engine_grain_on_that_silo()
    {
        var silos = fixture.Cluster.GetActiveSilos().Select(s => s.SiloAddress.ToParsableString()).ToList();
        Assert.Equal(ClusterFixture.Silos, silos.Count);
        foreach (var silo in silos)
        {
            var load = await fixture.Cluster.Client.GetGrain<IEngineGrain>(silo).GetLoad();
            Assert.Equal(silo, load.Silo); // answered by the SiloEngineHost of that very silo
            Assert.Equal("tiny-mixtral", load.Model);
        }
        var loads = await fixture.Client.GetEngineLoadsAsync();
        Assert.Equal(silos.Order(), loads.Select(l => l.Silo).Order());
    }

    [Fact(Timeout = 60_000)]
    public async Task An_engine_grain_for_a_silo_outside_the_cluster_is_refused()
    {
        var gone = SiloAddress.New(System.Net.IPAddress.Loopback, 1, 12345).ToParsableString();
        await Assert.ThrowsAnyAsync<Exception>(() => fixture.Cluster.Client.GetGrain<IEngineGrain>(gone).GetLoad());
    }

    [Fact(Timeout = 120_000)]
    public async Task Conversations_spread_over_the_silos_and_stick_to_theirs()
    {
        var client = fixture.Client;
        var ids = new List<string>();
        var home = new Dictionary<string, string>();
        for (var i = 0; i < 6; i++)
        {
            var c = await client.StartConversationAsync();
            var r = await client.SendAndCollectAsync(c.ConversationId, $"Conversation number {i} begins", ClusterFixture.Short(6));
            Assert.True(r.Succeeded, r.End.Error);
            ids.Add(c.ConversationId);
            home[c.ConversationId] = r.End.Silo!;
        }
        var used = home.Values.Distinct().Count();
        Assert.True(used >= 2, $"6 conversations all went to one silo: {string.Join(", ", home.Values)}");

        foreach (var id in ids)
        {
            for (var turn = 0; turn < 2; turn++)
            {
                var r = await client.SendAndCollectAsync(id, $"And then, turn {turn}?", ClusterFixture.Short(6));
                Assert.True(r.Succeeded, r.End.Error);
                Assert.Equal(home[id], r.End.Silo);
                Assert.True(r.End.Usage.CachedPromptTokens > 0, "a follow-up turn on its own silo reuses the KV prefix");
            }
        }
    }
}
