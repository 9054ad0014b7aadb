using System.Net;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Orleans.Configuration;
using OrleansMixtral.Client;
using OrleansMixtral.Client.AI;
using OrleansMixtral.Model;

namespace OrleansMixtral.Gateway;

/// <summary>
/// Wires the gateway into an ASP.NET Core host: settings, API keys, listening addresses, the Orleans client, the chat service, admission, metrics; then maps the endpoints.
/// </summary>
/// <remarks>
/// Why a separate process that is an Orleans client, not endpoints inside the silo host: the HTTP edge (TLS, keys,
/// per-tenant limits, thousands of slow streaming connections) scales and restarts apart from the GPU silos, whose
/// restarts cost a model load and their KV caches; the silos stay on a private network with only Orleans' ports
/// open; and a gateway needs no GPU and no weights (only tokenizer.json and config.json). The price is one network hop
/// per chunk (gateway → the conversation grain's silo), small next to a token's time. <see cref="ConfigureServices"/>
/// and <see cref="Map"/> work in any host with an <see cref="IClusterClient"/>: the silo host serves the same API (the
/// one-process set-up), so the gateway itself links no engine and no backend.
/// </remarks>
public static partial class GatewayHost
{
    /// <summary>Names the conversation of a chat request, and is set on responses that belong to one.</summary>
    public const string ConversationHeader = "X-Conversation-Id";
    public const string DefaultUrl = "http://127.0.0.1:8000";

    /// <summary>The answer to <c>--Cluster embedded</c>, which the silo host replaced (one line).</summary>
    public const string EmbeddedMoved =
        "--Cluster embedded: the gateway serves an existing cluster; for one process with the model, run the silo, which serves " +
        "this API itself: dotnet run --project silos/OrleansMixtral.Silo -c Release (http://localhost:5000/v1)";

