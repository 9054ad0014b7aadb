using Microsoft.Extensions.Time.Testing;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// The one watchdog of streaming calls (conversation grain → engine, client → conversation, chat service → engine), on a
/// fake clock: stall check 3 s, probe timeout 2 s, so the silence is looked at every 750 ms.
/// </summary>
public sealed class CallWatchdogTests
{
    static readonly WatchdogTimes Times = new(TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(2));

    readonly FakeTimeProvider _clock = new();
    readonly FakeCall _call = new();
    int _probes;

    CallWatchdog Watchdog(Func<Task<Liveness>> probe, Func<string?>? departed = null) =>
        new(Times, _ => { _probes++; return probe(); }, "the other end does not answer", departed, _clock);

    /// <summary>Moves the fake clock forward in 250 ms steps, letting the watchdog's continuations run between them.</summary>
    async Task AdvanceAsync(int milliseconds)
    {
        for (var t = 0; t < milliseconds; t += 250)
        {
            _clock.Advance(TimeSpan.FromMilliseconds(250));
            await Task.Delay(15);
        }
    }

    [Fact]
    public void The_defaults_are_one_set_and_the_period_a_quarter_of_the_stall_check_within_50_ms_and_1_s()
    {
        Assert.Equal(new WatchdogTimes(TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(3)), WatchdogTimes.Default);
        Assert.Equal(TimeSpan.FromMilliseconds(750), WatchdogTimes.Default.Period);
        Assert.Equal(TimeSpan.FromSeconds(1), new WatchdogTimes(TimeSpan.FromSeconds(10), TimeSpan.Zero).Period);
        Assert.Equal(TimeSpan.FromMilliseconds(50), new WatchdogTimes(TimeSpan.FromMilliseconds(100), TimeSpan.Zero).Period);
        // settings in milliseconds: a probe timeout of 0 takes the stall check's; the stall check is at least 50 ms
        Assert.Equal(new WatchdogTimes(TimeSpan.FromMilliseconds(750), TimeSpan.FromMilliseconds(750)), WatchdogTimes.FromMilliseconds(750, 0));
        Assert.Equal(new WatchdogTimes(TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(1)), WatchdogTimes.FromMilliseconds(10, 1000));
        // the hosts' settings default to the same times
        var silo = new MixtralSiloOptions();
        Assert.Equal(WatchdogTimes.Default, WatchdogTimes.FromMilliseconds(silo.StallProbeMilliseconds, silo.ProbeTimeoutMilliseconds));
        Assert.Equal(WatchdogTimes.Default, new OrleansMixtral.Client.MixtralClient(null!).Watchdog);
    }

    [Fact]
    public async Task A_chunk_within_the_stall_check_comes_through_without_a_probe()
    {
        var next = Watchdog(() => Task.FromResult(Liveness.Alive)).MoveNextAsync(_call);
        await AdvanceAsync(2750);
        Assert.False(next.IsCompleted);
        _call.Deliver(7);
        Assert.True(await next);
        Assert.Equal(7, _call.Current);
        Assert.Equal(0, _probes);
    }

    [Fact]
    public async Task A_silent_call_whose_other_end_answers_goes_on_and_is_asked_again_after_the_next_stall_check()
    {
        var next = Watchdog(() => Task.FromResult(Liveness.Alive)).MoveNextAsync(_call);
        await AdvanceAsync(3000);
        Assert.Equal(1, _probes); // at 3 s of silence
        await AdvanceAsync(2750);
        Assert.Equal(1, _probes); // the silence started again at the answer
        await AdvanceAsync(250);
        Assert.Equal(2, _probes);
        Assert.False(next.IsCompleted);
        _call.Deliver(1);
        Assert.True(await next);
    }

    [Fact]
    public async Task A_probe_that_gets_no_answer_loses_the_call_after_the_stall_check_and_the_probe_timeout()
    {
        var never = new TaskCompletionSource<Liveness>();
        var next = Watchdog(() => never.Task).MoveNextAsync(_call);
        await AdvanceAsync(4750);
        Assert.False(next.IsCompleted); // 3 s of silence + under 2 s of waiting for the answer
        await AdvanceAsync(250);
        var lost = await Assert.ThrowsAsync<CallLostException>(() => next);
        Assert.Equal("the other end does not answer", lost.Message);
        // the call's own failure later is observed, never thrown
        _call.Fail(new InvalidOperationException("the silo is gone"));
    }

    [Fact]
    public async Task A_failing_probe_loses_the_call_with_the_unresponsive_reason()
    {
        var next = Watchdog(() => Task.FromException<Liveness>(new TimeoutException("Orleans' own"))).MoveNextAsync(_call);
        await AdvanceAsync(3000);
        Assert.Equal("the other end does not answer", (await Assert.ThrowsAsync<CallLostException>(() => next)).Message);
    }

