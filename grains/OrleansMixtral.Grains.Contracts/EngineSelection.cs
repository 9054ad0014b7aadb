namespace OrleansMixtral.Grains.Contracts;

/// <summary>
/// The one engine-selection policy, for conversations (each silo's router) and stateless requests (the chat service)
/// alike: engines with the shortest queue first (sequences running or waiting, plus what this caller sent since it read
/// the loads, which the engines' own counts do not show yet), then those whose KV cache is not nearly full, then those
/// with fewer resident conversations (so new conversations spread and KV prefixes stay), then the caller's tie-break.
/// </summary>
public static class EngineSelection
{
    /// <summary>The share of KV blocks in use from which a cache counts as nearly full.</summary>
    public const double NearlyFullKv = 0.9;

    /// <summary>
    /// <paramref name="loads"/> best first, leaving out engines that do not serve (<see cref="EngineState"/>).
    /// <paramref name="pending"/>: requests this caller sent to a silo since the loads were read; <paramref name="tieBreak"/>:
    /// the order of otherwise equal engines (a hash of the conversation id, a rotating index).
    /// </summary>
    public static List<EngineLoad> Rank(IEnumerable<EngineLoad> loads, Func<string, int> pending, Func<EngineLoad, long> tieBreak) =>
        [.. loads
            .Where(l => l.State == EngineState.Ready)
            .Select(l => (Load: l, Pending: pending(l.Silo)))
            .OrderBy(x => x.Load.Waiting + x.Load.Running + x.Pending)
            .ThenBy(x => NearlyFull(x.Load) ? 1 : 0)
            .ThenBy(x => x.Load.ResidentConversations + x.Pending)
            .ThenBy(x => tieBreak(x.Load))
            .Select(x => x.Load)];

    static bool NearlyFull(EngineLoad l) => l.KvBlocksTotal > 0 && l.KvBlocksUsed >= NearlyFullKv * l.KvBlocksTotal;
}
