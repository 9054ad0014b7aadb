using System.Diagnostics;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace OrleansMixtral.Gateway;

/// <summary>
/// Metrics and traces of the project's hosts (the gateway, and the silo that serves the API too): /metrics in
/// Prometheus' format, and traces exported by OTLP or to the console when configured.
/// </summary>
/// <remarks>
/// A request's trace: the HTTP request (ASP.NET Core's span), the gateway's generation (<see cref="GatewayTracing"/>),
/// Orleans' grain calls, the conversation's turn and the engine grain's generation (OrleansMixtral.Grains' GrainTracing), and the
/// engine's request with its queue wait, prompt chunks and decode (OrleansMixtral.Engine's EngineTracing), one trace across silos
/// by Orleans' activity propagation. Tracing is on when an exporter is configured: the standard
/// <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> (environment, command line or appsettings.json; with the other <c>OTEL_EXPORTER_OTLP_*</c>
/// settings, OTLP/gRPC unless <c>OTEL_EXPORTER_OTLP_PROTOCOL</c> says http/protobuf), or <c>Telemetry:ConsoleTraces=true</c>
/// (off by default). Without one, no span is even created.
/// </remarks>
public static class HostTelemetry
{
    public const string OtlpEndpointKey = "OTEL_EXPORTER_OTLP_ENDPOINT";
    public const string ConsoleTracesKey = "Telemetry:ConsoleTraces";

    /// <summary>
    /// The ActivitySources of a request's trace, besides ASP.NET Core's: the project's (OrleansMixtral.Gateway, .Grains,
    /// .Engine: by pattern, as the gateway links neither grains nor engine) and Orleans' application grain calls
    /// (Microsoft.Orleans.Application). Not Orleans' runtime source (Microsoft.Orleans.Runtime): its stream pulling agents'
    /// dequeues, grain timers and membership reads are traces of their own, ~300 a second on an idle silo.
    /// </summary>
    public static readonly string[] TraceSources = ["OrleansMixtral.*", "Microsoft.Orleans.Application"];

    /// <summary>
    /// /metrics (mapped by the caller: <c>MapPrometheusScrapingEndpoint</c>): the gateway's meter, Orleans' (with a silo's
    /// engine gauges, as its dashboard shows them), ASP.NET Core's and the .NET runtime's (GC heap, working set: what a
    /// soak watches).
    /// </summary>
    public static void AddMetrics(IServiceCollection services, string serviceName) =>
        services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService(serviceName))
            .WithMetrics(m => m
                .AddMeter(GatewayMetrics.MeterName, "Microsoft.Orleans", "Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel", "System.Runtime")
                .AddPrometheusExporter());

    /// <summary>Where this host's traces go, for a person: the OTLP endpoint, the console, or how to turn them on.</summary>
    public static string DescribeTracing(IConfiguration config)
    {
        var to = new List<string>();
        if (!string.IsNullOrWhiteSpace(config[OtlpEndpointKey])) to.Add($"OTLP to {config[OtlpEndpointKey]}");
        if (bool.TryParse(config[ConsoleTracesKey], out var console) && console) to.Add("printed on the console");
        return to.Count > 0 ? string.Join(" and ", to) + " (docs/GATEWAY.md, \"Traces\")"
            : $"off: start with {OtlpEndpointKey}=http://localhost:4317 (an OpenTelemetry collector, Jaeger) or --{ConsoleTracesKey} true (docs/GATEWAY.md, \"Traces\")";
    }

    /// <summary>Traces, when an exporter is configured (see the remarks); false when none is.</summary>
    public static bool AddTracing(IServiceCollection services, IConfiguration config, string serviceName)
    {
        var otlp = !string.IsNullOrWhiteSpace(config[OtlpEndpointKey]);
        var console = config[ConsoleTracesKey] is { } text && (bool.TryParse(text, out var on)
            ? on : throw new ArgumentException($"--{ConsoleTracesKey} must be true or false, not '{text}'"));
        if (!otlp && !console) return false;
        if (otlp && !(Uri.TryCreate(config[OtlpEndpointKey], UriKind.Absolute, out var endpoint) && endpoint.Scheme is "http" or "https"))
            throw new ArgumentException($"{OtlpEndpointKey} must be an absolute URL such as http://localhost:4317, not '{config[OtlpEndpointKey]}'");
        services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService(serviceName))
            .WithTracing(t =>
            {
                t.AddSource(TraceSources).AddAspNetCoreInstrumentation();
                if (otlp) t.AddOtlpExporter(); // reads OTEL_EXPORTER_OTLP_* from the host's configuration
                if (console) t.AddConsoleExporter();
            });
        return true;
    }
}

/// <summary>
/// The gateway's span (ActivitySource <see cref="SourceName"/>): one generation request — admission, the reply's stream
/// and its outcome — a child of ASP.NET Core's span of the HTTP request.
/// </summary>
public static class GatewayTracing
{
    public const string SourceName = "OrleansMixtral.Gateway";
    public const string GenerationSpan = "mixtral.gateway.generation";

    internal static readonly ActivitySource Source = new(SourceName);
}