    [Fact]
    public async Task An_unsure_answer_is_asked_again_at_the_next_period_and_a_lost_one_ends_the_wait_with_its_reason()
    {
        var answers = new Queue<Liveness>([Liveness.Unsure, Liveness.Lost("the conversation no longer runs the turn")]);
        var next = Watchdog(() => Task.FromResult(answers.Dequeue())).MoveNextAsync(_call);
        await AdvanceAsync(3000);
        Assert.Equal(1, _probes);
        Assert.False(next.IsCompleted);
        await AdvanceAsync(750);
        Assert.Equal(2, _probes);
        Assert.Equal("the conversation no longer runs the turn", (await Assert.ThrowsAsync<CallLostException>(() => next)).Message);
    }

    [Fact]
    public async Task A_chunk_that_comes_while_the_probe_waits_wins()
    {
        var slow = new TaskCompletionSource<Liveness>();
        var next = Watchdog(() => slow.Task).MoveNextAsync(_call);
        await AdvanceAsync(3500);
        Assert.Equal(1, _probes);
        _call.Deliver(3);
        Assert.True(await next);
        Assert.Equal(3, _call.Current);
    }

    [Fact]
    public async Task A_departed_other_end_ends_the_wait_at_the_next_period_without_a_probe()
    {
        string? gone = null;
        var next = Watchdog(() => Task.FromResult(Liveness.Alive), () => gone).MoveNextAsync(_call);
        await AdvanceAsync(1000);
        gone = "silo S left the cluster";
        Assert.False(next.IsCompleted);
        await AdvanceAsync(750);
        Assert.Equal("silo S left the cluster", (await Assert.ThrowsAsync<CallLostException>(() => next)).Message);
        Assert.Equal(0, _probes);
    }

    [Fact]
    public async Task An_abandoned_call_ends_the_wait_at_once_with_a_cancellation()
    {
        using var abandon = new CancellationTokenSource();
        var next = Watchdog(() => Task.FromResult(Liveness.Alive)).MoveNextAsync(_call, abandon.Token);
        await AdvanceAsync(500);
        abandon.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => next);
        _call.Fail(new InvalidOperationException("the call's own end"));
    }

    [Fact]
    public async Task First_times_bound_the_first_stall_check_and_probe_then_the_usual_times_apply()
    {
        var never = new TaskCompletionSource<Liveness>();
        var half = TimeSpan.FromMilliseconds(500);
        var next = Watchdog(() => never.Task).MoveNextAsync(_call, first: new WatchdogTimes(half, half));
        await AdvanceAsync(750);
        Assert.False(next.IsCompleted);
        await AdvanceAsync(250);
        await Assert.ThrowsAsync<CallLostException>(() => next); // 500 ms + 500 ms, not 3 s + 2 s

        var alive = new FakeCall();
        var answered = Watchdog(() => Task.FromResult(Liveness.Alive)).MoveNextAsync(alive, first: new WatchdogTimes(half, half));
        await AdvanceAsync(500);
        Assert.Equal(2, _probes); // the first probe at 500 ms (after the lost call's one)
        await AdvanceAsync(2750);
        Assert.Equal(2, _probes); // then 3 s of silence again before the next
        await AdvanceAsync(250);
        Assert.Equal(3, _probes);
        alive.Deliver(1);
        Assert.True(await answered);
    }

    [Fact]
    public async Task A_chunk_already_there_and_the_end_of_the_stream_come_through_as_they_are()
    {
        var watchdog = Watchdog(() => Task.FromResult(Liveness.Alive));
        _call.Deliver(5);
        Assert.True(await watchdog.MoveNextAsync(_call));
        var next = watchdog.MoveNextAsync(_call);
        _call.End();
        Assert.False(await next);
        var failing = new FakeCall();
        var failed = watchdog.MoveNextAsync(failing);
        failing.Fail(new InvalidOperationException("refused"));
        Assert.Equal("refused", (await Assert.ThrowsAsync<InvalidOperationException>(() => failed)).Message);
    }

    /// <summary>A streaming call whose chunks the test delivers.</summary>
    sealed class FakeCall : IAsyncEnumerator<int>
    {
        TaskCompletionSource<bool>? _next;
        readonly Queue<int> _ready = new();
        public int Current { get; private set; }

        public ValueTask<bool> MoveNextAsync()
        {
            if (_ready.TryDequeue(out var value))
            {
                Current = value;
                return ValueTask.FromResult(true);
            }
            _next = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            return new ValueTask<bool>(_next.Task);
        }

        public void Deliver(int value)
        {
            if (_next is { } waiting)
            {
                _next = null;
                Current = value;
                waiting.SetResult(true);
            }
            else _ready.Enqueue(value);
        }

        public void End() => _next!.SetResult(false);
        public void Fail(Exception e) => _next!.SetException(e);
        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
