using System.Buffers;
using Orleans.Serialization.Buffers;
using Orleans.Serialization.Cloning;
using Orleans.Serialization.Codecs;
using Orleans.Serialization.WireProtocol;

namespace OrleansMixtral.Grains.Contracts;

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


/// <summary>
/// Writes <typeparamref name="T"/> as <typeparamref name="TWire"/>, a record class that older builds sent and stored in
/// its place. A struct surrogate (<see cref="IConverter{TValue, TSurrogate}"/>) cannot stand in for a record class: a
/// class's form ends its (empty) base part with a marker that a struct's lacks, so neither side would read the other.
/// </summary>
public abstract class WireRecordCodec<T, TWire>(IFieldCodec<TWire> wire) : IFieldCodec<T>, IDeepCopier<T>
    where T : class where TWire : class
{
    protected abstract TWire ToWire(T value);
    protected abstract T FromWire(TWire value);

    public void WriteField<TBufferWriter>(ref Writer<TBufferWriter> writer, uint fieldIdDelta, Type? expectedType, T? value)
        where TBufferWriter : IBufferWriter<byte> =>
        // Where T is expected, the wire record is: no type name is written, as older builds wrote none.
        wire.WriteField(ref writer, fieldIdDelta, expectedType == typeof(T) ? typeof(TWire) : expectedType, value is null ? null! : ToWire(value));

    public T ReadValue<TInput>(ref Reader<TInput> reader, Field field) => wire.ReadValue(ref reader, field) is { } value ? FromWire(value) : null!;

    /// <summary>Immutable records: a copy is the record itself.</summary>
    public T? DeepCopy(T? input, CopyContext context) => input;
}

/// <summary>The wire form of <see cref="ChatMessage"/>: the contracts' message record of older builds, field for field.</summary>
[GenerateSerializer, Immutable, Alias("mixtral.Message")]
public sealed record ChatMessageSurrogate(
    [property: Id(0)] int Role,          // the role's number, as that record's enum was written
    [property: Id(1)] string Content);

[RegisterSerializer, RegisterCopier]
public sealed class ChatMessageCodec(IFieldCodec<ChatMessageSurrogate> wire) : WireRecordCodec<ChatMessage, ChatMessageSurrogate>(wire)
{
    protected override ChatMessageSurrogate ToWire(ChatMessage value) => new((int)value.Role, value.Content);
    protected override ChatMessage FromWire(ChatMessageSurrogate value) => new((ChatRole)value.Role, value.Content ?? "");
}

/// <summary>The wire form of <see cref="TokenUsage"/>: the contracts' TurnUsage record of older builds, field for field.</summary>
[GenerateSerializer, Immutable, Alias("mixtral.TurnUsage")]
public sealed record TokenUsageSurrogate(
    [property: Id(0)] int PromptTokens,
    [property: Id(1)] int CachedPromptTokens,
    [property: Id(2)] int CompletionTokens)
{
    [Id(3)] public int DroppedTurns { get; init; }
}

[RegisterSerializer, RegisterCopier]
public sealed class TokenUsageCodec(IFieldCodec<TokenUsageSurrogate> wire) : WireRecordCodec<TokenUsage, TokenUsageSurrogate>(wire)
{
    protected override TokenUsageSurrogate ToWire(TokenUsage value) =>
        new(value.PromptTokens, value.CachedPromptTokens, value.CompletionTokens) { DroppedTurns = value.DroppedTurns };
    protected override TokenUsage FromWire(TokenUsageSurrogate value) =>
        new(value.PromptTokens, value.CachedPromptTokens, value.CompletionTokens) { DroppedTurns = value.DroppedTurns };
}
