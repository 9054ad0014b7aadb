using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans;
using Orleans.Configuration;
using Orleans.Hosting;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Client;

/// <summary>
/// Connects to a running cluster. The cluster is named by one string, as <c>mixtral chat --cluster</c> takes it:
/// <list type="bullet">
/// <item><c>localhost</c> or <c>localhost:PORT</c>: a local cluster (gateway port 30000 by default);</item>
/// <item><c>HOST:PORT[,HOST:PORT...]</c>: these gateways;</item>
/// <item><c>redis://HOST:PORT</c> (or <c>redis:CONNECTION-STRING</c>): the gateways the silos registered in that Redis;</item>
/// <item><c>postgres:NPGSQL-CONNECTION-STRING</c> (<c>postgres:Host=db;Port=5432;Database=orleansmixtral;Username=mixtral</c>):
/// the gateways the silos registered in that PostgreSQL database.</item>
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
    /// defaults. <paramref name="waitForLocalSilo"/>: while no local gateway is registered nor listens, wait up to this
    /// long for one (a client that starts before its silo; a silo registers before it opens its gateway).
    /// </summary>
    public static (string ClusterId, string ServiceId) ResolveIds(string cluster, string? clusterId = null, string? serviceId = null,
        TimeSpan waitForLocalSilo = default)
    {
        if (!string.IsNullOrWhiteSpace(clusterId)) return (clusterId, serviceId ?? DefaultServiceId);
        LocalClusterEntry? local = null;
        if (!IsSharedMembership(cluster.Trim()))
        {
            var gateways = Gateways(cluster.Trim());
            if (gateways.All(g => IPAddress.IsLoopback(g.Address)))
            {
                var waited = System.Diagnostics.Stopwatch.StartNew();
                while ((local = gateways.Select(g => LocalClusters.Find(g.Port)).FirstOrDefault(e => e is not null)) is null
                       && waited.Elapsed < waitForLocalSilo && !gateways.Any(IsListening))
                    Thread.Sleep(250);
            }
        }
        return (local?.ClusterId ?? DefaultClusterId, serviceId ?? local?.ServiceId ?? DefaultServiceId);
    }

    /// <summary>Whether something accepts connections there (a connect, not a bind: a bind could take the port from a silo starting now).</summary>
    static bool IsListening(IPEndPoint endpoint)
    {
        try
        {
            using var socket = new System.Net.Sockets.Socket(endpoint.AddressFamily, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            return socket.ConnectAsync(endpoint).Wait(TimeSpan.FromSeconds(1)) && socket.Connected;
        }
        catch (Exception e) when (e is AggregateException or System.Net.Sockets.SocketException) { return false; }
    }

    /// <summary>Configures an Orleans client for the cluster named by <paramref name="cluster"/>, with the token streams.</summary>
    /// <param name="clusterId">The cluster's id; null: see <see cref="ResolveIds"/>, when the client starts.</param>
    /// <param name="waitForLocalSilo">With no <paramref name="clusterId"/>: how long a client of a local gateway waits for its silo to register (see <see cref="ResolveIds"/>).</param>
    /// <exception cref="ArgumentException">The cluster string is not one of the forms above.</exception>
    public static IClientBuilder UseMixtralCluster(this IClientBuilder client, string cluster,
        string? clusterId = null, string? serviceId = null, TimeSpan waitForLocalSilo = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(cluster);
        cluster = cluster.Trim();
        if (cluster.StartsWith("redis:", StringComparison.OrdinalIgnoreCase))
        {
            var connection = cluster["redis:".Length..].TrimStart('/');
            if (connection.Length == 0) throw new ArgumentException("redis: needs a connection string, e.g. redis://127.0.0.1:6379");
            client.UseRedisClustering(connection);
        }
        else if (cluster.StartsWith(PostgresPrefix, StringComparison.OrdinalIgnoreCase))
        {
            var connection = cluster[PostgresPrefix.Length..];
            if (connection.Length == 0)
                throw new ArgumentException("postgres: needs an Npgsql connection string, e.g. postgres:Host=127.0.0.1;Port=5432;Database=orleansmixtral;Username=mixtral");
            client.UseAdoNetClustering(o => { o.Invariant = "Npgsql"; o.ConnectionString = connection; });
        }
        else
        {
            var gateways = Gateways(cluster);
            client.UseStaticClustering(gateways.ToArray());
        }
        // A silo that stops answering without closing its connections (frozen, or a machine cut off) is only dropped from
        // the client's gateways when the list is read again: with a membership table (Redis, PostgreSQL) the list then
        // leaves out the silos the cluster declared dead, and the client closes its connection to them, so the grains it
        // sent through them go to a live gateway. Orleans reads it once a minute; a fixed list never changes.
        client.Configure<GatewayOptions>(o => o.GatewayListRefreshPeriod = GatewayListRefresh);
        // Resolved when the client starts, not now: a silo started meanwhile has registered by then.
        client.Configure<ClusterOptions>(o => (o.ClusterId, o.ServiceId) = ResolveIds(cluster, clusterId, serviceId, waitForLocalSilo));
        client.AddMemoryStreams(TokenStreams.Provider);
        // the caller's trace (a gateway's HTTP request) continues in the grains it calls
        client.AddActivityPropagation();
        return client;
    }

    const string PostgresPrefix = "postgres:";

    /// <summary>How often a client reads the cluster's gateways again (a membership table's read is one query).</summary>
    public static readonly TimeSpan GatewayListRefresh = TimeSpan.FromSeconds(5);

    /// <summary>The cluster is named by its membership table (Redis, PostgreSQL), which every machine's silos share, not by gateways.</summary>
    static bool IsSharedMembership(string cluster) =>
        cluster.StartsWith("redis:", StringComparison.OrdinalIgnoreCase) || cluster.StartsWith(PostgresPrefix, StringComparison.OrdinalIgnoreCase);

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
    /// Starts a client host connected to the cluster, trying again until <paramref name="timeout"/> (default 30 s) has
    /// passed in all; then a <see cref="TimeoutException"/> whose inner exception is the last attempt's failure, if it
    /// failed (Orleans' own connection attempts can go on for minutes: one still running is left to end on its own).
    /// Dispose the host to disconnect; its <see cref="MixtralClient"/> is in the host's services.
    /// </summary>
    public static async Task<IHost> ConnectAsync(string cluster, TimeSpan? timeout = null, string? clusterId = null,
        string? serviceId = null, LogLevel logLevel = LogLevel.Warning, CancellationToken cancellationToken = default)
    {
        var budget = timeout ?? TimeSpan.FromSeconds(30);
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        while (true)
        {
            var left = budget - System.Diagnostics.Stopwatch.GetElapsedTime(started);
            var builder = Host.CreateApplicationBuilder();
            builder.Logging.SetMinimumLevel(logLevel);
            builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
            builder.UseOrleansClient(client => client.UseMixtralCluster(cluster, clusterId, serviceId));
            builder.Services.AddSingleton(sp => new MixtralClient(sp.GetRequiredService<IClusterClient>()));
            var host = builder.Build();
            using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            attempt.CancelAfter(left > TimeSpan.Zero ? left : TimeSpan.Zero);
            var starting = host.StartAsync(attempt.Token);
            try
            {
                await starting.WaitAsync(left > TimeSpan.Zero ? left : TimeSpan.Zero, cancellationToken);
                return host;
            }
            catch (Exception e)
            {
                if (starting.IsCompleted) host.Dispose();
                else _ = starting.ContinueWith(_ => host.Dispose(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
                cancellationToken.ThrowIfCancellationRequested();
                left = budget - System.Diagnostics.Stopwatch.GetElapsedTime(started);
                if (left <= TimeSpan.Zero)
                    throw new TimeoutException($"the cluster at {cluster} did not answer within {budget.TotalSeconds:0.#} s",
                        e is TimeoutException or OperationCanceledException ? null : e);
                await Task.Delay(left < TimeSpan.FromMilliseconds(500) ? left : TimeSpan.FromMilliseconds(500), cancellationToken);
            }
        }
    }
}
