using Microsoft.Extensions.DependencyInjection;
using Orleans.Runtime;
using Orleans.TestingHost;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Hosting;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// A silo without a model (<c>Mixtral:Engine false</c>): it loads no weights, its engine grain reports
/// <see cref="EngineState.None"/> and is never routed to, and conversations held there run their turns on the other
/// silo's engine, the same greedy ids as a conversation held beside that engine.
/// </summary>
public sealed class EnginelessSiloTests : IAsyncLifetime
{
    InProcessTestCluster _cluster = null!;
    int _configured;

    public async ValueTask InitializeAsync()
    {
        var builder = new InProcessTestClusterBuilder(2);
        builder.ConfigureSilo((_, silo) =>
        {
            // the first silo runs the engine, the second none
            var options = ClusterFixture.SiloOptions();
            options.Storage = ConversationStorageKind.Memory;
            options.Engine = Interlocked.Increment(ref _configured) == 1;
            silo.AddMixtral(options);
        });
        builder.ConfigureClient(client => client.AddMemoryStreams(TokenStreams.Provider));
        _cluster = builder.Build();
        await _cluster.DeployAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (_cluster is not null) await _cluster.DisposeAsync();
    }

    (SiloAddress Engine, SiloAddress None) Silos()
    {
        var silos = _cluster.GetActiveSilos().Select(s => s.SiloAddress).ToList();
        Assert.Equal(2, silos.Count);
        var withEngine = silos.Single(s => _cluster.GetSiloServiceProvider(s).GetRequiredService<SiloEngineHost>().RunsEngine);
        return (withEngine, silos.Single(s => !s.Equals(withEngine)));
    }

    [Fact(Timeout = 120_000)]
    public async Task Conversations_on_a_silo_without_a_model_run_on_the_other_silos_engine()
    {
        var (engineSilo, noneSilo) = Silos();
        var none = _cluster.GetSiloServiceProvider(noneSilo).GetRequiredService<SiloEngineHost>();
        Assert.False(none.IsLoaded);
        var noneLoad = await _cluster.Client.GetGrain<IEngineGrain>(noneSilo.ToParsableString()).GetLoad();
        Assert.Equal(EngineState.None, noneLoad.State);
        var loads = await new OrleansMixtral.Client.MixtralClient(_cluster.Client).GetEngineLoadsAsync();
        Assert.Equal([engineSilo.ToParsableString()], loads.Where(l => l.State == EngineState.Ready).Select(l => l.Silo));

        // Held on each silo (a grain call from inside a silo places a PreferLocal grain there).
        async Task<(ConversationSnapshot Snapshot, List<int[]> Ids, List<TurnEnd> Ends)> Converse(SiloAddress holder, string id)
        {
            var grains = _cluster.GetSiloServiceProvider(holder).GetRequiredService<IGrainFactory>();
            var conversation = grains.GetGrain<IConversationGrain>(id);
            await conversation.Start("You are terse.");
            var ids = new List<int[]>();
            var ends = new List<TurnEnd>();
            foreach (var message in new[] { "Tell me about the old city.", "And the river?" })
            {
                var chunks = await ClusterFixture.ReadAll(conversation.SendTurn(message, ClusterFixture.Short(10)));
                ids.Add([.. chunks.SelectMany(c => c.TokenIds)]);
                ends.Add(chunks[^1].End!);
            }
            return (await conversation.GetSnapshot(), ids, ends);
        }

        var remote = await Converse(noneSilo, "engineless-" + Guid.NewGuid().ToString("N")[..8]);
        var local = await Converse(engineSilo, "beside-engine-" + Guid.NewGuid().ToString("N")[..8]);

        Assert.Equal(noneSilo.ToParsableString(), remote.Snapshot.GrainSilo);
        Assert.Equal(engineSilo.ToParsableString(), local.Snapshot.GrainSilo);
        foreach (var end in remote.Ends)
        {
            Assert.True(end.Succeeded, end.Error);
            Assert.Equal(engineSilo.ToParsableString(), end.Silo);
        }
        Assert.True(remote.Ends[1].Usage.CachedPromptTokens > 0, "the second turn reuses the engine's KV prefix");
        Assert.All(remote.Ids, ids => Assert.NotEmpty(ids));
        Assert.Equal(local.Ids, remote.Ids);
        Assert.Equal(2, remote.Snapshot.Turns);
        Assert.Equal(local.Snapshot.TokenCount, remote.Snapshot.TokenCount);
    }
}
