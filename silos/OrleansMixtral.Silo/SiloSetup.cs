using System.Net;
using Microsoft.Extensions.Hosting;
using Orleans.Configuration;
using Orleans.Dashboard;
using OrleansMixtral.Backends;
using OrleansMixtral.Engine;
using OrleansMixtral.Grains;
using OrleansMixtral.Model;

namespace OrleansMixtral.Silo;

/// <summary>Reads the silo's settings and wires Orleans, the grains and the dashboard into the web host.</summary>
public static class SiloSetup
{
    public const string DashboardPath = "/dashboard";

    sealed record Settings(MixtralSiloOptions Mixtral, bool RedisClustering, int SiloPort, int GatewayPort, int PrimarySiloPort,
        string ClusterId, string ServiceId, string? AdvertisedHost);

    /// <summary>Configures the host; false with a one-line reason when the settings are unusable.</summary>
    public static bool TryConfigure(WebApplicationBuilder builder, out string error)
    {
        Settings s;
        try { s = Read(builder.Configuration); }
        catch (Exception e) when (e is ArgumentException or FormatException or DirectoryNotFoundException or InvalidOperationException or ModelFormatException)
        {
            error = e.Message;
            return false;
        }
        error = "";

        builder.UseOrleans(silo =>
        {
            if (s.RedisClustering)
            {
                silo.UseRedisClustering(s.Mixtral.RedisConnectionString!);
                silo.Configure<ClusterOptions>(o => { o.ClusterId = s.ClusterId; o.ServiceId = s.ServiceId; });
                if (s.AdvertisedHost is { } host)
                    silo.ConfigureEndpoints(ResolveAddress(host), s.SiloPort, s.GatewayPort, listenOnAnyHostAddress: true);
                else
                    silo.ConfigureEndpoints(s.SiloPort, s.GatewayPort, listenOnAnyHostAddress: true);
            }
            else
            {
                // One machine: the silo on PrimarySiloPort keeps the membership table; others join it.
                var primary = s.PrimarySiloPort == s.SiloPort ? null : new IPEndPoint(IPAddress.Loopback, s.PrimarySiloPort);
                silo.UseLocalhostClustering(s.SiloPort, s.GatewayPort, primary, s.ServiceId, s.ClusterId);
            }
            silo.AddMixtral(s.Mixtral);
            silo.Services.Configure<ClusterMembershipOptions>(builder.Configuration.GetSection("Membership"));
            // Grain statistics, silo counters, and the engine's gauges (EngineMetrics publishes on the meter it reads).
            silo.AddDashboard();
        });
        builder.Services.AddSingleton(s.Mixtral);
        return true;
    }

    static Settings Read(IConfiguration config)
    {
        var mixtral = new MixtralSiloOptions();
        config.GetSection("Mixtral").Bind(mixtral);
        mixtral.Model = config["Model"] ?? mixtral.Model;
        mixtral.Backend = (config["Backend"] ?? "auto").ToLowerInvariant() switch
        {
            "auto" => EngineBackendKind.Auto,
            "cpu" => EngineBackendKind.Cpu,
            "cuda" => EngineBackendKind.Cuda,
            var other => throw new ArgumentException($"--Backend must be auto, cpu or cuda, not '{other}'"),
        };
        if (config["Int8"] is { } int8) mixtral.Int8 = bool.Parse(int8);
        var redis = config["Redis"] ?? mixtral.RedisConnectionString;
        mixtral.RedisConnectionString = redis;
        mixtral.Storage = (config["Storage"] ?? "sqlite").ToLowerInvariant() switch
        {
            "sqlite" => ConversationStorageKind.Sqlite,
            "memory" => ConversationStorageKind.Memory,
            "redis" => ConversationStorageKind.Redis,
            var other => throw new ArgumentException($"--Storage must be sqlite, redis or memory, not '{other}'"),
        };
        mixtral.DataDirectory = config["DataDirectory"] ?? mixtral.DataDirectory;
        var redisClustering = (config["Clustering"] ?? "localhost").ToLowerInvariant() switch
        {
            "localhost" => false,
            "redis" => true,
            var other => throw new ArgumentException($"--Clustering must be localhost or redis, not '{other}'"),
        };
        if ((redisClustering || mixtral.Storage == ConversationStorageKind.Redis) && string.IsNullOrWhiteSpace(redis))
            throw new ArgumentException("--Clustering redis and --Storage redis need --Redis HOST:PORT (a StackExchange.Redis connection string)");
        mixtral.Model = ModelPaths.Resolve(mixtral.Model); // fail now, not when the silo starts
        if (mixtral.PrefillChunkTokens is { } chunk
            && PrefillChunk.Check(chunk, ModelLoader.ReadConfig(mixtral.Model).MaxPositionEmbeddings) is { } why)
            throw new ArgumentException("--Mixtral:PrefillChunkTokens: " + why);
        var siloPort = Port(config, "SiloPort", 11111);
        return new Settings(mixtral, redisClustering, siloPort, Port(config, "GatewayPort", 30000), Port(config, "PrimarySiloPort", 11111),
            config["ClusterId"] ?? "mixtral", config["ServiceId"] ?? "mixtral", config["AdvertisedHost"]);
    }

    static int Port(IConfiguration config, string key, int fallback)
    {
        var text = config[key];
        if (text is null) return fallback;
        if (!int.TryParse(text, out var port) || port is < 1 or > 65535) throw new ArgumentException($"--{key} must be a port number, not '{text}'");
        return port;
    }

    static IPAddress ResolveAddress(string host) =>
        IPAddress.TryParse(host, out var ip) ? ip : Dns.GetHostAddresses(host).First(a => a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork);

    /// <summary>The dashboard, the engines' loads as JSON, and the start-up line saying where they are.</summary>
    public static void MapEndpoints(WebApplication app)
    {
        app.MapOrleansDashboard(DashboardPath);
        app.MapGet("/", () => Results.Redirect(DashboardPath + "/"));
        app.MapGet("/engines", async (EngineDirectory engines) => Results.Json(await engines.GetLoadsAsync(fresh: true)));
        app.Lifetime.ApplicationStarted.Register(() =>
        {
            var host = app.Services.GetRequiredService<EngineHost>();
            var options = app.Services.GetRequiredService<MixtralSiloOptions>();
            var load = host.GetLoad();
            var url = app.Urls.FirstOrDefault() ?? "http://localhost:5000";
            Console.WriteLine($"OrleansMixtral silo {host.SiloKey} ready: model {load.Model} ({load.Backend}), KV cache {load.KvBlocksTotal * load.KvBlockSize} tokens, storage {options.Storage.ToString().ToLowerInvariant()}");
            Console.WriteLine($"  dashboard: {url.TrimEnd('/')}{DashboardPath}/   engines: {url.TrimEnd('/')}/engines");
            Console.Out.Flush();
        });
    }
}
