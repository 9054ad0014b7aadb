using System.Diagnostics;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Grains;

/// <summary>
/// The grains' spans, on the ActivitySource <see cref="SourceName"/>: a conversation's turn (<see cref="TurnSpan"/>,
/// from the turn's start to its end, engine choice and retries included) and an engine grain's generation
/// (<see cref="EngineGenerateSpan"/>), whose engine request span (<c>OrleansMixtral.Engine.EngineTracing</c>) is its
/// child. Orleans' activity propagation (<c>AddActivityPropagation</c>, on silos and clients) carries the trace from the
/// caller across grain calls.
/// </summary>
public static class GrainTracing
{
    public const string SourceName = "OrleansMixtral.Grains";
    public const string TurnSpan = "mixtral.conversation.turn";
    public const string EngineGenerateSpan = "mixtral.engine_grain.generate";

    internal static readonly ActivitySource Source = new(SourceName);

    /// <summary>Tags a span with a turn's outcome: finish, engine silo, usage, and the error status for a failure.</summary>
    internal static void Ended(Activity span, TurnEnd end)
    {
        span.SetTag("gen_ai.response.finish_reasons", end.Finish.ToString().ToLowerInvariant());
        span.SetTag("mixtral.engine_silo", end.Silo);
        span.SetTag("gen_ai.usage.input_tokens", end.Usage.PromptTokens);
        span.SetTag("gen_ai.usage.output_tokens", end.Usage.CompletionTokens);
        span.SetTag("mixtral.cached_prompt_tokens", end.Usage.CachedPromptTokens);
        if (end.Finish == FinishReason.Error) span.SetStatus(ActivityStatusCode.Error, end.Error);
    }
}
