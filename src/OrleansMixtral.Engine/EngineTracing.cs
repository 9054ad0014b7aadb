using System.Diagnostics;

namespace OrleansMixtral.Engine;

/// <summary>
/// The engine's spans, on the ActivitySource <see cref="SourceName"/> (System.Diagnostics: any OpenTelemetry tracer or
/// ActivityListener that listens to the name gets them). A request's span (<see cref="SequenceSpan"/>) is a child of the
/// activity current where it was submitted, so it joins the caller's trace; below it: the wait for admission
/// (<see cref="QueueSpan"/>), each prompt chunk a step computed (<see cref="PromptChunkSpan"/>: one forward pass of the
/// batch), and the decode phase (<see cref="DecodeSpan"/>, its step count a tag: a span per decode step would be a span
/// per token; the step-time histogram has those). Without a listener nothing is created.
/// </summary>
public static class EngineTracing
{
    public const string SourceName = "OrleansMixtral.Engine";
    public const string SequenceSpan = "mixtral.engine.sequence";
    public const string QueueSpan = "mixtral.engine.queue";
    public const string PromptChunkSpan = "mixtral.engine.prompt_chunk";
    public const string DecodeSpan = "mixtral.engine.decode";

    internal static readonly ActivitySource Source = new(SourceName);

    /// <summary>
    /// A request's span, a child of <see cref="Activity.Current"/>, which stays what it was: the span lives as long as the
    /// request in the engine (it ends on the engine's thread), not as the caller's current activity.
    /// </summary>
    internal static Activity? StartSequence(int promptTokens, int maxTokens)
    {
        if (!Source.HasListeners()) return null;
        var caller = Activity.Current;
        var span = Source.StartActivity(SequenceSpan, ActivityKind.Internal);
        Activity.Current = caller;
        span?.SetTag("gen_ai.usage.input_tokens", promptTokens);
        span?.SetTag("gen_ai.request.max_tokens", maxTokens);
        return span;
    }

    /// <summary>A finished interval below <paramref name="parent"/>, from Stopwatch timestamps (created on the engine's thread, after the fact).</summary>
    internal static void Interval(Activity parent, string name, long startTimestamp, long endTimestamp, params ReadOnlySpan<(string Key, object Value)> tags)
    {
        var now = Stopwatch.GetTimestamp();
        var utcNow = DateTime.UtcNow;
        var span = Source.StartActivity(name, ActivityKind.Internal, parent.Context,
            startTime: utcNow - Stopwatch.GetElapsedTime(startTimestamp, now));
        if (span is null) return;
        foreach (var (key, value) in tags) span.SetTag(key, value);
        span.SetEndTime(utcNow - Stopwatch.GetElapsedTime(endTimestamp, now));
        span.Stop();
        Activity.Current = null; // the engine's thread belongs to no trace
    }
}
