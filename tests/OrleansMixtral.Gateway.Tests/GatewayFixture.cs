using System.ClientModel;
using System.ClientModel.Primitives;
using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenAI;
using OpenAI.Chat;
using Orleans;
using Orleans.Hosting;
using Orleans.TestingHost;
using OrleansMixtral.Gateway;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Hosting;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// One in-process silo with a CPU engine over the tiny model (room for the 32-client load test in one batch), and the
/// gateway on 127.0.0.1 with a free port, serving from the test cluster's client, with two API keys (tenants
/// "tenant-a" and "tenant-b") and a small body limit. Everything the gateway logs is kept in <see cref="Logs"/>.
/// </summary>
public sealed class GatewayFixture : IAsyncLifetime
{
    public const string KeyA = "sk-test-tenant-a-4f9c2e71b0d85a36";
    public const string KeyB = "sk-test-tenant-b-93d1a7c45e20f6b8";
    public const string Model = "tiny-mixtral";
    public const int BodyLimit = 256 * 1024;

    public InProcessTestCluster Cluster { get; private set; } = null!;
    public WebApplication Gateway { get; private set; } = null!;
    public Uri BaseUrl { get; private set; } = null!;
    /// <summary>A client of the main gateway; disposing an unread response drops its connection (no draining).</summary>
    public HttpClient Http { get; } = new(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { Timeout = TimeSpan.FromSeconds(120) };
    public LogCapture Logs { get; } = new();

    public static MixtralSiloOptions SiloOptions() => new()
    {
        Model = RepoPaths.TinyModel,
        Threads = 2,
        KvCacheMegabytes = 48,
        PrefillChunkTokens = 192, // forward calls of 256 tokens: the chunk plus 64 decodes
        MaxRunningSequences = 32,
        ProbeTimeoutMilliseconds = 1500,
        StallProbeMilliseconds = 2000,
        Storage = ConversationStorageKind.Memory, // nothing outlives the fixture (the silo's default, sqlite, writes a file)
    };

    public async ValueTask InitializeAsync()
    {
        var builder = new InProcessTestClusterBuilder(1);
        builder.ConfigureSilo((_, silo) => silo.AddMixtral(SiloOptions()));
        builder.ConfigureSiloHost((_, host) => host.Services.PostConfigure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(5)));
        // as a gateway's client is (ClusterConnection.UseMixtralCluster): memory streams, and traces carried into the grains
        builder.ConfigureClient(client => client.AddMemoryStreams(TokenStreams.Provider).AddActivityPropagation());
        Cluster = builder.Build();
        await Cluster.DeployAsync();
        (Gateway, BaseUrl) = await StartGatewayAsync(Cluster.Client, new()
        {
            ["Gateway:ApiKeys:0:Key"] = KeyA,
            ["Gateway:ApiKeys:0:Tenant"] = "tenant-a",
            ["Gateway:ApiKeys:1:Key"] = KeyB,
            ["Gateway:ApiKeys:1:Tenant"] = "tenant-b",
            ["Gateway:MaxRequestBodyBytes"] = BodyLimit.ToString(),
        }, Logs);
        Http.BaseAddress = BaseUrl;
    }

