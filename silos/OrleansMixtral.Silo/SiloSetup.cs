using System.Net;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Hosting;
using Orleans.Configuration;
using Orleans.Dashboard;
using OrleansMixtral.Backends;
using OrleansMixtral.Engine;
using OrleansMixtral.Gateway;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Hosting;
using OrleansMixtral.Model;

namespace OrleansMixtral.Silo;

/// <summary>
/// Reads the silo's settings and wires Orleans, the grains, the dashboard and (unless <c>--OpenAiApi false</c>) the
/// gateway's OpenAI-compatible endpoints, /health and /metrics into the web host: the README's one command serves all.
/// </summary>
public static class SiloSetup
{
    public const string DashboardPath = SiloPages.DashboardPath;

    /// <summary>The ClusterId of a silo with Redis or PostgreSQL clustering when none is given (the silos of all machines share it).</summary>
    public const string DefaultClusterId = "mixtral";
    public const string DefaultServiceId = "mixtral";

    /// <summary>How the silos find each other: one machine (the primary silo keeps the table), Redis, or PostgreSQL.</summary>
    enum Clustering { Localhost, Redis, Postgres }

    /// <param name="ClusterId">Given (--ClusterId), or null until derived from the data directory.</param>
    /// <param name="OpenAiApi">The HTTP port serves the gateway's endpoints too (<c>--OpenAiApi</c>, default true).</param>
    sealed record Settings(MixtralSiloOptions Mixtral, Clustering Clustering, int SiloPort, int GatewayPort, int PrimarySiloPort,
        string? ClusterId, string ServiceId, string? AdvertisedHost, bool OpenAiApi = true)
    {
        /// <summary>Silos of several machines (a membership table in Redis or PostgreSQL), not one machine's.</summary>
        public bool Shared => Clustering != Clustering.Localhost;
    }

    /// <summary>Configures the host; false with a one-line reason when the settings are unusable.</summary>
    public static bool TryConfigure(WebApplicationBuilder builder, out string error) => TryConfigure(builder, out error, out _);

    /// <summary>
    /// Configures the host; false with a one-line reason and the exit code: 2 for unusable settings, 1 for what the
    /// machine refuses (a port in use, a data directory that cannot be written). Nothing is loaded yet: the model loads
    /// when the silo starts.
    /// </summary>
    public static bool TryConfigure(WebApplicationBuilder builder, out string error, out int exitCode)
    {
        Settings s;
        try
        {
            s = Read(builder.Configuration);
            HostTelemetry.AddTracing(builder.Services, builder.Configuration, "orleansmixtral-silo");
        }
        catch (Exception e) when (e is ArgumentException or FormatException or DirectoryNotFoundException or InvalidOperationException or ModelFormatException)
        {
            (error, exitCode) = (e.Message, 2);
            return false;
        }
        if (s.OpenAiApi && !GatewayHost.TryConfigureInSilo(builder, s.Mixtral.Model, out var api))
        {
            (error, exitCode) = (api, 2);
            return false;
        }
        try
        {
            if (PortInUse(builder.Configuration, s) is { } busy)
            {
                (error, exitCode) = (busy, 1);
                return false;
            }
            // A local cluster's id is its data directory's: clusters started on other directories never merge with it.
            s = s with { ClusterId = s.ClusterId ?? (s.Shared ? DefaultClusterId : LocalClusters.ClusterIdFor(s.Mixtral.ResolveDataDirectory())) };
            if (PrimaryProblem(s) is { } primary)
            {
                (error, exitCode) = (primary, 1);
                return false;
            }
            // Clients given this machine's gateway port and no cluster id find the id here (removed when the silo stops;
            // ignored once this process is gone). Registered now, so that silos joining this one can check the id early.
            LocalClusters.Register(new LocalClusterEntry(s.ClusterId!, s.ServiceId, s.GatewayPort, s.SiloPort, s.Mixtral.ResolveDataDirectory(), Environment.ProcessId));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            (error, exitCode) = ($"the data directory {s.Mixtral.ResolveDataDirectory()} cannot be used: {e.Message}", 1);
            return false;
        }
        (error, exitCode) = ("", 0);

        builder.UseOrleans(silo =>
        {
            if (s.Shared)
            {
                if (s.Clustering == Clustering.Redis) silo.UseRedisClustering(s.Mixtral.RedisConnectionString!);
                else
                    // Orleans' ADO.NET membership table over the project's schema (tools/postgres/schema-clustering.sql).
                    silo.UseAdoNetClustering(o =>
                    {
                        o.Invariant = MixtralSiloOptions.PostgresInvariant;
                        o.ConnectionString = s.Mixtral.PostgresConnectionString;
                    });
                silo.Configure<ClusterOptions>(o => { o.ClusterId = s.ClusterId!; o.ServiceId = s.ServiceId; });
                if (s.AdvertisedHost is { } host)
                    silo.ConfigureEndpoints(ResolveAddress(host), s.SiloPort, s.GatewayPort, listenOnAnyHostAddress: true);
                else
                    silo.ConfigureEndpoints(s.SiloPort, s.GatewayPort, listenOnAnyHostAddress: true);
            }
            else
            {
                // One machine: the silo on PrimarySiloPort keeps the membership table; others join it.
                var primary = s.PrimarySiloPort == s.SiloPort ? null : new IPEndPoint(IPAddress.Loopback, s.PrimarySiloPort);
                silo.UseLocalhostClustering(s.SiloPort, s.GatewayPort, primary, s.ServiceId, s.ClusterId!);
            }
            silo.AddMixtral(s.Mixtral);
            silo.Services.Configure<ClusterMembershipOptions>(builder.Configuration.GetSection("Membership"));
            // Grain statistics, silo counters, and the engine's gauges (EngineMetrics publishes on the meter it reads).
            silo.AddDashboard();
        });
        builder.Services.AddSingleton(s.Mixtral);
        builder.Services.AddSingleton(s);
        return true;
    }

