using System.Diagnostics;

namespace OrleansMixtral.Engine;

/// <summary>
/// What the engine reports as it runs, for metrics (<see cref="EngineOptions.Observer"/>). Called on the engine's loop
/// thread between steps: an observer must be cheap and must not throw.
/// </summary>
public interface IEngineObserver
{
    /// <summary>A request was admitted to the running batch after waiting this long since its submission.</summary>
    void Admitted(TimeSpan queueWait);
    /// <summary>A request's first token, this long after its submission (queue wait and prompt included).</summary>
    void FirstToken(TimeSpan timeToFirstToken);
    /// <summary>A step ran a chunk of one request's prompt of this many tokens.</summary>
    void PromptChunk(int tokens);
    /// <summary>A step (one forward pass, sampling included) took this long over this many tokens of this many sequences.</summary>
    void StepCompleted(TimeSpan duration, int tokens, int sequences);
}

/// <summary>
/// Events per second over the last <c>window</c>, in ten buckets of a tenth of it: written by the engine's loop, read
/// by any thread (a reader may miss an event being added). With nothing added for a whole window it reads 0.
/// </summary>
sealed class RateWindow
{
    const int Buckets = 10;
    readonly long _bucketTicks;
    readonly long[] _bucket = new long[Buckets + 1];  // which bucket (timestamp / _bucketTicks) slot i holds
    readonly long[] _count = new long[Buckets + 1];

    public RateWindow(TimeSpan window)
    {
        _bucketTicks = Math.Max(1, (long)(window.TotalSeconds * Stopwatch.Frequency / Buckets));
        Array.Fill(_bucket, -1);
    }

    public void Add(long timestamp, long events)
    {
        var b = timestamp / _bucketTicks;
        var i = (int)(b % _bucket.Length);
        if (Volatile.Read(ref _bucket[i]) != b)
        {
            Volatile.Write(ref _count[i], 0);
            Volatile.Write(ref _bucket[i], b);
        }
        Interlocked.Add(ref _count[i], events);
    }

    public double PerSecond(long now)
    {
        var current = now / _bucketTicks;
        long sum = 0;
        for (var i = 0; i < _bucket.Length; i++)
        {
            var b = Volatile.Read(ref _bucket[i]);
            if (b > current - Buckets && b <= current) sum += Interlocked.Read(ref _count[i]);
        }
        // the window's whole buckets and the part of the current one that has passed
        var seconds = ((Buckets - 1) * _bucketTicks + (now - current * _bucketTicks)) / (double)Stopwatch.Frequency;
        return sum / seconds;
    }
}

/// <summary>
/// The last <c>capacity</c> values of a latency (written by the engine's loop, read by any thread), for percentiles of
/// recent requests on a status page; the histograms are the metrics' business.
/// </summary>
sealed class RecentValues(int capacity)
{
    readonly double[] _values = new double[capacity];
    readonly Lock _lock = new();
    long _count;

    public void Add(double value)
    {
        lock (_lock) _values[_count++ % _values.Length] = value;
    }

    /// <summary>The nearest-rank percentiles (0-100) of the values kept, or nulls when there are none.</summary>
    public double?[] Percentiles(params ReadOnlySpan<double> percents)
    {
        double[] sorted;
        lock (_lock) sorted = _values[..(int)Math.Min(_count, _values.Length)];
        var result = new double?[percents.Length];
        if (sorted.Length == 0) return result;
        Array.Sort(sorted);
        for (var i = 0; i < percents.Length; i++)
            result[i] = sorted[Math.Clamp((int)Math.Ceiling(percents[i] / 100 * sorted.Length) - 1, 0, sorted.Length - 1)];
        return result;
    }
}
