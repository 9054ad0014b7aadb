namespace OrleansMixtral.Grains.Contracts;

/// <summary>
/// How long a streaming call to another silo may stay silent before its other end is asked whether it still works on
/// the call (<see cref="StallCheck"/>), and how long that question may take (<see cref="ProbeTimeout"/>). One set of
/// defaults for every caller (the conversation grain, the client library, the chat service); hosts may set their own.
/// </summary>
public sealed record WatchdogTimes(TimeSpan StallCheck, TimeSpan ProbeTimeout)
{
    /// <summary>3 s of silence, then a 3 s question: a long prompt or a queue answers at once, a silo killed without goodbye is
    /// found in about 6 s instead of Orleans' 30 s response timeout or the membership's verdict.</summary>
    public static WatchdogTimes Default { get; } = new(TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(3));

    /// <summary>The times from settings in milliseconds: a stall check of at least 50 ms; a probe timeout of 0 or less takes the stall check's.</summary>
    public static WatchdogTimes FromMilliseconds(int stallCheck, int probeTimeout)
    {
        var stall = TimeSpan.FromMilliseconds(Math.Max(50, stallCheck));
        return new(stall, probeTimeout > 0 ? TimeSpan.FromMilliseconds(probeTimeout) : stall);
    }

    /// <summary>How often a waiting call looks at its silence: a quarter of the stall check, within 50 ms and 1 s.</summary>
    public TimeSpan Period => TimeSpan.FromTicks(Math.Clamp(StallCheck.Ticks / 4, TimeSpan.TicksPerMillisecond * 50, TimeSpan.TicksPerSecond));
}

/// <summary>What a probe of a silent call's other end found.</summary>
public readonly record struct Liveness(bool IsAlive, string? LostReason)
{
    /// <summary>It works on the call (a queue or a long prompt): the silence starts again.</summary>
    public static Liveness Alive => new(true, null);
    /// <summary>Not sure yet (the last chunk may be on its way): asked again at the next period.</summary>
    public static Liveness Unsure => new(false, null);
    /// <summary>The call is lost: the wait ends with <see cref="CallLostException"/>.</summary>
    public static Liveness Lost(string reason) => new(false, reason);
}

/// <summary>A call whose other end is gone (it left the cluster, does not answer, or no longer runs the call).</summary>
public sealed class CallLostException(string message) : TimeoutException(message);

/// <summary>
/// The one watchdog for a streaming call to another silo: a call in flight to a silo that died without goodbye is only
/// failed by Orleans when the membership declares the silo dead or the response timeout (30 s) passes, so the wait for
/// each chunk ends early when
/// <list type="bullet">
/// <item>the caller abandons the call (<see cref="OperationCanceledException"/>);</item>
/// <item><c>departed</c> names a reason, looked at every <see cref="WatchdogTimes.Period"/> (the silo is leaving);</item>
/// <item>after <see cref="WatchdogTimes.StallCheck"/> of silence, the probe says the call is lost, fails, or takes longer
/// than <see cref="WatchdogTimes.ProbeTimeout"/> (<see cref="CallLostException"/>, whose message says why).</item>
/// </list>
/// A chunk that arrives meanwhile always wins; the abandoned call's own failure is observed, never thrown.
/// </summary>
/// <param name="probe">Asks the other end whether it still works on the call.</param>
/// <param name="unresponsive">The reason given when the probe fails or times out ("the engine on silo X does not answer").</param>
/// <param name="departed">A reason when the other end is known to be gone, else null; cheap, called every period.</param>
public sealed class CallWatchdog(WatchdogTimes times, Func<CancellationToken, Task<Liveness>> probe, string unresponsive,
    Func<string?>? departed = null, TimeProvider? time = null)
{
    readonly TimeProvider _time = time ?? TimeProvider.System;

    public WatchdogTimes Times => times;

    /// <summary>
    /// <paramref name="enumerator"/>'s next chunk, watched. <paramref name="first"/>: other times for this wait until the
    /// first probe is answered (a caller with a deadline of its own), then <see cref="Times"/>.
    /// </summary>
    public async Task<bool> MoveNextAsync<T>(IAsyncEnumerator<T> enumerator, CancellationToken abandon = default, WatchdogTimes? first = null)
    {
        var next = enumerator.MoveNextAsync();
        if (next.IsCompleted) return await next;
        var call = next.AsTask();
        var current = first ?? times;
        var silentSince = _time.GetTimestamp();
        while (true)
        {
            var tick = Task.Delay(current.Period, _time, abandon);
            if (await Task.WhenAny(call, tick) == call) return await call;
            if (abandon.IsCancellationRequested) throw Abandoned(call, new OperationCanceledException("the call was abandoned", abandon));
            if (departed?.Invoke() is { } gone) throw Abandoned(call, new CallLostException(gone));
            if (_time.GetElapsedTime(silentSince) < current.StallCheck) continue;

            var asking = AskAsync(current.ProbeTimeout, abandon);
            if (await Task.WhenAny(call, asking) == call) return await call;
            var answer = await asking;
            if (abandon.IsCancellationRequested) throw Abandoned(call, new OperationCanceledException("the call was abandoned", abandon));
            if (answer.IsAlive)
            {
                silentSince = _time.GetTimestamp();
                current = times;
            }
            else if (answer.LostReason is { } reason) throw Abandoned(call, new CallLostException(reason));
        }
    }

    async Task<Liveness> AskAsync(TimeSpan timeout, CancellationToken abandon)
    {
        try { return await probe(abandon).WaitAsync(timeout, _time, abandon); }
        catch (OperationCanceledException) when (abandon.IsCancellationRequested) { return Liveness.Unsure; }
        catch (Exception) { return Liveness.Lost(unresponsive); }
    }

    static Exception Abandoned(Task call, Exception reason)
    {
        _ = call.ContinueWith(t => _ = t.Exception, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously);
        return reason;
    }
}