    /// <summary>
    /// Configures <paramref name="builder"/>; false with a one-line reason when the settings are unusable.
    /// <paramref name="cluster"/>: serve from this client (tests) instead of connecting as configured.
    /// </summary>
    public static bool TryConfigure(WebApplicationBuilder builder, out string error, IClusterClient? cluster = null)
    {
        GatewayOptions options;
        ApiKeys keys;
        try
        {
            options = ReadOptions(builder.Configuration);
            options.Model = ModelPaths.Resolve(options.Model);
            keys = ApiKeys.Load(builder.Configuration, options);
            HostTelemetry.AddTracing(builder.Services, builder.Configuration, "orleansmixtral-gateway");
            // The one-process set-up is the silo host, which serves this API itself: the gateway links no engine.
            if (cluster is null && options.Cluster.Equals("embedded", StringComparison.OrdinalIgnoreCase))
                throw new ArgumentException(EmbeddedMoved);
            if (cluster is null && string.IsNullOrWhiteSpace(options.Cluster))
                throw new ArgumentException("--Cluster must name a cluster: localhost, HOST:PORT, redis://HOST:PORT or postgres:CONNECTION-STRING");
        }
        catch (Exception e) when (e is ArgumentException or FormatException or DirectoryNotFoundException or InvalidOperationException or IOException)
        {
            error = e.Message;
            return false;
        }
        error = "";

        var urls = ListenUrls(builder.Configuration, keys.IsEmpty);
        builder.WebHost.UseUrls([.. urls]);
        var shaping = new HttpConnectionShaping();
        builder.Services.AddSingleton(shaping);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            // Kestrel's own refusals in OpenAI's shape, and a 400 for a body cut short by a half-close (HttpConnectionShaping).
            k.ConfigureEndpointDefaults(shaping.Apply);
            // The gateway enforces its own body limit (413 in OpenAI's shape) while reading. Kestrel's own limit stays off so
            // that it drains (within its drain timeout) the rest of a refused body: the client then reads the 413 instead of
            // a connection reset in the middle of its upload.
            k.Limits.MaxRequestBodySize = null;
        });

        if (cluster is not null) builder.Services.AddSingleton(cluster);
        else
        {
            var until = DateTime.UtcNow.AddSeconds(options.ConnectTimeoutSeconds);
            builder.UseOrleansClient(client =>
            {
                // A local silo started after the gateway has its cluster id read when it registers (within the connect timeout).
                client.UseMixtralCluster(options.Cluster, options.ClusterId, options.ServiceId, TimeSpan.FromSeconds(options.ConnectTimeoutSeconds));
                client.UseConnectionRetryFilter(async (_, ct) =>
                {
                    if (DateTime.UtcNow > until) return false;
                    await Task.Delay(1000, ct);
                    return true;
                });
            });
        }
        ConfigureServices(builder.Services, options, keys);
        HostTelemetry.AddMetrics(builder.Services, "orleansmixtral-gateway");
        return true;
    }

    /// <summary>
    /// The gateway's endpoints inside a silo host (the silo's HTTP port then serves <c>/v1</c>, <c>/health</c> and
    /// <c>/metrics</c> beside its dashboard): the silo's own cluster client, its model, section "Gateway" and the API keys
    /// as a gateway reads them; <see cref="Map"/> then maps them. False with a one-line reason for unusable settings.
    /// </summary>
    public static bool TryConfigureInSilo(WebApplicationBuilder builder, string model, out string error)
    {
        GatewayOptions options;
        ApiKeys keys;
        try
        {
            options = ReadOptions(builder.Configuration);
            options.Model = model;
            keys = ApiKeys.Load(builder.Configuration, options);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException or IOException)
        {
            error = e.Message;
            return false;
        }
        error = "";
        ConfigureServices(builder.Services, options, keys);
        HostTelemetry.AddMetrics(builder.Services, "orleansmixtral-silo");
        return true;
    }

    /// <summary>
    /// Console logs of the project's hosts: one line per entry, with a timestamp (UTC, to the millisecond), so that the
    /// logs of a silo, a gateway and a client line up.
    /// </summary>
    public static void UseConsoleLogFormat(ILoggingBuilder logging) =>
        logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "yyyy-MM-dd HH:mm:ss.fff ";
            o.UseUtcTimestamp = true;
        });

    /// <summary>The gateway's services, given an <see cref="IClusterClient"/> in the container.</summary>
    public static void ConfigureServices(IServiceCollection services, GatewayOptions options, ApiKeys keys)
    {
        services.AddSingleton(options);
        services.AddSingleton(keys);
        services.AddMixtralChatService(o =>
        {
            o.Model = options.Model;
            o.ModelId = options.ModelId;
            // A generation silent for half the cluster-call budget has its silo probed for the other half: a killed silo
            // fails a request that had no text yet within the budget (503), never after Orleans' 30 s response timeout.
            o.StallCheckMilliseconds = Math.Max(100, options.ClusterCallTimeoutMilliseconds / 2);
            o.ProbeTimeoutMilliseconds = Math.Max(100, options.ClusterCallTimeoutMilliseconds / 2);
            o.EngineTimeoutMilliseconds = options.ClusterCallTimeoutMilliseconds;
        });
        services.TryAddSingleton<HttpConnectionShaping>(); // does nothing without its Kestrel middleware (TryConfigure adds both)
        services.AddSingleton<GatewayAdmission>();
        services.AddSingleton<GatewayMetrics>();
        services.AddSingleton(sp =>
        {
            var service = sp.GetRequiredService<MixtralChatService>();
            return new OpenAiRequests(options, service.ContextLength, service.Tokenizer.VocabSize, [service.ModelId, .. options.ModelAliases]);
        });
        services.AddSingleton<GatewayEndpoints>();
        services.AddHealthChecks().AddCheck<EnginesHealthCheck>(EnginesHealthCheck.Name);
        services.AddHostedService<EngineLoadPoller>();
    }

    static GatewayOptions ReadOptions(IConfiguration config)
    {
        var options = new GatewayOptions();
        config.GetSection("Gateway").Bind(options);
        options.Cluster = config["Cluster"] ?? options.Cluster;
        options.ClusterId = config["ClusterId"] ?? options.ClusterId;
        options.ServiceId = config["ServiceId"] ?? options.ServiceId;
        options.Model = config["Model"] ?? options.Model;
        options.ModelId = config["ModelId"] ?? options.ModelId;
        options.ApiKeysFile = config["ApiKeysFile"] ?? options.ApiKeysFile;
        if (options.MaxRequestBodyBytes < 1024) throw new ArgumentException("Gateway:MaxRequestBodyBytes must be at least 1024");
        if (options.MaxConcurrentRequests < 1) throw new ArgumentException("Gateway:MaxConcurrentRequests must be at least 1");
        if (options.ClusterCallTimeoutMilliseconds < 200) throw new ArgumentException("Gateway:ClusterCallTimeoutMilliseconds must be at least 200");
        if (options.MaxQueuedRequests < 0) throw new ArgumentException("Gateway:MaxQueuedRequests must be at least 0");
        if (options.ModelId is { } id && string.IsNullOrWhiteSpace(id)) throw new ArgumentException("ModelId must not be empty");
        return options;
    }

    /// <summary>
    /// The addresses to listen on: <c>--urls</c> (or ASPNETCORE_URLS / HTTP_PORTS), else <see cref="DefaultUrl"/>. With no
    /// API keys every host is replaced by 127.0.0.1: an open gateway is reachable from this machine only.
    /// </summary>
    public static List<string> ListenUrls(IConfiguration config, bool loopbackOnly)
    {
        var configured = config["urls"];
        if (string.IsNullOrWhiteSpace(configured) && config["http_ports"] is { Length: > 0 } ports)
            configured = string.Join(';', ports.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(p => $"http://*:{p}"));
        if (string.IsNullOrWhiteSpace(configured)) configured = DefaultUrl;
        var urls = new List<string>();
        foreach (var url in configured.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var m = UrlPattern().Match(url);
            if (!m.Success) throw new ArgumentException($"'{url}' is not a listening address such as http://127.0.0.1:8000");
            var host = m.Groups["host"].Value;
            urls.Add(loopbackOnly && !IsLoopbackHost(host) ? $"{m.Groups["scheme"].Value}://127.0.0.1{m.Groups["rest"].Value}" : url);
        }
        return [.. urls.Distinct()];
    }

    static bool IsLoopbackHost(string host)
    {
        if (host.Equals("localhost", StringComparison.OrdinalIgnoreCase)) return true;
        return IPAddress.TryParse(host.Trim('[', ']'), out var ip) && IPAddress.IsLoopback(ip);
    }

    [GeneratedRegex(@"^(?<scheme>https?)://(?<host>\[[^\]]*\]|[^:/]+)(?<rest>(:\d+)?(/.*)?)$", RegexOptions.IgnoreCase)]
    private static partial Regex UrlPattern();

    /// <summary>Authentication, the endpoints, /health and /metrics.</summary>
    public static void Map(WebApplication app)
    {
        var endpoints = app.Services.GetRequiredService<GatewayEndpoints>();
        var keys = app.Services.GetRequiredService<ApiKeys>();
        var service = app.Services.GetRequiredService<MixtralChatService>(); // loads the tokenizer now, not on the first request
        var log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("OrleansMixtral.Gateway");
        var shaping = app.Services.GetRequiredService<HttpConnectionShaping>();
        app.Use((ctx, next) =>
        {
            shaping.BeginRequest(ctx);
            return next(ctx);
        });

        // Bodiless errors (unknown paths, wrong methods) in OpenAI's shape too.
        app.UseStatusCodePages(async context =>
        {
            var ctx = context.HttpContext;
            var status = ctx.Response.StatusCode;
            var (message, code) = status switch
            {
                404 => ($"no route {ctx.Request.Method} {ctx.Request.Path}", "not_found"),
                405 => ($"{ctx.Request.Method} is not allowed on {ctx.Request.Path}", "method_not_allowed"),
                _ => ("the request failed", "error"),
            };
            await OpenAiResponses.WriteErrorAsync(ctx, status, message, code);
        });
        app.Use(async (ctx, next) =>
        {
            if (!ctx.Request.Path.StartsWithSegments("/v1"))
            {
                await next(ctx);
                return;
            }
            Tenant? tenant;
            if (keys.IsEmpty)
            {
                // Open gateway: bound to loopback, and checked here too.
                if (ctx.Connection.RemoteIpAddress is { } remote && !IPAddress.IsLoopback(remote))
                {
                    await OpenAiResponses.WriteErrorAsync(ctx, 401, "this gateway has no API keys configured and serves this machine only", "invalid_api_key");
                    return;
                }
                tenant = ApiKeys.Local;
            }
            else
            {
                var presented = PresentedKey(ctx.Request);
                if (presented is null)
                {
                    await OpenAiResponses.WriteErrorAsync(ctx, 401,
                        "you didn't provide an API key: send it in an Authorization header (Authorization: Bearer YOUR_KEY)", "missing_api_key");
                    return;
                }
                tenant = keys.Find(presented);
                if (tenant is null)
                {
                    await OpenAiResponses.WriteErrorAsync(ctx, 401, "incorrect API key provided", "invalid_api_key");
                    return;
                }
            }
            ctx.Items[GatewayEndpoints.TenantItem] = tenant;
            await next(ctx);
        });

        app.MapPost("/v1/chat/completions", endpoints.ChatCompletionsAsync);
        app.MapPost("/v1/completions", endpoints.CompletionsAsync);
        app.MapGet("/v1/models", endpoints.ModelsAsync);
        app.MapGet("/v1/models/{model}", (HttpContext ctx, string model) => endpoints.ModelAsync(ctx, model));
        app.MapPost("/v1/conversations", endpoints.CreateConversationAsync);
        app.MapGet("/v1/conversations/{id}", (HttpContext ctx, string id) => endpoints.GetConversationAsync(ctx, id));
        app.MapDelete("/v1/conversations/{id}", (HttpContext ctx, string id) => endpoints.DeleteConversationAsync(ctx, id));
        app.MapPost("/v1/conversations/{id}/cancel", (HttpContext ctx, string id) => endpoints.CancelConversationAsync(ctx, id));
        app.MapGet("/v1/conversations/{id}/stream", (HttpContext ctx, string id) => endpoints.SubscribeAsync(ctx, id));
        app.MapHealthChecks("/health", new HealthCheckOptions { ResponseWriter = endpoints.WriteHealthAsync })
            .WithMetadata(new HttpMethodMetadata(["GET"])); // as the other endpoints: another method is a 405
        app.MapPrometheusScrapingEndpoint("/metrics");

        app.Lifetime.ApplicationStarted.Register(() =>
        {
            var addresses = string.Join(", ", app.Urls);
            if (keys.IsEmpty) LogOpen(log, service.ModelId, addresses);
            else LogKeyed(log, service.ModelId, addresses, keys.Count, string.Join(", ", keys.TenantNames));
        });
    }

    static string? PresentedKey(HttpRequest request)
    {
        var auth = request.Headers.Authorization.ToString();
        if (auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) return auth["Bearer ".Length..].Trim() is { Length: > 0 } k ? k : null;
        var apiKey = request.Headers["api-key"].ToString();
        if (apiKey.Length == 0) apiKey = request.Headers["x-api-key"].ToString();
        return apiKey.Length > 0 ? apiKey.Trim() : null;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "OrleansMixtral gateway serving {Model} on {Urls} with NO API keys: loopback clients only, one tenant")]
    static partial void LogOpen(ILogger log, string model, string urls);

    [LoggerMessage(Level = LogLevel.Information, Message = "OrleansMixtral gateway serving {Model} on {Urls}: {Count} API keys (tenants {Tenants})")]
    static partial void LogKeyed(ILogger log, string model, string urls, int count, string tenants);
}

/// <summary>Fetches the engines' loads every EnginePollMilliseconds, for the per-silo gauges and /health.</summary>
public sealed class EngineLoadPoller(MixtralChatService service, GatewayOptions options, IHostApplicationLifetime lifetime) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // from when the host has started: inside a silo, its grains answer only then (before, Orleans logs each refusal)
        try { await Task.Delay(Timeout.Infinite, lifetime.ApplicationStarted).WaitAsync(stoppingToken); }
        catch (OperationCanceledException) when (lifetime.ApplicationStarted.IsCancellationRequested) { }
        catch (OperationCanceledException) { return; }
        var period = TimeSpan.FromMilliseconds(Math.Max(100, options.EnginePollMilliseconds));
        while (!stoppingToken.IsCancellationRequested)
        {
            try { await service.GetEngineLoadsAsync(fresh: true).WaitAsync(stoppingToken); }
            catch (OperationCanceledException) { return; }
            catch (Exception) { }
            try { await Task.Delay(period, stoppingToken); }
            catch (OperationCanceledException) { return; }
        }
    }
}
