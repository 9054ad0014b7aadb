using System.Threading.Channels;

namespace OrleansMixtral.Engine;

/// <summary>
/// The caller's view of one submitted generation: tokens as they are produced, the final result, and cancel.
/// </summary>
public sealed class GenerationStream
{
    readonly Channel<GeneratedToken> _tokens = Channel.CreateUnbounded<GeneratedToken>(
        new UnboundedChannelOptions { SingleReader = false, SingleWriter = true, AllowSynchronousContinuations = false });
    readonly TaskCompletionSource<GenerationResult> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    readonly CancellationTokenSource _cancel = new();

    internal GenerationStream(long id) => Id = id;

    public long Id { get; }
    /// <summary>Tokens in order; the reader completes when generation ends (for any reason).</summary>
    public ChannelReader<GeneratedToken> Tokens => _tokens.Reader;
    /// <summary>Completes when generation ends: finish reason, usage, timings, the whole output.</summary>
    public Task<GenerationResult> Completion => _completion.Task;

    /// <summary>
    /// With <see cref="SamplingOptions.PromptLogprobs"/>: entry i scores prompt token i (entry 0, which nothing precedes,
    /// is null). Set before the first token is written and before <see cref="Completion"/> completes; null otherwise.
    /// </summary>
    public IReadOnlyList<TokenLogprobs?>? PromptLogprobs { get => Volatile.Read(ref _promptLogprobs); internal set => Volatile.Write(ref _promptLogprobs, value); }
    IReadOnlyList<TokenLogprobs?>? _promptLogprobs;

    /// <summary>Stops generation at the next step and frees the sequence's KV blocks.</summary>
    public void Cancel() => _cancel.Cancel();

    internal bool IsCancelled => _cancel.IsCancellationRequested;
    internal CancellationToken CancellationToken => _cancel.Token;

    internal void Emit(GeneratedToken token) => _tokens.Writer.TryWrite(token);

    internal void Complete(GenerationResult result)
    {
        _tokens.Writer.TryComplete();
        _completion.TrySetResult(result);
    }

    internal void Fail(Exception error)
    {
        _tokens.Writer.TryComplete(error);
        _completion.TrySetException(error);
    }

    /// <summary>Reads every token to the end, then returns the result.</summary>
    public async Task<GenerationResult> ReadToEndAsync(Action<GeneratedToken>? onToken = null, CancellationToken ct = default)
    {
        await foreach (var t in Tokens.ReadAllAsync(ct)) onToken?.Invoke(t);
        return await Completion.WaitAsync(ct);
    }
}