    /// <summary>Starts a gateway over <paramref name="client"/> on 127.0.0.1 (a free port unless urls says otherwise).</summary>
    public static async Task<(WebApplication App, Uri Url)> StartGatewayAsync(IClusterClient? client, Dictionary<string, string?> settings, ILoggerProvider? logs = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory, EnvironmentName = "Testing" });
        var all = new Dictionary<string, string?> { ["urls"] = "http://127.0.0.1:0", ["Model"] = RepoPaths.TinyModel };
        foreach (var (k, v) in settings) all[k] = v;
        builder.Configuration.AddInMemoryCollection(all);
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Trace);
        if (logs is not null) builder.Logging.AddProvider(logs);
        builder.Services.PostConfigure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(5));
        if (!GatewayHost.TryConfigure(builder, out var error, client)) throw new InvalidOperationException(error);
        var app = builder.Build();
        GatewayHost.Map(app);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return (app, new Uri(address));
    }

    readonly List<WebApplication> _extra = [];
    readonly List<IAsyncDisposable> _later = [];

    /// <summary>
    /// A gateway over another cluster's client (null: its own client, connected as its settings say), stopped with the
    /// fixture (see <see cref="StartExtraGatewayAsync"/>).
    /// </summary>
    public async Task<(WebApplication App, Uri Url)> StartGatewayOverAsync(IClusterClient? client, Dictionary<string, string?> settings, ILoggerProvider? logs = null)
    {
        var (app, url) = await StartGatewayAsync(client, settings, logs);
        lock (_extra) _extra.Add(app);
        return (app, url);
    }

    /// <summary>Disposes <paramref name="item"/> (a test's own cluster) with the fixture, after the gateways.</summary>
    public void DisposeLater(IAsyncDisposable item)
    {
        lock (_later) _later.Add(item);
    }

    /// <summary>
    /// Another gateway over the same cluster, stopped with the fixture. Not earlier: the gateways of one process share
    /// the OpenTelemetry meter names, and a stopped gateway's instruments would end the same-named metrics of the others.
    /// </summary>
    public async Task<(WebApplication App, Uri Url)> StartExtraGatewayAsync(Dictionary<string, string?> settings)
    {
        var (app, url) = await StartGatewayAsync(Cluster.Client, settings);
        lock (_extra) _extra.Add(app);
        return (app, url);
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        foreach (var app in _extra)
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
        if (Gateway is not null)
        {
            await Gateway.StopAsync();
            await Gateway.DisposeAsync();
        }
        foreach (var item in _later)
        {
            try { await item.DisposeAsync(); }
            catch (Exception) { } // a test's cluster with a killed silo
        }
        if (Cluster is not null) await Cluster.DisposeAsync();
    }

    /// <summary>The silo's engine host (one silo).</summary>
    public SiloEngineHost Engine => Cluster.GetSiloServiceProvider(Cluster.Silos[0].SiloAddress).GetRequiredService<SiloEngineHost>();

    /// <summary>Waits until the engine runs nothing and holds no KV blocks for running sequences.</summary>
    public async Task EngineIdle(double seconds = 15)
    {
        var host = Engine;
        await Eventually(() =>
        {
            var s = host.Engine.GetStats();
            return s.Running == 0 && s.Waiting == 0 && s.KvBlocksUsed == 0 && host.RunningTurns == 0;
        }, "the engine to be idle with no KV blocks in use", seconds);
    }

    public static async Task Eventually(Func<bool> condition, string what, double seconds = 15)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (!condition())
        {
            if (DateTime.UtcNow > until) Assert.Fail($"timed out waiting for {what}");
            await Task.Delay(25);
        }
    }

    public static OpenAIClientOptions SdkOptions(Uri baseUrl, PipelinePolicy? policy = null)
    {
        var options = new OpenAIClientOptions
        {
            Endpoint = new Uri(baseUrl, "/v1"),
            RetryPolicy = new ClientRetryPolicy(maxRetries: 0), // 429s must reach the test
            NetworkTimeout = TimeSpan.FromSeconds(120),
        };
        if (policy is not null) options.AddPolicy(policy, PipelinePosition.PerCall);
        return options;
    }

    /// <summary>The official OpenAI SDK's chat client against the gateway.</summary>
    public ChatClient Chat(string key = KeyA, PipelinePolicy? policy = null, string model = Model) =>
        new(model, new ApiKeyCredential(key), SdkOptions(BaseUrl, policy));

    public OpenAIClient OpenAI(string key = KeyA) => new(new ApiKeyCredential(key), SdkOptions(BaseUrl));

    // ---- raw HTTP ----

    public HttpRequestMessage Post(string path, string json, string? key = KeyA)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (key is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return request;
    }

    public HttpRequestMessage Get(string path, string? key = KeyA)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, path);
        if (key is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return request;
    }

    public static string ChatBody(string user, int maxTokens = 8, bool stream = false, string extra = "") =>
        $$"""{"model":"{{Model}}","messages":[{"role":"user","content":{{JsonSerializer.Serialize(user)}}}],"max_tokens":{{maxTokens}},"temperature":0,"stream":{{(stream ? "true" : "false")}}{{extra}}}""";

    /// <summary>Asserts OpenAI's error shape and returns the error object.</summary>
    public static async Task<JsonElement> AssertError(HttpResponseMessage response, int status, string? code = null)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True((int)response.StatusCode == status, $"expected {status}, got {(int)response.StatusCode}: {text}");
        Assert.StartsWith("application/json", response.Content.Headers.ContentType?.ToString() ?? "");
        using var doc = JsonDocument.Parse(text);
        var error = doc.RootElement.GetProperty("error");
        Assert.Equal(JsonValueKind.String, error.GetProperty("message").ValueKind);
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
        Assert.Equal(JsonValueKind.String, error.GetProperty("type").ValueKind);
        Assert.True(error.TryGetProperty("code", out var c));
        Assert.True(error.TryGetProperty("param", out _));
        if (code is not null) Assert.Equal(code, c.GetString());
        return error.Clone();
    }

    /// <summary>A streamed reply read as OpenAI sends it: its data events up to [DONE].</summary>
    public sealed record SseReply(List<JsonElement> Events, bool Done, string Text, string? FinishReason, JsonElement? Usage, double FirstTokenMs);

    /// <param name="sentAt">When the request was sent (Stopwatch ticks), for the time to the first token; default: now.</param>
    public static async Task<SseReply> ReadSse(HttpResponseMessage response, long sentAt = 0, CancellationToken ct = default)
    {
        var started = sentAt != 0 ? sentAt : System.Diagnostics.Stopwatch.GetTimestamp();
        double first = 0;
        using var stream = await response.Content.ReadAsStreamAsync(ct);
        using var reader = new StreamReader(stream);
        var events = new List<JsonElement>();
        var text = new StringBuilder();
        string? finish = null;
        JsonElement? usage = null;
        var done = false;
        while (await reader.ReadLineAsync(ct) is { } line)
        {
            if (line.Length == 0 || line.StartsWith(':')) continue;
            Assert.StartsWith("data: ", line);
            Assert.False(done, "an event after [DONE]");
            var data = line["data: ".Length..];
            if (data == "[DONE]")
            {
                done = true;
                continue;
            }
            var e = JsonDocument.Parse(data).RootElement.Clone();
            events.Add(e);
            if (e.TryGetProperty("error", out _)) continue;
            if (e.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object) usage = u;
            foreach (var choice in e.GetProperty("choices").EnumerateArray())
            {
                string? piece = null;
                if (choice.TryGetProperty("delta", out var delta) && delta.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String) piece = c.GetString();
                if (choice.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String) piece = t.GetString();
                if (!string.IsNullOrEmpty(piece))
                {
                    Assert.Null(finish); // no text after the finish reason
                    if (first == 0) first = System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                    text.Append(piece);
                }
                if (choice.GetProperty("finish_reason") is { ValueKind: JsonValueKind.String } f) finish = f.GetString();
            }
        }
        return new SseReply(events, done, text.ToString(), finish, usage, first);
    }
}

/// <summary>The gateway's tests share one cluster and gateway and run one after another (the engine is shared state).</summary>
[CollectionDefinition(Name)]
public sealed class GatewayCollection : ICollectionFixture<GatewayFixture>
{
    public const string Name = "gateway";
}

/// <summary>Keeps every log line (message and exception) the gateway writes.</summary>
public sealed class LogCapture : ILoggerProvider
{
    readonly ConcurrentQueue<string> _lines = new();
    public IEnumerable<string> Lines => _lines;
    public ILogger CreateLogger(string categoryName) => new Logger(categoryName, _lines);
    public void Dispose() { }

    sealed class Logger(string category, ConcurrentQueue<string> lines) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var structured = state is IEnumerable<KeyValuePair<string, object?>> pairs ? string.Join(";", pairs.Select(p => $"{p.Key}={p.Value}")) : "";
            lines.Enqueue($"{logLevel} {category}: {formatter(state, exception)} {structured} {exception}");
        }
    }
}
