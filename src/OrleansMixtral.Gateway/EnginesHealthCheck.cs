using Microsoft.Extensions.Diagnostics.HealthChecks;
using OrleansMixtral.Client.AI;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Gateway;

/// <summary>
/// /health's check (ASP.NET Core health checks): healthy when at least one engine of the cluster answers; the loads it
/// read go with the result (<see cref="LoadsKey"/>) for <see cref="GatewayEndpoints.WriteHealthAsync"/> to write.
/// </summary>
public sealed class EnginesHealthCheck(MixtralChatService service) : IHealthCheck
{
    public const string Name = "engines";
    public const string LoadsKey = "loads";

    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        IReadOnlyList<EngineLoad> loads;
        try { loads = await service.GetEngineLoadsAsync(); }
        catch (Exception) { loads = []; }
        var data = new Dictionary<string, object> { [LoadsKey] = loads };
        return loads.Count > 0
            ? HealthCheckResult.Healthy($"{loads.Count} engines answer", data)
            : HealthCheckResult.Unhealthy("no engine answers", data: data);
    }
}
