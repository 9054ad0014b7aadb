using System.Diagnostics;

namespace OrleansMixtral.LoadBench;

/// <summary>
/// Sends request <paramref name="index"/> of a rate and returns how it ended. Report every token as it reaches the
/// caller through <paramref name="clock"/> (<see cref="RequestClock.Tokens"/>): the time to first token and the gaps
/// between tokens come from those calls. An exception counts as a failed request.
/// </summary>
public delegate Task<RequestOutcome> SendRequest(int index, RequestClock clock, CancellationToken cancellationToken);

/// <summary>How one request ended, as the sender knows it.</summary>
/// <param name="PromptTokens">The prompt's length as the server counted it.</param>
/// <param name="OutputTokens">Tokens generated (for throughput; the gaps come from the clock).</param>
/// <param name="Finish">The finish reason, as the server names it.</param>
/// <param name="EngineTtftMs">The engine's own submit-to-first-token time when the path reports it (the cluster does).</param>
public sealed record RequestOutcome(bool Succeeded, int PromptTokens, int OutputTokens, string Finish, string? Error = null, double? EngineTtftMs = null)
{
    public static RequestOutcome Failed(string error) => new(false, 0, 0, "Error", error);
}

/// <summary>The times of one request: when it was due, sent, answered token by token, and done (Stopwatch ticks).</summary>
public sealed class RequestClock
{
    readonly List<(long At, int Count)> _arrivals = [];

    internal RequestClock(int index, double dueSeconds, long due)
    {
        Index = index;
        DueSeconds = dueSeconds;
        Due = due;
    }

    public int Index { get; }
    /// <summary>The scheduled arrival, seconds after the rate's first.</summary>
    public double DueSeconds { get; }
    internal long Due { get; }
    internal long Sent { get; set; }
    internal long Done { get; set; }
    internal IReadOnlyList<(long At, int Count)> Arrivals => _arrivals;

    /// <summary>
    /// <paramref name="count"/> tokens reached the caller now (a path that sends tokens in chunks reports a chunk at
    /// once). Called by one sender at a time, in order.
    /// </summary>
    public void Tokens(int count = 1)
    {
        if (count > 0) _arrivals.Add((Stopwatch.GetTimestamp(), count));
    }
}

/// <summary>
/// The open-loop runner: sends each request of a schedule at its time, without waiting for earlier ones (they overlap
/// as a server's clients would), then waits for all to finish. The schedule is kept by a thread of its own, which
/// sleeps until each arrival and calls the sender there, so neither a busy thread pool nor a slow request holds up the
/// next arrival: a sender should reach its first wait quickly (submit, then await the tokens). How late each request
/// left anyway (a machine whose cores the server keeps busy) is reported (<see cref="RateReport.MaxSendLagMs"/>).
/// </summary>
public static class LoadRunner
{
    public static async Task<RateReport> RunAsync(double rate, IReadOnlyList<double> arrivals, SendRequest send, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfZero(arrivals.Count);
        var clocks = new RequestClock[arrivals.Count];
        var tasks = new Task<RequestOutcome>[arrivals.Count];
        var scheduled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                long start = Stopwatch.GetTimestamp();
                for (int i = 0; i < arrivals.Count; i++)
                {
                    long due = start + (long)(arrivals[i] * Stopwatch.Frequency);
                    // whole milliseconds, rounded up: never early, at most about a millisecond late; 100 ms at most at
                    // a time, to notice cancellation
                    for (long left; (left = due - Stopwatch.GetTimestamp()) > 0;)
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        Thread.Sleep((int)Math.Min(100, Math.Ceiling(left * 1000.0 / Stopwatch.Frequency)));
                    }
                    cancellationToken.ThrowIfCancellationRequested();
                    var clock = clocks[i] = new RequestClock(i, arrivals[i], due);
                    tasks[i] = SendOne(clock, send, cancellationToken);
                }
                scheduled.SetResult();
            }
            catch (Exception e)
            {
                scheduled.SetException(e);
            }
        })
        { IsBackground = true, Name = "load-arrivals" };
        thread.Start();
        await scheduled.Task.ConfigureAwait(false);
        RequestOutcome[] outcomes = await Task.WhenAll(tasks).ConfigureAwait(false);
        return RateReport.From(rate, clocks, outcomes);
    }

    static async Task<RequestOutcome> SendOne(RequestClock clock, SendRequest send, CancellationToken cancellationToken)
    {
        clock.Sent = Stopwatch.GetTimestamp();
        RequestOutcome outcome;
        try
        {
            outcome = await send(clock.Index, clock, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested) { throw; }
        catch (Exception e)
        {
            outcome = RequestOutcome.Failed(e.GetType().Name + ": " + e.Message);
        }
        clock.Done = Stopwatch.GetTimestamp();
        if (outcome.Succeeded && clock.Arrivals.Count == 0 && outcome.OutputTokens > 0)
            outcome = outcome with { Succeeded = false, Error = "the sender reported no token arrivals" };
        return outcome;
    }
}
