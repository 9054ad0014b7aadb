using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Runtime.Placement;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Grains;

/// <summary>
/// Places a grain whose key is a silo address (<c>SiloAddress.ToParsableString()</c>) on exactly that silo, and
/// nowhere else: one engine grain per silo, next to the engine it fronts.
/// </summary>
/// <remarks>
/// Why a placement director keyed by the silo address rather than a GrainService (which Orleans also runs once per
/// silo): the engine grain is then an ordinary grain. Any grain or external client addresses a given silo's engine with
/// <c>GetGrain&lt;IEngineGrain&gt;(siloKey)</c>, its calls are plain grain calls (so <c>IAsyncEnumerable</c> streaming
/// and call cancellation work as for every grain, and the dashboard lists it with per-method statistics), and a silo
/// that is gone is reported at once: placement fails for a silo that is not an active member, instead of a
/// GrainService client silently routing by a hash ring to some other silo's service.
/// </remarks>
[Serializable, GenerateSerializer, Immutable, SuppressReferenceTracking, Alias("mixtral.SiloEnginePlacement")]
public sealed class SiloEnginePlacement : PlacementStrategy
{
    public static SiloEnginePlacement Instance { get; } = new();
}

/// <summary>Marks a grain class to be placed by <see cref="SiloEnginePlacementDirector"/>.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class SiloEnginePlacementAttribute() : PlacementAttribute(SiloEnginePlacement.Instance);

/// <summary>The director of <see cref="SiloEnginePlacement"/>: the silo named by the grain's key, if it is a compatible member.</summary>
public sealed class SiloEnginePlacementDirector : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var key = target.GrainIdentity.Key.ToString();
        SiloAddress wanted;
        try { wanted = SiloAddress.FromParsableString(key); }
        catch (Exception e) { throw new OrleansException($"engine grain key '{key}' is not a silo address", e); }
        foreach (var silo in context.GetCompatibleSilos(target))
            if (silo.Equals(wanted)) return Task.FromResult(silo);
        throw new SiloUnavailableException($"silo {wanted} is not an active member of the cluster; its engine is gone");
    }
}
