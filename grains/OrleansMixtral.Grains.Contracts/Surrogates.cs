namespace OrleansMixtral.Grains;

// The shared vocabulary (src/OrleansMixtral.Abstractions) knows no Orleans, so its types cross the wire through these
// surrogates: the same type at every layer, one wire form here.

/// <summary>The wire form of <see cref="SamplingOptions"/>.</summary>
[GenerateSerializer, Immutable, Alias("mixtral.SamplingOptions")]
public struct SamplingOptionsSurrogate
{
    [Id(0)] public float Temperature;
    [Id(1)] public float TopP;
    [Id(2)] public int TopK;
    [Id(3)] public ulong? Seed;
    [Id(4)] public int? MaxTokens;
    [Id(5)] public string[] StopStrings;
    [Id(6)] public int[] StopTokens;
    [Id(7)] public bool IgnoreEos;
    [Id(8)] public int? Logprobs;
    [Id(9)] public int? PromptLogprobs;
}

[RegisterConverter]
public sealed class SamplingOptionsConverter : IConverter<SamplingOptions, SamplingOptionsSurrogate>
{
    public SamplingOptions ConvertFromSurrogate(in SamplingOptionsSurrogate s) => new()
    {
        Temperature = s.Temperature,
        TopP = s.TopP,
        TopK = s.TopK,
        Seed = s.Seed,
        MaxTokens = s.MaxTokens,
        StopStrings = s.StopStrings ?? [],
        StopTokens = s.StopTokens ?? [],
        IgnoreEos = s.IgnoreEos,
        Logprobs = s.Logprobs,
        PromptLogprobs = s.PromptLogprobs,
    };

    public SamplingOptionsSurrogate ConvertToSurrogate(in SamplingOptions o) => new()
    {
        Temperature = o.Temperature,
        TopP = o.TopP,
        TopK = o.TopK,
        Seed = o.Seed,
        MaxTokens = o.MaxTokens,
        StopStrings = [.. o.StopStrings],
        StopTokens = [.. o.StopTokens],
        IgnoreEos = o.IgnoreEos,
        Logprobs = o.Logprobs,
        PromptLogprobs = o.PromptLogprobs,
    };
}

/// <summary>The wire form of <see cref="FinishReason"/> (its number).</summary>
[GenerateSerializer, Immutable, Alias("mixtral.FinishReason")]
public struct FinishReasonSurrogate
{
    [Id(0)] public int Value;
}

[RegisterConverter]
public sealed class FinishReasonConverter : IConverter<FinishReason, FinishReasonSurrogate>
{
    public FinishReason ConvertFromSurrogate(in FinishReasonSurrogate s) => (FinishReason)s.Value;
    public FinishReasonSurrogate ConvertToSurrogate(in FinishReason value) => new() { Value = (int)value };
}

/// <summary>The wire form of <see cref="ErrorKind"/> (its number).</summary>
[GenerateSerializer, Immutable, Alias("mixtral.ErrorKind")]
public struct ErrorKindSurrogate
{
    [Id(0)] public int Value;
}

[RegisterConverter]
public sealed class ErrorKindConverter : IConverter<ErrorKind, ErrorKindSurrogate>
{
    public ErrorKind ConvertFromSurrogate(in ErrorKindSurrogate s) => (ErrorKind)s.Value;
    public ErrorKindSurrogate ConvertToSurrogate(in ErrorKind value) => new() { Value = (int)value };
}
