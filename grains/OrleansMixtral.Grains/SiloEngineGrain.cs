using System.Runtime.CompilerServices;
using System.Text;
using System.Threading.Channels;
using Orleans.Concurrency;
using Orleans.Runtime;
using OrleansMixtral.Engine;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Grains;

/// <summary>
/// The "GPU grain": fronts this silo's engine (<see cref="ISiloEngine"/>). One activation per silo (<see cref="SiloEnginePlacementAttribute"/>,
/// key = the silo address). <see cref="Reentrant"/>: every call interleaves, so the turns of all conversations on the
/// silo are in the engine at once and its loop batches them; nothing here waits on the engine thread, which hands
/// tokens over through channels.
/// </summary>
[Reentrant, SiloEnginePlacement]
public sealed class SiloEngineGrain(ISiloEngine host, ILocalSiloDetails silo, Microsoft.Extensions.Options.IOptions<MixtralSiloOptions> options)
    : Grain, IEngineGrain
{
    readonly string _siloKey = silo.SiloAddress.ToParsableString();
    readonly TimeSpan _interval = TimeSpan.FromMilliseconds(Math.Max(0, options.Value.DirectChunkIntervalMilliseconds));

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        if (this.GetPrimaryKeyString() != _siloKey)
            throw new InvalidOperationException($"engine grain {this.GetPrimaryKeyString()} activated on silo {_siloKey}");
        return Task.CompletedTask;
    }

    public async IAsyncEnumerable<EngineChunk> Generate(EngineRequest request, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        if (request.RefuseIfBusy && host.BusyReason(request) is { } reason)
            throw new EngineBusyException($"engine on {_siloKey} is busy: {reason}");
        // current while the engine takes the request, which makes its own span this one's child
        using var trace = GrainTracing.Source.StartActivity(GrainTracing.EngineGenerateSpan);
        trace?.SetTag("mixtral.conversation_id", request.ConversationId);
        trace?.SetTag("mixtral.turn", request.Turn);
        trace?.SetTag("mixtral.engine_silo", _siloKey);
        var stream = host.Submit(request);
        var completed = false;
        using var registration = cancellationToken.Register(stream.Cancel);
        try
        {
            var reader = stream.Tokens;
            long lastYield = 0;
            while (true)
            {
                // Wait for the next token without the caller's token: cancelling ends generation through the engine
                // (stream.Cancel above), and the engine then completes the channel and the result.
                var more = await WaitToRead(reader);
                if (!more) break;
                // The first token goes at once (time to first token); later ones at most one chunk per interval, so a
                // fast engine (hundreds of tokens a second) costs a message per few tokens, not per token. At GPU
                // decode speeds (a token every 8+ ms) every token still travels alone.
                if (lastYield != 0 && _interval > TimeSpan.Zero)
                {
                    var wait = _interval - System.Diagnostics.Stopwatch.GetElapsedTime(lastYield);
                    if (wait > TimeSpan.FromMilliseconds(0.5)) await Task.Delay(wait);
                }
                var chunk = Drain(reader);
                if (chunk is null) continue;
                if (lastYield == 0) chunk = WithPromptLogprobs(chunk, stream);
                lastYield = System.Diagnostics.Stopwatch.GetTimestamp();
                yield return chunk;
            }
            var result = await stream.Completion;
            completed = true;
            var final = Final(result);
            if (trace is not null)
            {
                // ended now: the caller ends its turn on this chunk, and lets go of the enumeration only later
                GrainTracing.Ended(trace, final.End!);
                trace.Stop();
            }
            yield return lastYield == 0 ? WithPromptLogprobs(final, stream) : final;
        }
        finally
        {
            // The caller went away (disposed the enumeration) before the end: stop generating.
            if (!completed) stream.Cancel();
        }
    }

    /// <summary>False at the end of the stream, also when the engine failed the sequence (its result tells why).</summary>
    static async ValueTask<bool> WaitToRead(ChannelReader<GeneratedToken> reader)
    {
        try { return await reader.WaitToReadAsync(); }
        catch (Exception) { return false; }
    }

    /// <summary>Everything the engine has produced so far, as one chunk (several tokens when the caller fell behind).</summary>
    static EngineChunk? Drain(ChannelReader<GeneratedToken> reader)
    {
        if (!reader.TryRead(out var first)) return null;
        if (!reader.TryRead(out var second))
            return new EngineChunk
            {
                Text = first.Text,
                TokenIds = first.TokenId >= 0 ? [first.TokenId] : [],
                Logprobs = first.Logprobs is { } l ? [ToMessage(l)] : [],
            };
        var text = new StringBuilder(first.Text).Append(second.Text);
        var ids = new List<int>(4);
        var logprobs = new List<Contracts.TokenLogprobs>();
        void Add(GeneratedToken t)
        {
            if (t.TokenId >= 0) ids.Add(t.TokenId);
            if (t.Logprobs is { } l) logprobs.Add(ToMessage(l));
        }
        Add(first);
        Add(second);
        while (reader.TryRead(out var t))
        {
            text.Append(t.Text);
            Add(t);
        }
        return new EngineChunk { Text = text.ToString(), TokenIds = [.. ids], Logprobs = [.. logprobs] };
    }

    static Contracts.TokenLogprobs ToMessage(OrleansMixtral.Engine.TokenLogprobs l) => new(l.TokenId, l.Logprob, l.TopTokenIds, l.TopLogprobs);

    /// <summary>The prompt's logprobs, when asked for, go with the first chunk the caller gets.</summary>
    static EngineChunk WithPromptLogprobs(EngineChunk chunk, GenerationStream stream) =>
        stream.PromptLogprobs is { } scores ? chunk with { PromptLogprobs = [.. scores.Select(s => s is null ? null : ToMessage(s))] } : chunk;

    EngineChunk Final(GenerationResult r)
    {
        return new EngineChunk
        {
            OutputTokens = [.. r.OutputTokens],
            End = new TurnEnd
            {
                Finish = r.FinishReason,
                Usage = r.Usage,
                Error = r.Error,
                Silo = _siloKey,
                EngineTtftMs = r.TimeToFirstToken.TotalMilliseconds,
                EngineElapsedMs = r.Elapsed.TotalMilliseconds,
                Text = r.Text,
            },
        };
    }

    public Task<bool> Cancel(string conversationId, int turn) => Task.FromResult(host.Cancel(conversationId, turn));

    public Task<EngineLoad> GetLoad() => Task.FromResult(host.GetLoad());
}