    static Settings Read(IConfiguration config)
    {
        var mixtral = new MixtralSiloOptions();
        config.GetSection("Mixtral").Bind(mixtral);
        mixtral.Model = config["Model"] ?? mixtral.Model;
        mixtral.Backend = (config["Backend"] ?? "auto").ToLowerInvariant() switch
        {
            "auto" => BackendKind.Auto,
            "cpu" => BackendKind.Cpu,
            "cuda" => BackendKind.Cuda,
            var other => throw new ArgumentException($"--Backend must be auto, cpu or cuda, not '{other}'"),
        };
        if (config["Int8"] is { } int8) mixtral.Int8 = bool.Parse(int8);
        var redis = config["Redis"] ?? mixtral.RedisConnectionString;
        mixtral.RedisConnectionString = redis;
        var postgres = config["Postgres"] ?? mixtral.PostgresConnectionString;
        mixtral.PostgresConnectionString = postgres;
        mixtral.Storage = (config["Storage"] ?? "sqlite").ToLowerInvariant() switch
        {
            "sqlite" => ConversationStorageKind.Sqlite,
            "memory" => ConversationStorageKind.Memory,
            "redis" => ConversationStorageKind.Redis,
            "postgres" or "postgresql" => ConversationStorageKind.Postgres,
            var other => throw new ArgumentException($"--Storage must be sqlite, postgres, redis or memory, not '{other}'"),
        };
        mixtral.DataDirectory = config["DataDirectory"] ?? mixtral.DataDirectory;
        var clustering = (config["Clustering"] ?? "localhost").ToLowerInvariant() switch
        {
            "localhost" => Clustering.Localhost,
            "redis" => Clustering.Redis,
            "postgres" or "postgresql" => Clustering.Postgres,
            var other => throw new ArgumentException($"--Clustering must be localhost, postgres or redis, not '{other}'"),
        };
        if ((clustering == Clustering.Redis || mixtral.Storage == ConversationStorageKind.Redis) && string.IsNullOrWhiteSpace(redis))
            throw new ArgumentException("--Clustering redis and --Storage redis need --Redis HOST:PORT (a StackExchange.Redis connection string)");
        if ((clustering == Clustering.Postgres || mixtral.Storage == ConversationStorageKind.Postgres) && string.IsNullOrWhiteSpace(postgres))
            throw new ArgumentException("--Clustering postgres and --Storage postgres need --Postgres \"Host=HOST;Port=5432;Database=orleansmixtral;Username=USER\" (an Npgsql connection string; the schema: tools/postgres/apply-schema.sh)");
        // fail now, not when the silo starts; a synthetic model (random weights made on the GPU) is a name, not a directory
        var synthetic = ModelLoader.IsSynthetic(mixtral.Model);
        if (!synthetic) mixtral.Model = ModelPaths.Resolve(mixtral.Model);
        if (mixtral.PrefillChunkTokens is { } chunk
            && PrefillChunk.Check(chunk, ModelLoader.ReadConfig(mixtral.Model).MaxPositionEmbeddings) is { } why)
            throw new ArgumentException("--Mixtral:PrefillChunkTokens: " + why);
        if (mixtral.PromptTokensWhileDecoding is < PrefillChunk.MinTokens)
            throw new ArgumentException($"--Mixtral:PromptTokensWhileDecoding must be at least {PrefillChunk.MinTokens} tokens, got {mixtral.PromptTokensWhileDecoding}");
        mixtral.ConversationIdle(); // throws for an age Orleans would refuse when the silo starts
        // A GPU this process does not see stops the silo now, not after a model load.
        if (mixtral.Engine && SiloEngineHost.DeviceProblem(mixtral) is { } badDevice) throw new ArgumentException(badDevice);
        var siloPort = Port(config, "SiloPort", 11111);
        var gatewayPort = Port(config, "GatewayPort", 30000);
        if (siloPort == gatewayPort) throw new ArgumentException($"--SiloPort and --GatewayPort must differ (both are {siloPort})");
        var clusterId = config["ClusterId"];
        if (clusterId is not null && string.IsNullOrWhiteSpace(clusterId)) throw new ArgumentException("--ClusterId must not be empty");
        var openAi = config["OpenAiApi"] is not { } api || (bool.TryParse(api, out var on)
            ? on : throw new ArgumentException($"--OpenAiApi must be true or false, not '{api}'"));
        // The API reads the model directory's tokenizer.json and config.json, which a synthetic model has not (its load
        // tests are Orleans clients: ClusterBench).
        openAi &= !synthetic;
        return new Settings(mixtral, clustering, siloPort, gatewayPort, Port(config, "PrimarySiloPort", 11111),
            clusterId, config["ServiceId"] ?? DefaultServiceId, config["AdvertisedHost"], openAi);
    }

