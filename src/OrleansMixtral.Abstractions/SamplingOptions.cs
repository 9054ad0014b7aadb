namespace OrleansMixtral;

/// <summary>
/// How a reply is sampled: the one options type of every entry point (HTTP, IChatClient, the CLI, cluster chat, the
/// grains and the engine), with the defaults of OpenAI-compatible servers: temperature 1, top_p 1, top_k off, and as
/// many tokens as the context leaves. Temperature 0 or top_p 0 is greedy. <see cref="Check"/> is the one validation.
/// </summary>
public sealed record SamplingOptions
{
    public const float DefaultTemperature = 1f;
    public const float MaxTemperature = 2f;
    public const float DefaultTopP = 1f;
    /// <summary>The most alternatives <see cref="Logprobs"/> and <see cref="PromptLogprobs"/> may ask for (OpenAI's top_logprobs).</summary>
    public const int MaxLogprobs = 20;

    /// <summary>Softmax temperature, 0 to <see cref="MaxTemperature"/>; 0 is greedy (argmax).</summary>
    public float Temperature { get; init; } = DefaultTemperature;
    /// <summary>Nucleus sampling: keep the smallest set of tokens whose probability reaches TopP (1 = off, 0 = greedy).</summary>
    public float TopP { get; init; } = DefaultTopP;
    /// <summary>Keep only the K most likely tokens (0 = off).</summary>
    public int TopK { get; init; }
    /// <summary>Seed for reproducible sampling; null draws one.</summary>
    public ulong? Seed { get; init; }
    /// <summary>Most tokens to generate; null: as many as the model's context leaves after the prompt.</summary>
    public int? MaxTokens { get; init; }
    /// <summary>Strings that end generation; the output is cut before the stop string.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>Token ids that end generation (in addition to the model's EOS unless <see cref="IgnoreEos"/>).</summary>
    public IReadOnlyList<int> StopTokens { get; init; } = [];
    /// <summary>Keep generating past the end-of-sequence token, to <see cref="MaxTokens"/> (benchmarks, tests).</summary>
    public bool IgnoreEos { get; init; }
    /// <summary>
    /// Log-probabilities of each generated token and of this many most likely alternatives at its position (0 to
    /// <see cref="MaxLogprobs"/>); null: none. They are the log-softmax of the logits the token was sampled from.
    /// </summary>
    public int? Logprobs { get; init; }
    /// <summary>The same for every prompt token after the first (OpenAI's echo + logprobs); null: none.</summary>
    public int? PromptLogprobs { get; init; }

    /// <summary>Greedy decoding of at most <paramref name="maxTokens"/> tokens.</summary>
    public static SamplingOptions Greedy(int? maxTokens = null) => new() { Temperature = 0, MaxTokens = maxTokens };

    /// <summary>Argmax at every step: temperature 0, or a nucleus of 0 (only the most likely token survives).</summary>
    public bool IsGreedy => Temperature == 0 || TopP == 0;

    /// <summary>Whether the engine must see this request's logits (logprobs).</summary>
    public bool NeedsLogits => Logprobs is not null || PromptLogprobs is not null;

    /// <summary>The same sampling with greedy spelled one way (temperature 0, top_p 1), as the engine runs it.</summary>
    public SamplingOptions Normalized() => IsGreedy && (Temperature != 0 || TopP != 1) ? this with { Temperature = 0, TopP = 1 } : this;

    /// <summary>The reply's limit for a prompt of <paramref name="promptTokens"/> in a context of <paramref name="contextLength"/>.</summary>
    public int MaxTokensFor(int promptTokens, int contextLength) =>
        Math.Max(1, Math.Min(MaxTokens ?? int.MaxValue, contextLength - promptTokens));

    /// <summary>What is wrong with these options (the field, as the OpenAI API names it, and why), or null.</summary>
    public SamplingProblem? Check()
    {
        if (!(Temperature >= 0 && Temperature <= MaxTemperature))
            return new("temperature", $"temperature must be between 0 and {MaxTemperature:0}, got {Temperature}");
        if (!(TopP >= 0 && TopP <= 1)) return new("top_p", $"top_p must be between 0 and 1, got {TopP}");
        if (TopK < 0) return new("top_k", $"top_k must be >= 0, got {TopK}");
        if (MaxTokens is < 1) return new("max_tokens", $"max_tokens must be >= 1, got {MaxTokens}");
        if (StopStrings.Any(string.IsNullOrEmpty)) return new("stop", "stop strings must not be empty");
        if (Logprobs is < 0 or > MaxLogprobs) return new("top_logprobs", $"logprobs must be between 0 and {MaxLogprobs}, got {Logprobs}");
        if (PromptLogprobs is < 0 or > MaxLogprobs) return new("logprobs", $"prompt logprobs must be between 0 and {MaxLogprobs}, got {PromptLogprobs}");
        return null;
    }
}

/// <summary>Why <see cref="SamplingOptions"/> cannot be used: the field at fault (OpenAI's "param") and a sentence.</summary>
public sealed record SamplingProblem(string Param, string Message);
