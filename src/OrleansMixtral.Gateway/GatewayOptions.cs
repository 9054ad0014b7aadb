namespace OrleansMixtral.Gateway;

/// <summary>
/// The gateway's settings: configuration section "Gateway" (appsettings.json, environment <c>Gateway__MaxConcurrentRequests=64</c>,
/// command line <c>--Gateway:MaxConcurrentRequests=64</c>), with short forms for the common ones (<c>--Cluster</c>,
/// <c>--Model</c>, <c>--ModelId</c>, <c>--ApiKeysFile</c>). Listening addresses: the standard <c>--urls</c>.
/// </summary>
public sealed class GatewayOptions
{
    /// <summary>
    /// The cluster to serve from: <c>localhost</c>, <c>HOST:PORT[,HOST:PORT...]</c> (silo gateways), <c>redis://HOST:PORT</c> or
    /// <c>postgres:NPGSQL-CONNECTION-STRING</c> (the silos' membership table),
    /// as <see cref="Client.ClusterConnection"/> reads it. (One process with the model: the silo host, which serves this API too.)
    /// </summary>
    public string Cluster { get; set; } = "localhost";
    /// <summary>
    /// The cluster's Orleans ids (<c>--ClusterId</c>, <c>--ServiceId</c>); null: for gateways on this machine the ids their
    /// silo registered, else <c>mixtral</c> (see <see cref="Client.ClusterConnection.ResolveIds"/>).
    /// </summary>
    public string? ClusterId { get; set; }
    public string? ServiceId { get; set; }
    /// <summary>The model directory the cluster serves (the gateway reads only its tokenizer.json and config.json).</summary>
    public string Model { get; set; } = "models/tiny-mixtral";
    /// <summary>The model's id in the API; null: the directory's name (tiny-mixtral).</summary>
    public string? ModelId { get; set; }
    /// <summary>Other names requests may use for the model.</summary>
    public List<string> ModelAliases { get; set; } = [];

    /// <summary>API keys file: one key per line, or "TENANT KEY"; blank lines and lines starting with # are skipped.</summary>
    public string? ApiKeysFile { get; set; }

    /// <summary>Request bodies larger than this are refused with 413.</summary>
    public long MaxRequestBodyBytes { get; set; } = 4 << 20;
    /// <summary>Generations this gateway runs at once (each holds its HTTP request until its reply ends).</summary>
    public int MaxConcurrentRequests { get; set; } = 256;
    /// <summary>Generations that wait for one of those slots; beyond that a request gets 429 with Retry-After.</summary>
    public int MaxQueuedRequests { get; set; } = 512;
    /// <summary>The Retry-After of a 429, in seconds.</summary>
    public int RetryAfterSeconds { get; set; } = 1;
    /// <summary>Most messages in one request.</summary>
    public int MaxMessages { get; set; } = 4096;
    /// <summary>Most stop strings in one request (OpenAI: 4) and the longest one.</summary>
    public int MaxStopStrings { get; set; } = 4;
    public int MaxStopLength { get; set; } = 256;

    /// <summary>How often the engines' loads are fetched for the metrics and /health.</summary>
    public int EnginePollMilliseconds { get; set; } = 1000;
    /// <summary>How long start-up waits for the cluster (the gateway may start before the silos).</summary>
    public int ConnectTimeoutSeconds { get; set; } = 120;

    /// <summary>
    /// How long one call to the cluster (a conversation's history, start, reset, cancel) may take, retries through another
    /// silo included; beyond it the request is a 503 with Retry-After. Half of it is also how long a generation may stay
    /// silent before its silo is asked whether it still works on it (for the other half).
    /// </summary>
    public int ClusterCallTimeoutMilliseconds { get; set; } = 1500;
}
