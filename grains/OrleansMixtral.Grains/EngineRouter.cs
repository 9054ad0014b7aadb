using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Runtime;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Grains;

/// <summary>
/// Each silo's router of turns to the cluster's engines (a DI singleton): which silos are active members,
/// their engines' loads (queried from every engine grain, cached briefly), and the choice of the least loaded engine
/// for a conversation that has none or must leave its own.
/// </summary>
public sealed partial class EngineRouter(
    IClusterMembershipService membership,
    IGrainFactory grains,
    IOptions<MixtralSiloOptions> options,
    ILogger<EngineRouter> log)
{
    readonly MixtralSiloOptions _options = options.Value;
    readonly Lock _lock = new();
    IReadOnlyList<EngineLoad> _loads = [];
    long _loadsAt;
    Task<IReadOnlyList<EngineLoad>>? _refreshing;
    // Conversations this silo sent to an engine since the last refresh (the engines' own counts lag behind).
    readonly Dictionary<string, HashSet<string>> _assigned = [];

    /// <summary>Active members, as engine grain keys.</summary>
    public IReadOnlyList<string> ActiveSilos =>
        [.. membership.CurrentSnapshot.Members.Values.Where(m => m.Status == SiloStatus.Active).Select(m => m.SiloAddress.ToParsableString())];

    /// <summary>Whether the silo of an engine grain key is an active member now.</summary>
    public bool IsActive(string siloKey)
    {
        SiloAddress address;
        try { address = SiloAddress.FromParsableString(siloKey); }
        catch (FormatException) { return false; }
        return membership.CurrentSnapshot.GetSiloStatus(address) == SiloStatus.Active;
    }

    /// <summary>Whether the silo is known to be going or gone (shutting down, stopping, dead).</summary>
    public bool IsTerminating(string siloKey)
    {
        try { return membership.CurrentSnapshot.GetSiloStatus(SiloAddress.FromParsableString(siloKey)).IsTerminating(); }
        catch (FormatException) { return true; }
    }

    public IEngineGrain Engine(string siloKey) => grains.GetGrain<IEngineGrain>(siloKey);

    /// <summary>
    /// The loads of all reachable engines. Cached for LoadCacheMilliseconds; an older answer (up to a few seconds) is
    /// still returned at once while a refresh runs in the background, so routing a turn never waits on a round of load
    /// queries unless there is no recent answer at all (or <paramref name="fresh"/> asks for one).
    /// </summary>
    public Task<IReadOnlyList<EngineLoad>> GetLoadsAsync(bool fresh = false)
    {
        lock (_lock)
        {
            var age = Environment.TickCount64 - _loadsAt;
            if (!fresh && _loads.Count > 0 && age < _options.LoadCacheMilliseconds) return Task.FromResult(_loads);
            // On the thread pool: shared by grains of every activation, owned by none.
            var refresh = _refreshing ??= Task.Run(RefreshAsync);
            if (!fresh && _loads.Count > 0 && age < StaleLimitMilliseconds) return Task.FromResult(_loads);
            return refresh;
        }
    }

    const long StaleLimitMilliseconds = 5000;

    async Task<IReadOnlyList<EngineLoad>> RefreshAsync()
    {
        try
        {
            var silos = ActiveSilos;
            var timeout = TimeSpan.FromMilliseconds(_options.ProbeTimeoutMilliseconds);
            var queries = silos.Select(async s =>
            {
                try { return await Engine(s).GetLoad().WaitAsync(timeout); }
                catch (Exception e)
                {
                    LogLoadFailed(log, s, e.Message);
                    return null;
                }
            }).ToList();
            var loads = (await Task.WhenAll(queries)).Where(l => l is not null && l.State == EngineState.Ready).Select(l => l!).ToList();
            lock (_lock)
            {
                _loads = loads;
                _loadsAt = Environment.TickCount64;
                _assigned.Clear();
            }
            return loads;
        }
        finally
        {
            lock (_lock) _refreshing = null;
        }
    }

    /// <summary>
    /// The least loaded engine for <paramref name="conversationId"/> by the one selection policy
    /// (<see cref="EngineSelection"/>), leaving out <paramref name="exclude"/> and silos that are not active; null when no
    /// engine answers. Ties go by a hash of the conversation id (stable for a conversation, spread over conversations).
    /// </summary>
    public async Task<string?> PickAsync(string conversationId, IReadOnlyCollection<string> exclude)
    {
        var loads = await GetLoadsAsync();
        if (loads.All(l => exclude.Contains(l.Silo))) loads = await GetLoadsAsync(fresh: true);
        lock (_lock)
        {
            var best = EngineSelection.Rank(loads.Where(l => !exclude.Contains(l.Silo) && IsActive(l.Silo)),
                silo => _assigned.TryGetValue(silo, out var set) ? set.Count(c => c != conversationId) : 0,
                l => Hash(conversationId, l.Silo)).FirstOrDefault();
            if (best is null) return null;
            if (!_assigned.TryGetValue(best.Silo, out var mine)) _assigned[best.Silo] = mine = [];
            mine.Add(conversationId);
            return best.Silo;
        }
    }

    static uint Hash(string a, string b)
    {
        var h = 2166136261u;
        foreach (var ch in a) h = (h ^ ch) * 16777619u;
        h = (h ^ '|') * 16777619u;
        foreach (var ch in b) h = (h ^ ch) * 16777619u;
        return h;
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Engine on {Silo} did not report its load: {Error}")]
    static partial void LogLoadFailed(ILogger log, string silo, string error);
}
