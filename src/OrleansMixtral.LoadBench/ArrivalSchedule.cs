namespace OrleansMixtral.LoadBench;

/// <summary>
/// When the requests of one rate arrive: a Poisson process, i.e. independent exponential gaps of mean 1/rate between
/// consecutive arrivals, drawn from a seeded <see cref="Random"/> (reproducible across runs and machines). The first
/// request arrives at 0. A seed gives the same standard exponential draws at every rate, scaled by 1/rate, so the
/// rates of one run see the same pattern of bursts and lulls, only faster or slower.
/// </summary>
public static class ArrivalSchedule
{
    /// <summary>Arrivals one schedule may hold (a bound on memory whatever the flags say).</summary>
    public const int MaxArrivals = 1_000_000;

    /// <summary>
    /// Arrival times in seconds from the first, ascending: <paramref name="count"/> of them, or every arrival before
    /// <paramref name="durationSeconds"/> (exactly one of the two is given).
    /// </summary>
    public static double[] Poisson(double rate, int seed, int? count, double? durationSeconds)
    {
        if (!(rate > 0) || double.IsInfinity(rate)) throw new ArgumentOutOfRangeException(nameof(rate), rate, "the rate must be a positive number");
        if (count is null == durationSeconds is null) throw new ArgumentException("give either a count or a duration");
        if (count is < 1 or > MaxArrivals) throw new ArgumentOutOfRangeException(nameof(count), count, $"the count must be in [1, {MaxArrivals}]");
        if (durationSeconds is { } d && (!(d > 0) || double.IsInfinity(d)))
            throw new ArgumentOutOfRangeException(nameof(durationSeconds), durationSeconds, "the duration must be a positive number");

        var random = new Random(seed);
        var arrivals = new List<double>(count ?? (int)Math.Min(MaxArrivals, rate * durationSeconds!.Value * 1.2 + 16));
        double t = 0;
        while (arrivals.Count < (count ?? MaxArrivals) && (durationSeconds is not { } end || t < end))
        {
            arrivals.Add(t);
            t += StandardExponential(random) / rate;
        }
        return arrivals.ToArray();
    }

    /// <summary>An exponential draw of mean 1 (inverse transform; 1 − U lies in (0, 1], so the log is finite).</summary>
    static double StandardExponential(Random random) => -Math.Log(1 - random.NextDouble());
}
