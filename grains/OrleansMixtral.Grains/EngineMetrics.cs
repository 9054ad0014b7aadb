using System.Diagnostics.Metrics;

namespace OrleansMixtral.Grains;

/// <summary>
/// The engine's gauges as System.Diagnostics.Metrics instruments (tok/s, batch size, KV use, queue), observed from
/// <see cref="EngineHost.GetLoad"/> when a metrics listener collects them.
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

    public EngineMetrics(EngineHost host, IMeterFactory meters)
    {
        // From the silo's meter factory, like Orleans' own meter: listeners scoped to that factory see these too.
        _meter = meters.Create(MeterName);
        EngineLoad? Load() => host.IsLoaded ? host.GetLoad() : null;
        _meter.CreateObservableGauge("mixtral-engine-tokens-per-second", () => Load()?.DecodeTokensPerSecond ?? 0, "tokens/s",
            "decode tokens per second of the engine's batch (moving average over steps)");
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
