using System.Diagnostics.Metrics;
using OrleansMixtral.Engine;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Grains;

/// <summary>
/// The engine's gauges as System.Diagnostics.Metrics instruments (tok/s, batch size, KV use, queue), observed from
/// <see cref="ISiloEngine.GetLoad"/> when a metrics listener collects them.
/// </summary>
/// <remarks>
/// The instruments live on Orleans' own meter ("Microsoft.Orleans", from the silo's <see cref="IMeterFactory"/>, which
/// hands out that same meter): the Orleans dashboard exports that meter, so these gauges show on each silo's counters
/// page next to Orleans' own, and any OpenTelemetry listener of the Orleans meter gets them too. All names start with
/// "mixtral-engine-".
/// </remarks>
public sealed class EngineMetrics : IDisposable
{
    public const string MeterName = "Microsoft.Orleans";
    readonly Meter _meter;

    public EngineMetrics(ISiloEngine host, IMeterFactory meters)
    {
        // From the silo's meter factory, like Orleans' own meter: listeners scoped to that factory see these too.
        _meter = meters.Create(MeterName);
        EngineLoad? Load() => host.IsLoaded ? host.GetLoad() : null;
        _meter.CreateObservableGauge("mixtral-engine-tokens-per-second", () => Load()?.DecodeTokensPerSecond ?? 0, "tokens/s",
            "tokens generated per second over the last 5 s (0 when idle), to 0.1");
        _meter.CreateObservableGauge("mixtral-engine-batch-size", () => Load()?.LastBatchSize ?? 0, "sequences",
            "sequences in the engine's last step");
        _meter.CreateObservableGauge("mixtral-engine-running", () => Load()?.Running ?? 0, "sequences", "sequences admitted and generating");
        _meter.CreateObservableGauge("mixtral-engine-queue", () => Load()?.Waiting ?? 0, "requests", "requests waiting for admission");
        _meter.CreateObservableGauge("mixtral-engine-kv-blocks-used", () => Load()?.KvBlocksUsed ?? 0, "blocks", "KV blocks held by running sequences");
        _meter.CreateObservableGauge("mixtral-engine-kv-blocks-cached", () => Load()?.KvBlocksCached ?? 0, "blocks", "KV blocks holding reusable prefixes");
        _meter.CreateObservableGauge("mixtral-engine-kv-used-percent",
            () => Load() is { KvBlocksTotal: > 0 } l ? 100.0 * l.KvBlocksUsed / l.KvBlocksTotal : 0, "%", "share of KV blocks in use");
        _meter.CreateObservableGauge("mixtral-engine-conversations", () => Load()?.ResidentConversations ?? 0, "conversations",
            "conversations with a turn on this engine recently");
        // which GPU the silo's engine runs on (--Mixtral:Device; its name is in /engines and the ready line), -1 on the CPU
        _meter.CreateObservableGauge("mixtral-engine-device", () => Load() is { } l ? l.DeviceIndex ?? -1 : -1, "index",
            "the engine's GPU, by its index among the devices the silo's process sees; -1: the CPU");
        _meter.CreateObservableCounter("mixtral-engine-tokens-generated", () => Load()?.TokensGenerated ?? 0, "tokens");
        _meter.CreateObservableCounter("mixtral-engine-prompt-tokens-computed", () => Load()?.PromptTokensComputed ?? 0, "tokens");
        _meter.CreateObservableCounter("mixtral-engine-prompt-tokens-reused", () => Load()?.PromptTokensReused ?? 0, "tokens");
    }

    public void Dispose() { } // the meter belongs to the factory
}

/// <summary>
/// The engine's histograms, on the meter of its gauges (<see cref="EngineMetrics"/>; names "mixtral-engine-…", on
/// /metrics "mixtral_engine_…"): time to first token and queue wait per request, and per step its time, its tokens and
/// the prompt chunks it ran. The engine reports to it (<see cref="IEngineObserver"/>) from its loop thread.
/// </summary>
public sealed class EngineHistograms : IEngineObserver
{
    readonly Histogram<double> _timeToFirstToken, _queueWait, _stepTime;
    readonly Histogram<int> _tokensPerStep, _promptChunk;

    public EngineHistograms(IMeterFactory meters)
    {
        var meter = meters.Create(EngineMetrics.MeterName);
        double[] seconds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30];
        int[] tokens = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];
        _timeToFirstToken = meter.CreateHistogram("mixtral-engine-time-to-first-token", "s",
            "submission to first token in the engine (queue wait and prompt included)", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = seconds });
        _queueWait = meter.CreateHistogram("mixtral-engine-queue-wait", "s",
            "submission to admission into the running batch", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = seconds });
        _stepTime = meter.CreateHistogram("mixtral-engine-step-time", "s",
            "one engine step: a forward pass over the batch and its sampling", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = seconds });
        _tokensPerStep = meter.CreateHistogram("mixtral-engine-tokens-per-step", "tokens",
            "tokens of one step: a token per decoding sequence plus prompt chunks", advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = tokens });
        _promptChunk = meter.CreateHistogram("mixtral-engine-prompt-chunk-tokens", "tokens",
            "prompt tokens of one request computed in one step (chunked prefill)", advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = tokens });
    }

    public void Admitted(TimeSpan queueWait) => _queueWait.Record(queueWait.TotalSeconds);
    public void FirstToken(TimeSpan timeToFirstToken) => _timeToFirstToken.Record(timeToFirstToken.TotalSeconds);
    public void PromptChunk(int tokens) => _promptChunk.Record(tokens);

    public void StepCompleted(TimeSpan duration, int tokens, int sequences)
    {
        _stepTime.Record(duration.TotalSeconds);
        _tokensPerStep.Record(tokens);
    }
}
