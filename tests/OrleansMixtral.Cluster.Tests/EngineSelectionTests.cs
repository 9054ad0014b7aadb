using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>The one engine-selection policy (conversations and stateless requests), on hand-made loads.</summary>
public sealed class EngineSelectionTests
{
    static EngineLoad Load(string silo, int waiting = 0, int running = 0, int kvUsed = 0, int kvTotal = 100, int resident = 0,
        EngineState state = EngineState.Ready) =>
        new() { Silo = silo, Waiting = waiting, Running = running, KvBlocksUsed = kvUsed, KvBlocksTotal = kvTotal, ResidentConversations = resident, State = state };

    static string[] Rank(IEnumerable<EngineLoad> loads, Dictionary<string, int>? pending = null) =>
        [.. EngineSelection.Rank(loads, s => pending?.GetValueOrDefault(s) ?? 0, l => l.Silo[^1]).Select(l => l.Silo)];

    [Fact]
    public void The_shortest_queue_first_counting_what_the_caller_sent_since()
    {
        EngineLoad[] loads = [Load("a", waiting: 1, running: 3), Load("b", running: 2), Load("c", running: 5)];
        Assert.Equal(["b", "a", "c"], Rank(loads));
        // two requests sent to b since the loads were read: 4 there as on a, and a spreads better (they count as residents)
        Assert.Equal(["a", "b", "c"], Rank(loads, new() { ["b"] = 2 }));
        Assert.Equal(["a", "c", "b"], Rank(loads, new() { ["b"] = 3 }));
    }

    [Fact]
    public void Then_a_KV_cache_not_nearly_full_then_fewer_resident_conversations_then_the_tie_break()
    {
        Assert.Equal(["b", "a"], Rank([Load("a", kvUsed: 90), Load("b", kvUsed: 89, resident: 50)])); // 90 % is nearly full
        Assert.Equal(["b", "a"], Rank([Load("a", kvUsed: 10, resident: 3), Load("b", kvUsed: 80, resident: 2)]));
        Assert.Equal(["a", "b"], Rank([Load("b", resident: 2), Load("a", resident: 2)])); // tie-break: by the last letter here
    }

    [Fact]
    public void Engines_that_do_not_serve_are_left_out()
    {
        Assert.Equal(["c"], Rank([Load("a", state: EngineState.Loading), Load("b", state: EngineState.None), Load("c", waiting: 9)]));
        Assert.Empty(Rank([]));
    }
}