    /// <summary>
    /// A one-line reason when a port the silo is to listen on is taken (Orleans' silo and gateway ports, the dashboard's
    /// HTTP addresses), else null. Checked before anything loads: Orleans opens its gateway, and ASP.NET Core its HTTP
    /// port, only after the model has loaded.
    /// </summary>
    static string? PortInUse(IConfiguration config, Settings s)
    {
        // Localhost clustering listens on the loopback address; Redis and PostgreSQL clustering on every address.
        var orleans = s.Shared ? IPAddress.Any : IPAddress.Loopback;
        var checks = new List<(IPAddress Address, int Port, string What)>
        {
            (orleans, s.SiloPort, "the silo port, --SiloPort"),
            (orleans, s.GatewayPort, "the Orleans gateway port, --GatewayPort"),
        };
        checks.AddRange(HttpEndpoints(config).Select(e => (e.Address, e.Port, "the dashboard's HTTP port, --urls")));
        foreach (var (address, port, what) in checks)
        {
            if (!LocalClusters.IsPortInUse(address, port)) continue;
            var where = address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any) ? "" : $" on {address}";
            return $"port {port} ({what}) is already in use{where}: is another silo running? Stop it, or give this one other ports (--SiloPort, --GatewayPort, --urls)";
        }
        return null;
    }

    static readonly TimeSpan PrimaryWait = TimeSpan.FromSeconds(10);

    /// <summary>
    /// With localhost clustering, a silo that joins another (--PrimarySiloPort) fails at once, in one line, where Orleans
    /// would retry for minutes: when nothing listens on the primary's port, or the silo there is another cluster's (it
    /// refuses connections of other cluster ids, so the clusters never merge). A primary started at the same moment has
    /// <see cref="PrimaryWait"/> to open its port.
    /// </summary>
    static string? PrimaryProblem(Settings s)
    {
        if (s.Shared || s.PrimarySiloPort == s.SiloPort) return null;
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!LocalClusters.IsPortInUse(IPAddress.Loopback, s.PrimarySiloPort))
        {
            if (waited.Elapsed > PrimaryWait)
                return $"no silo listens on port {s.PrimarySiloPort}, the primary silo this one joins (--PrimarySiloPort): start the cluster's first silo before the others";
            Thread.Sleep(250);
        }
        if (LocalClusters.FindBySiloPort(s.PrimarySiloPort) is { } primary && primary.ClusterId != s.ClusterId)
            return $"the silo on port {s.PrimarySiloPort} (--PrimarySiloPort) is another cluster's ({primary.ClusterId}, data directory {primary.DataDirectory}); " +
                   $"this silo's cluster is {s.ClusterId} (data directory {s.Mixtral.ResolveDataDirectory()}): give --DataDirectory {primary.DataDirectory} to join it";
        return null;
    }

    /// <summary>The addresses ASP.NET Core will listen on: --urls (or ASPNETCORE_URLS, HTTP_PORTS), else its default http://localhost:5000.</summary>
    static IEnumerable<(IPAddress Address, int Port)> HttpEndpoints(IConfiguration config)
    {
        var urls = config["urls"];
        if (string.IsNullOrWhiteSpace(urls))
        {
            var ports = string.Join(';', new[] { config["http_ports"], config["https_ports"] }.Where(p => !string.IsNullOrWhiteSpace(p)));
            urls = ports.Length > 0
                ? string.Join(';', ports.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(p => $"http://*:{p}"))
                : "http://localhost:5000";
        }
        foreach (var url in urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var text = url.Replace("://*", "://0.0.0.0", StringComparison.Ordinal).Replace("://+", "://0.0.0.0", StringComparison.Ordinal);
            if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Port <= 0) continue;
            var host = uri.Host.Trim('[', ']');
            // Kestrel binds a host name other than localhost on every address.
            var address = host.Equals("localhost", StringComparison.OrdinalIgnoreCase) ? IPAddress.Loopback
                : IPAddress.TryParse(host, out var ip) ? ip : IPAddress.Any;
            yield return (address, uri.Port);
        }
    }

    /// <summary>What to do with the silo, as lines that work when copied: chat with it, call its API, watch it.</summary>
    static IEnumerable<string> NextSteps(WebApplication app, Settings s, string url)
    {
        // a wildcard listening address is reached as localhost
        var http = Regex.Replace(url.TrimEnd('/'), @"://(\*|\+|0\.0\.0\.0|\[::\])", "://localhost");
        yield return "chat:       " + ChatCommand(s.GatewayPort);
        if (s.OpenAiApi)
        {
            var service = app.Services.GetRequiredService<Client.AI.MixtralChatService>();
            var keyed = !app.Services.GetRequiredService<ApiKeys>().IsEmpty;
            var body = $$"""{"model": "{{service.ModelId}}", "messages": [{"role": "user", "content": "Tell me about the old city."}], "max_tokens": 32}""";
            yield return $"OpenAI API: {http}/v1 (docs/GATEWAY.md), e.g.";
            yield return $"  curl -s {http}/v1/chat/completions -H 'Content-Type: application/json'{(keyed ? " -H 'Authorization: Bearer YOUR_KEY'" : "")} -d '{body}'";
            yield return $"dashboard:  {http}{DashboardPath}/   health: {http}/health   metrics: {http}/metrics   engines: {http}/engines";
        }
        else yield return $"dashboard:  {http}{DashboardPath}/   engines: {http}/engines   (no OpenAI API: " +
                          (ModelLoader.IsSynthetic(s.Mixtral.Model) ? "a synthetic model has no tokenizer.json and config.json for it)" : "--OpenAiApi false)");
        yield return "traces:     " + HostTelemetry.DescribeTracing(app.Configuration);
    }

    /// <summary>
    /// The CLI's chat against this silo: from the checkout the silo runs in, by the CLI project's absolute path (dotnet run
    /// --project runs the silo in its own folder, not where the user typed the command); else the installed command.
    /// </summary>
    static string ChatCommand(int gatewayPort)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var cli = Path.Combine(dir.FullName, "src", "OrleansMixtral.Cli");
            if (File.Exists(Path.Combine(dir.FullName, "OrleansMixtral.sln")) && Directory.Exists(cli))
                return $"dotnet run --project {cli} -c Release -- chat --cluster localhost:{gatewayPort}";
        }
        return $"mixtral chat --cluster localhost:{gatewayPort}";
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

    /// <summary>
    /// The dashboard, the engines' loads as JSON, the OpenAI-compatible API with /health and /metrics, and the start-up
    /// lines: where everything is, and the next steps (a chat command and a curl line that work as printed).
    /// </summary>
    public static void MapEndpoints(WebApplication app)
    {
        var settings = app.Services.GetRequiredService<Settings>();
        if (settings.OpenAiApi) GatewayHost.Map(app);
        SiloPages.Map(app); // the dashboard, / → the dashboard, the engines page (JSON unless a browser asks)
        app.Lifetime.ApplicationStarted.Register(() =>
        {
            var host = app.Services.GetRequiredService<SiloEngineHost>();
            var options = app.Services.GetRequiredService<MixtralSiloOptions>();
            var s = app.Services.GetRequiredService<Settings>();
            var load = host.GetLoad();
            var url = app.Urls.FirstOrDefault() ?? "http://localhost:5000";
            var storage = options.Storage switch
            {
                ConversationStorageKind.Sqlite => $"sqlite ({options.DatabasePath})",
                ConversationStorageKind.Memory => "memory (conversations are lost when the silo stops)",
                ConversationStorageKind.Postgres => "postgres",
                var other => other.ToString().ToLowerInvariant(),
            };
            var engine = host.RunsEngine
                ? $"model {load.Model} ({load.Backend}) on {host.Device}, KV cache {load.KvBlocksTotal * load.KvBlockSize} tokens"
                : "no engine (--Mixtral:Engine false: conversations here, turns on other silos' engines)";
            Console.WriteLine($"OrleansMixtral silo {host.SiloKey} ready: {engine}, storage {storage}, cluster {s.ClusterId}");
            foreach (var line in NextSteps(app, s, url)) Console.WriteLine("  " + line);
            Console.Out.Flush();
        });
        app.Lifetime.ApplicationStopping.Register(() => LocalClusters.Unregister(app.Services.GetRequiredService<Settings>().GatewayPort));
    }
}
