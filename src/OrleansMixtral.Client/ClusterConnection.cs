using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans;
using Orleans.Configuration;
using Orleans.Hosting;
using OrleansMixtral.Grains;

namespace OrleansMixtral.Client;

/// <summary>
/// Connects to a running cluster. The cluster is named by one string, as <c>mixtral chat --cluster</c> takes it:
/// <list type="bullet">
/// <item><c>localhost</c> or <c>localhost:PORT</c>: a local cluster (gateway port 30000 by default);</item>
/// <item><c>HOST:PORT[,HOST:PORT...]</c>: these gateways;</item>
/// <item><c>redis://HOST:PORT</c> (or <c>redis:CONNECTION-STRING</c>): the gateways the silos registered in that Redis.</item>
/// </list>
/// The cluster id: the one given, else, for gateways on this machine, the id their silo registered
/// (<see cref="LocalClusters"/>: a local cluster's id belongs to its data directory), else <see cref="DefaultClusterId"/>.
/// </summary>
public static class ClusterConnection
{
    /// <summary>The cluster id of silos with Redis clustering unless they are given one (and of clients that find no local registration).</summary>
    public const string DefaultClusterId = "mixtral";
    public const string DefaultServiceId = "mixtral";

    /// <summary>
    /// The cluster and service ids a client of <paramref name="cluster"/> uses: <paramref name="clusterId"/> when given;
    /// else, when every gateway is on this machine, those of the silo registered on the first gateway's port; else the
    /// defaults.
    /// </summary>
    public static (string ClusterId, string ServiceId) ResolveIds(string cluster, string? clusterId = null, string? serviceId = null)
    {
        if (!string.IsNullOrWhiteSpace(clusterId)) return (clusterId, serviceId ?? DefaultServiceId);
        LocalClusterEntry? local = null;
        if (!cluster.Trim().StartsWith("redis:", StringComparison.OrdinalIgnoreCase))
        {
            var gateways = Gateways(cluster.Trim());
            if (gateways.All(g => IPAddress.IsLoopback(g.Address)))
                local = gateways.Select(g => LocalClusters.Find(g.Port)).FirstOrDefault(e => e is not null);
        }
        return (local?.ClusterId ?? DefaultClusterId, serviceId ?? local?.ServiceId ?? DefaultServiceId);
    }

    /// <summary>Configures an Orleans client for the cluster named by <paramref name="cluster"/>, with the token streams.</summary>
    /// <param name="clusterId">The cluster's id; null: see <see cref="ResolveIds"/>.</param>
    /// <exception cref="ArgumentException">The cluster string is not one of the forms above.</exception>
    public static IClientBuilder UseMixtralCluster(this IClientBuilder client, string cluster,
        string? clusterId = null, string? serviceId = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(cluster);
        cluster = cluster.Trim();
        (clusterId, serviceId) = ResolveIds(cluster, clusterId, serviceId);
        if (cluster.StartsWith("redis:", StringComparison.OrdinalIgnoreCase))
        {
            var connection = cluster["redis:".Length..].TrimStart('/');
            if (connection.Length == 0) throw new ArgumentException("redis: needs a connection string, e.g. redis://127.0.0.1:6379");
            client.UseRedisClustering(connection);
        }
        else
        {
            var gateways = Gateways(cluster);
            client.UseStaticClustering(gateways.ToArray());
        }
        client.Configure<ClusterOptions>(o =>
        {
            o.ClusterId = clusterId;
            o.ServiceId = serviceId;
        });
        client.AddMemoryStreams(TokenStreams.Provider);
        return client;
    }

    static List<IPEndPoint> Gateways(string cluster)
    {
        var list = new List<IPEndPoint>();
        foreach (var part in cluster.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var colon = part.LastIndexOf(':');
            var host = colon < 0 ? part : part[..colon];
            var port = 30000;
            if (colon >= 0 && (!int.TryParse(part[(colon + 1)..], out port) || port is < 1 or > 65535))
                throw new ArgumentException($"'{part}' is not HOST:PORT");
            IPAddress address;
            if (host.Equals("localhost", StringComparison.OrdinalIgnoreCase)) address = IPAddress.Loopback;
            else if (!IPAddress.TryParse(host.Trim('[', ']'), out address!))
                address = Dns.GetHostAddresses(host).FirstOrDefault(a => a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork)
                    ?? throw new ArgumentException($"cannot resolve '{host}'");
            list.Add(new IPEndPoint(address, port));
        }
        if (list.Count == 0) throw new ArgumentException($"no gateway in '{cluster}'");
        return list;
    }

    /// <summary>
    /// Starts a client host connected to the cluster (retrying until <paramref name="timeout"/>). Dispose the host to
    /// disconnect; its <see cref="MixtralClient"/> is in the host's services.
    /// </summary>
    public static async Task<IHost> ConnectAsync(string cluster, TimeSpan? timeout = null, string? clusterId = null,
        string? serviceId = null, LogLevel logLevel = LogLevel.Warning, CancellationToken cancellationToken = default)
    {
        var until = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (true)
        {
            var builder = Host.CreateApplicationBuilder();
            builder.Logging.SetMinimumLevel(logLevel);
            builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
            builder.UseOrleansClient(client => client.UseMixtralCluster(cluster, clusterId, serviceId));
            builder.Services.AddSingleton(sp => new MixtralClient(sp.GetRequiredService<IClusterClient>()));
            var host = builder.Build();
            try
            {
                await host.StartAsync(cancellationToken);
                return host;
            }
            catch (Exception) when (DateTime.UtcNow < until && !cancellationToken.IsCancellationRequested)
            {
                host.Dispose();
                await Task.Delay(500, cancellationToken);
            }
            catch
            {
                host.Dispose();
                throw;
            }
        }
    }
}
