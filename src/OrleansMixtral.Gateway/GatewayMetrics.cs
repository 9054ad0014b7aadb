using System.Diagnostics.Metrics;
using OrleansMixtral.Client.AI;

namespace OrleansMixtral.Gateway;

/// <summary>
/// The gateway's instruments (meter <see cref="MeterName"/>), exported on /metrics by OpenTelemetry's Prometheus exporter
/// with ASP.NET Core's and Orleans' own meters:
/// <list type="bullet">
/// <item>latency as clients see it: time to first token and inter-token latency histograms, per-request decode tok/s;</item>
/// <item>the gateway's own admission: generations running and waiting for a slot;</item>
/// <item>every silo's engine (tag <c>silo</c>), polled from its engine grain: queue depth, running sequences, last batch
/// size, KV blocks used/total and share, decode tok/s, tokens generated.</item>
/// </list>
/// </summary>
public sealed class GatewayMetrics : IDisposable
{
    public const string MeterName = "OrleansMixtral.Gateway";
    readonly Meter _meter;
    readonly Histogram<double> _ttft;
    readonly Histogram<double> _interToken;
    readonly Histogram<double> _tokensPerSecond;
    readonly Counter<long> _completionTokens;
    readonly Counter<long> _promptTokens;
    readonly Counter<long> _requests;

    public GatewayMetrics(IMeterFactory meters, MixtralChatService service, GatewayAdmission admission)
    {
        _meter = meters.Create(MeterName);
        _ttft = _meter.CreateHistogram("mixtral.gateway.time_to_first_token", "s",
            "time from the request's arrival to its first generated token", advice: new InstrumentAdvice<double>
            {
                HistogramBucketBoundaries = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30],
            });
        _interToken = _meter.CreateHistogram("mixtral.gateway.inter_token_latency", "s",
            "time between consecutive generated tokens of a reply, as streamed to the client", advice: new InstrumentAdvice<double>
            {
                HistogramBucketBoundaries = [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1],
            });
        _tokensPerSecond = _meter.CreateHistogram<double>("mixtral.gateway.tokens_per_second", "{token}/s",
            "decode speed of each reply (tokens after the first over the time after the first)", advice: new InstrumentAdvice<double>
            {
                HistogramBucketBoundaries = [1, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000],
            });
        _completionTokens = _meter.CreateCounter<long>("mixtral.gateway.completion_tokens", "{token}", "tokens generated for clients");
        _promptTokens = _meter.CreateCounter<long>("mixtral.gateway.prompt_tokens", "{token}", "prompt tokens of finished requests");
        _requests = _meter.CreateCounter<long>("mixtral.gateway.requests", "{request}", "generation requests by outcome");

        _meter.CreateObservableGauge("mixtral.gateway.active_requests", () => admission.Active, "{request}", "generations running in this gateway");
        _meter.CreateObservableGauge("mixtral.gateway.queued_requests", () => admission.Queued, "{request}", "generations waiting for a slot in this gateway");

        IEnumerable<Measurement<T>> PerSilo<T>(Func<Grains.Contracts.EngineLoad, T> value) where T : struct =>
            service.LastEngineLoads.Select(l => new Measurement<T>(value(l), new KeyValuePair<string, object?>("silo", l.Silo)));
        _meter.CreateObservableGauge("mixtral.silo.queue", () => PerSilo(l => l.Waiting), "{request}", "requests waiting for admission in the silo's engine");
        _meter.CreateObservableGauge("mixtral.silo.running", () => PerSilo(l => l.Running), "{sequence}", "sequences generating in the silo's engine");
        _meter.CreateObservableGauge("mixtral.silo.batch_size", () => PerSilo(l => l.LastBatchSize), "{sequence}", "sequences in the engine's last step");
        _meter.CreateObservableGauge("mixtral.silo.kv_blocks_used", () => PerSilo(l => l.KvBlocksUsed), "{block}", "KV blocks held by running sequences");
        _meter.CreateObservableGauge("mixtral.silo.kv_blocks_total", () => PerSilo(l => l.KvBlocksTotal), "{block}", "KV blocks of the engine");
        _meter.CreateObservableGauge("mixtral.silo.kv_used", () => PerSilo(l => l.KvBlocksTotal > 0 ? (double)l.KvBlocksUsed / l.KvBlocksTotal : 0), "1",
            "share of the engine's KV blocks in use");
        _meter.CreateObservableGauge("mixtral.silo.tokens_per_second", () => PerSilo(l => l.DecodeTokensPerSecond), "{token}/s",
            "decode tokens per second of the engine's batch (moving average)");
        _meter.CreateObservableCounter("mixtral.silo.tokens_generated", () => PerSilo(l => l.TokensGenerated), "{token}", "tokens the engine generated");
    }

    public void TimeToFirstToken(double seconds, KeyValuePair<string, object?>[] tags) => _ttft.Record(seconds, tags);

    public void InterToken(double seconds, int tokens, KeyValuePair<string, object?>[] tags)
    {
        for (var i = 0; i < tokens; i++) _interToken.Record(seconds, tags);
    }

    public void Finished(string outcome, int promptTokens, int completionTokens, double? decodeTokensPerSecond, KeyValuePair<string, object?>[] tags)
    {
        _requests.Add(1, [.. tags, new("outcome", outcome)]);
        if (completionTokens > 0) _completionTokens.Add(completionTokens, tags);
        if (promptTokens > 0) _promptTokens.Add(promptTokens, tags);
        if (decodeTokensPerSecond is { } rate) _tokensPerSecond.Record(rate, tags);
    }

    public void Refused(string outcome, KeyValuePair<string, object?>[] tags) => _requests.Add(1, [.. tags, new("outcome", outcome)]);

    public void Dispose() { } // the meter belongs to the factory
}
